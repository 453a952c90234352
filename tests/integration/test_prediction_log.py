"""The prediction log against real Redis: packed entries round-trip exactly, entries live at
least a label horizon in their slot's hash, and entries written by earlier versions (one key
per event, packed or JSON) are still joined (a rolling upgrade loses nothing)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import redis

from streams.spec import Connections
from streams.worker.prediction_log import SHARDS, SLOTS_PER_HORIZON, PredictionLog, shard_of

pytestmark = pytest.mark.integration

NAMES = ("amount_log", "card_count_1h", "card_since_last")


def test_a_batch_round_trips_exactly_with_nan_and_missing_entries(
    conn: Connections, unique: str, admin_client: redis.Redis
) -> None:
    client = redis.Redis.from_url(conn.redis_url)
    now_s = 1_795_702_930.5
    log = PredictionLog(client, unique, NAMES, horizon_ms=60_000, clock=lambda: now_s)
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
    slot_ms = 60_000 // SLOTS_PER_HORIZON
    slot = int(now_s * 1000) // slot_ms
    # The slot's hash outlives the entry's horizon by what is left of the slot, no more.
    ttl = admin_client.pttl(f"sf:{{{unique}}}:plh:{slot}:{shard_of('a')}")  # the admin user's
    left_of_slot = (slot + 1) * slot_ms - int(now_s * 1000)
    assert 60_000 + left_of_slot - 5_000 < ttl <= 60_000 + left_of_slot


def test_an_entry_is_joined_until_its_horizon_and_a_rescored_event_reads_as_scored_last(
    conn: Connections, unique: str
) -> None:
    client = redis.Redis.from_url(conn.redis_url)
    horizon = 3_600_000
    now = [1_795_702_000.0]
    log = PredictionLog(client, unique, NAMES, horizon_ms=horizon, clock=lambda: now[0])
    ids = [f"e{i}" for i in range(3 * SHARDS)]  # spread over the shards, several in most
    features = np.arange(len(ids) * 3, dtype=np.float64).reshape(-1, 3)
    log.write(ids, features, {"final": np.zeros(len(ids))}, "v1", None, range(len(ids)))
    now[0] += horizon / 2_000  # the same event scored again, later, in another slot
    log.write(["e1"], np.full((1, 3), -1.0), {"final": np.ones(1)}, "v2", None, [7])

    now[0] += horizon / 2_000  # a horizon after the first write: all still joined
    got = log.read(ids)

    assert [entry is not None and entry.event_id for entry in got] == ids
    rescored = got[1]
    assert rescored is not None and (rescored.model_version, rescored.event_time_ms) == ("v2", 7)
    for row, entry in enumerate(got):
        if row != 1:
            assert entry is not None and list(entry.features.values()) == list(features[row])


def test_entries_of_earlier_versions_one_key_per_event_are_still_read(
    conn: Connections, unique: str
) -> None:
    """Earlier versions kept each packed entry under its own key; the hashes hold the same
    bytes, so such a key is what an earlier worker wrote."""
    client = redis.Redis.from_url(conn.redis_url)
    log = PredictionLog(client, unique, NAMES, horizon_ms=60_000, clock=lambda: 1_795_702_000.0)
    log.write(["x"], np.array([[1.0, 2.0, 3.0]]), {"onnx": np.array([0.5])}, "v3", "a1", [11])
    slot = 1_795_702_000_000 // (60_000 // SLOTS_PER_HORIZON)
    blob = client.hget(f"sf:{{{unique}}}:plh:{slot}:{shard_of('x')}", "x")
    assert blob is not None
    client.set(f"sf:{{{unique}}}:pl:packed-old", blob, px=60_000)

    (old,) = log.read(["packed-old"])

    assert old is not None
    assert old.features == {"amount_log": 1.0, "card_count_1h": 2.0, "card_since_last": 3.0}
    assert (old.model_version, old.adaptation_version, old.event_time_ms) == ("v3", "a1", 11)


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
