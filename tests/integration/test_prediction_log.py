"""The prediction log against real Redis, a single one and a Redis Cluster: packed entries
round-trip exactly, entries live at least a label horizon in their slot's hash, a batch's hashes
spread over the cluster's nodes, and entries written by earlier versions (namespace-tagged
hashes, one key per event, packed or JSON) are still joined (a rolling upgrade loses nothing)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import orjson
import pytest
from redis.cluster import RedisCluster

from features.redis_connect import RedisClient, connect
from streams.worker.prediction_log import (
    SHARD_TAGS,
    SHARDS,
    SLOTS_PER_HORIZON,
    PredictionLog,
    shard_of,
)
from tests.integration.redis_kinds import KINDS, RedisUnderTest, redis_under_test

pytestmark = pytest.mark.integration

NAMES = ("amount_log", "card_count_1h", "card_since_last")


@pytest.fixture(params=KINDS)
def target(request: pytest.FixtureRequest) -> RedisUnderTest:
    return redis_under_test(request, request.param)


@pytest.fixture
def client(target: RedisUnderTest) -> RedisClient:
    return connect(target.conn.redis_url)


def hash_key(namespace: str, slot: int, event_id: str) -> str:
    """Where an event's entry is: its shard's hash in the slot's time."""
    return f"sf:{namespace}:plh:{{{SHARD_TAGS[shard_of(event_id)]}}}:{slot}"


def test_a_batch_round_trips_exactly_with_nan_and_missing_entries(
    client: RedisClient, target: RedisUnderTest, unique: str
) -> None:
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
    ttl = connect(target.admin_url).pttl(hash_key(unique, slot, "a"))  # the admin user's
    left_of_slot = (slot + 1) * slot_ms - int(now_s * 1000)
    assert 60_000 + left_of_slot - 5_000 < ttl <= 60_000 + left_of_slot


def test_an_entry_is_joined_until_its_horizon_and_a_rescored_event_reads_as_scored_last(
    client: RedisClient, unique: str
) -> None:
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


def test_entries_of_earlier_layouts_are_still_read(client: RedisClient, unique: str) -> None:
    """Earlier versions kept each packed entry under its own key, then in hashes all under the
    namespace's hash tag; the hashes hold the same bytes, so such keys are what an earlier
    worker wrote."""
    log = PredictionLog(client, unique, NAMES, horizon_ms=60_000, clock=lambda: 1_795_702_000.0)
    log.write(["x"], np.array([[1.0, 2.0, 3.0]]), {"onnx": np.array([0.5])}, "v3", "a1", [11])
    slot = 1_795_702_000_000 // (60_000 // SLOTS_PER_HORIZON)
    blob = client.hmget(hash_key(unique, slot, "x"), ["x"])[0]
    assert blob is not None
    client.set(f"sf:{{{unique}}}:pl:packed-old", blob, px=60_000)
    for event_id, in_slot in (("tagged-now", slot), ("tagged-before", slot - 2)):
        client.hset(f"sf:{{{unique}}}:plh:{in_slot}:{shard_of(event_id)}", event_id, blob)

    ids = ["packed-old", "tagged-now", "tagged-before", "x"]

    got = log.read(ids)

    for entry, event_id in zip(got, ids, strict=True):
        assert entry is not None and entry.event_id == event_id
        assert entry.features == dict(zip(NAMES, (1.0, 2.0, 3.0), strict=True))
        assert (entry.model_version, entry.adaptation_version, entry.event_time_ms) == (
            "v3",
            "a1",
            11,
        )


def test_entries_in_the_earlier_json_format_are_still_read(
    client: RedisClient, unique: str
) -> None:
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
    client: RedisClient, unique: str
) -> None:
    """After a spec change the learner may read entries a worker wrote with the old names."""
    writer = PredictionLog(client, unique, ("x", "y"), horizon_ms=60_000)
    writer.write(["e"], np.array([[1.5, -2.5]]), {"final": np.array([0.1])}, "v", None, [1])
    reader = PredictionLog(client, unique, NAMES, horizon_ms=60_000)
    (entry,) = reader.read(["e"])
    assert entry is not None
    assert entry.features == {"x": 1.5, "y": -2.5}
    assert entry.scores == {"final": 0.1}


def test_a_batch_spreads_over_the_nodes_of_a_cluster(
    request: pytest.FixtureRequest, unique: str
) -> None:
    """One hash per shard, each under its own tag: every primary takes a share of the writes
    (within 1.5x of the mean), where one namespace tag put them all on one node."""
    cluster = redis_under_test(request, "cluster")
    client, admin = connect(cluster.conn.redis_url), connect(cluster.admin_url)
    assert isinstance(admin, RedisCluster)
    now_s = 1_795_702_000.0
    log = PredictionLog(client, unique, NAMES, horizon_ms=60_000, clock=lambda: now_s)
    ids = [f"n{i}" for i in range(20 * SHARDS)]
    log.write(
        ids, np.zeros((len(ids), 3)), {"final": np.zeros(len(ids))}, "v", None, [0] * len(ids)
    )
    slot = int(now_s * 1000) // (60_000 // SLOTS_PER_HORIZON)
    keys = {hash_key(unique, slot, event_id) for event_id in ids}
    assert all(admin.exists(key) for key in keys)
    per_node = Counter(admin.get_node_from_key(key).name for key in keys)
    primaries = {node.name for node in admin.get_primaries()}
    assert set(per_node) == primaries
    mean = len(keys) / len(primaries)
    assert max(per_node.values()) <= 1.5 * mean, per_node
