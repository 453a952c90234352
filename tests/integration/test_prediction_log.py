"""The prediction log against real Redis: packed entries round-trip exactly, and entries
written as JSON by earlier versions are still joined (a rolling upgrade loses nothing)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import redis

from streams.spec import Connections
from streams.worker.prediction_log import PredictionLog

pytestmark = pytest.mark.integration

NAMES = ("amount_log", "card_count_1h", "card_since_last")


def test_a_batch_round_trips_exactly_with_nan_and_missing_entries(
    conn: Connections, unique: str, admin_client: redis.Redis
) -> None:
    client = redis.Redis.from_url(conn.redis_url)
    log = PredictionLog(client, unique, NAMES, horizon_ms=60_000)
    rng = np.random.default_rng(3)
    features = rng.normal(size=(4, 3)) * 1e6
    features[2, 1] = np.nan
    scores = {"onnx": rng.random(4), "river": rng.random(4), "final": rng.random(4)}
    times = [1_795_702_928_488 + i for i in range(4)]
    log.write(["a", "b", "c", "d"], features, scores, "3b25", "7", times)

    got = log.read(["d", "missing", "a", "c"])

    assert got[1] is None
    expected = [("d", 3), ("a", 0), ("c", 2)]
    for entry, (event_id, row) in zip([got[0], got[2], got[3]], expected, strict=True):
        assert entry is not None and entry.event_id == event_id
        assert list(entry.features) == list(NAMES)
        logged = np.array([entry.features[name] for name in NAMES])
        np.testing.assert_array_equal(logged, features[row])  # exact; NaN where NaN
        assert entry.scores == {name: float(column[row]) for name, column in scores.items()}
        assert (entry.model_version, entry.adaptation_version) == ("3b25", "7")
        assert entry.event_time_ms == times[row]
    ttl = admin_client.pttl(f"sf:{{{unique}}}:pl:a")  # PTTL: the admin user's
    assert 0 < ttl <= 60_000


def test_entries_in_the_earlier_json_format_are_still_read(conn: Connections, unique: str) -> None:
    client = redis.Redis.from_url(conn.redis_url)
    log = PredictionLog(client, unique, NAMES, horizon_ms=60_000)
    log.write(["new"], np.array([[1.0, 2.0, 3.0]]), {"onnx": np.array([0.25])}, "v2", None, [9])
    legacy = {
        "f": [0.5, 4.0, 120.0],
        "s": {"onnx": 0.75, "final": None},
        "fs": log.feature_set,
        "m": "v1",
        "a": None,
        "t": 1_795_702_928_000,
    }
    client.set(f"sf:{{{unique}}}:pl:old", orjson.dumps(legacy), px=60_000)

    old, new = log.read(["old", "new"])

    assert old is not None and new is not None
    assert old.features == dict(zip(NAMES, legacy["f"], strict=True))
    assert old.scores == {"onnx": 0.75, "final": None}
    assert (old.model_version, old.event_time_ms) == ("v1", 1_795_702_928_000)
    assert new.features == {"amount_log": 1.0, "card_count_1h": 2.0, "card_since_last": 3.0}
    assert (new.scores, new.model_version, new.event_time_ms) == ({"onnx": 0.25}, "v2", 9)


def test_a_reader_with_other_feature_names_gets_the_writers_names(
    conn: Connections, unique: str
) -> None:
    """After a spec change the learner may read entries a worker wrote with the old names."""
    client = redis.Redis.from_url(conn.redis_url)
    writer = PredictionLog(client, unique, ("x", "y"), horizon_ms=60_000)
    writer.write(["e"], np.array([[1.5, -2.5]]), {"final": np.array([0.1])}, "v", None, [1])
    reader = PredictionLog(client, unique, NAMES, horizon_ms=60_000)
    (entry,) = reader.read(["e"])
    assert entry is not None
    assert entry.features == {"x": 1.5, "y": -2.5}
    assert entry.scores == {"final": 0.1}
