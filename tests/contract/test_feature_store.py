"""One feature-store contract, run against the reference (memory://), a single Redis and a
3-primary Redis Cluster (the `redis_cluster` fixture).

Then property tests: random event streams (several entities, out-of-order and too-late
events, random batch splits, replays of earlier sources) must give Redis exactly the
reference's values and flags.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.backends import open_store
from features.epoch import read_epoch, write_epoch
from features.featurizer import Featurizer
from features.redis_connect import connect
from features.redis_store import RedisFeatureStore
from features.reference import ReferenceFeatureStore
from features.shards import SHARDS, epoch_keys, shard_of, shard_tags
from features.spec import FeatureSpec
from features.store import FeatureBatch, FeatureResult, FeatureStore, Source, StateLost

S = 1_000
MIN = 60 * S
T0 = 28_333_334 * MIN  # a minute boundary in November 2023

SPEC = FeatureSpec.model_validate(
    {
        "lateness": "90s",
        "aggregations": [
            {"name": "n", "entity": "card", "agg": "count", "window": "3m", "bucket": "1m"},
            {
                "name": "total",
                "entity": "card",
                "agg": "sum",
                "field": "amount",
                "window": "3m",
                "bucket": "1m",
            },
            {
                "name": "avg",
                "entity": "card",
                "agg": "mean",
                "field": "amount",
                "window": "3m",
                "bucket": "1m",
            },
            {
                "name": "lo",
                "entity": "card",
                "agg": "min",
                "field": "amount",
                "window": "3m",
                "bucket": "1m",
                "fill": -1,
            },
            {
                "name": "hi",
                "entity": "card",
                "agg": "max",
                "field": "amount",
                "window": "3m",
                "bucket": "1m",
                "fill": -1,
            },
            {
                "name": "last",
                "entity": "card",
                "agg": "last",
                "field": "amount",
                "window": "3m",
                "bucket": "1m",
                "fill": -1,
            },
            {
                "name": "since",
                "entity": "card",
                "agg": "seconds_since_last",
                "window": "3m",
                "bucket": "1m",
                "fill": -1,
            },
            {
                "name": "merchants",
                "entity": "card",
                "agg": "count_distinct",
                "field": "merchant",
                "window": "3m",
                "bucket": "1m",
            },
            {
                "name": "dsum",
                "entity": "card",
                "agg": "decayed_sum",
                "field": "amount",
                "half_life": "1m",
            },
            {
                "name": "m_dmean",
                "entity": "merchant",
                "agg": "decayed_mean",
                "field": "amount",
                "half_life": "1m",
            },
        ],
        "transforms": [{"name": "amount", "field": "amount", "op": "raw", "fill": -1}],
    }
)

Event = tuple[int, dict[str, Any]]


class SettableClock:
    """The reference store's clock for replay-record expiry, moved on by the test."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Stores:
    """Opens stores of one kind, each in a fresh namespace, and expires their replay
    records: the reference store's by moving its clock, Redis' by waiting (bounded) until
    Redis has dropped the keys, so the test checks expiry instead of sleeping past it."""

    def __init__(self, kind: str, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self._request = request
        self.opened: list[FeatureStore] = []
        self._clocks: dict[int, SettableClock] = {}
        self._namespaces: dict[int, str] = {}

    def __call__(self, spec: FeatureSpec = SPEC, namespace: str | None = None) -> FeatureStore:
        namespace = namespace or f"test-{uuid.uuid4().hex[:10]}"
        store: FeatureStore
        if self.kind == "memory":
            clock = SettableClock()
            store = Featurizer(spec, ReferenceFeatureStore(spec, clock=clock))
            self._clocks[id(store)] = clock
        else:
            store = open_store(spec, self._url(admin=False), namespace)
        self._namespaces[id(store)] = namespace
        self.opened.append(store)
        return store

    def _url(self, *, admin: bool) -> str:
        if self.kind == "cluster":
            cluster = self._request.getfixturevalue("redis_cluster")
            return str(cluster.admin_url if admin else cluster.url)
        return str(self._request.getfixturevalue("redis_admin_url" if admin else "redis_url"))

    def expire_replay_records(self, store: FeatureStore, ttl_ms: int, partition: int) -> None:
        if self.kind == "memory":
            self._clocks[id(store)].now += ttl_ms / 1000
            return
        # EXISTS is no command of the streamfer user's: the admin user looks, in every shard.
        client = connect(self._url(admin=True))
        namespace = self._namespaces[id(store)]
        keys = [f"sf:{namespace}:{{{t}}}:rec:events/{partition}:0" for t in shard_tags(namespace)]
        deadline = time.monotonic() + ttl_ms / 1000 + 10
        try:
            while any(client.exists(key) for key in keys):
                assert time.monotonic() < deadline, "Redis kept replay records past their TTL"
                time.sleep(0.05)
        finally:
            client.close()

    def drop_state(self, store: FeatureStore) -> None:
        """Lose the store's whole state, as a Redis restart without data would: the
        reference's by `drop_state()`, Redis' by deleting the namespace's keys."""
        if self.kind == "memory":
            assert isinstance(store, Featurizer)
            assert isinstance(store.aggregations, ReferenceFeatureStore)
            store.aggregations.drop_state()
            return
        client = connect(self._url(admin=True))
        try:
            keys = list(client.scan_iter(f"sf:{self._namespaces[id(store)]}:*", count=1000))
            assert keys, "the store wrote nothing to lose"
            for key in keys:  # keys of many slots: one by one on a cluster
                client.delete(key)
        finally:
            client.close()


OpenStore = Stores


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.integration),
        pytest.param("cluster", marks=pytest.mark.integration),
    ]
)
def open_(request: pytest.FixtureRequest) -> Iterator[Stores]:
    """Opens stores of the parametrized kind, each in a fresh namespace; closes them after."""
    stores = Stores(request.param, request)
    yield stores
    for store in stores.opened:
        store.close()


def ev(t: int, card: Any = "c1", amount: float | None = 1.0, merchant: Any = "m1") -> Event:
    return t, {"card": card, "amount": amount, "merchant": merchant}


def feed(
    store: FeatureStore,
    events: Sequence[Event],
    sources: Sequence[Source] | None = None,
    floors: dict[tuple[str, int], int] | None = None,
) -> FeatureResult:
    batch = FeatureBatch([r for _, r in events], [t for t, _ in events], sources, floors)
    return store.update_and_read(batch)


def col(result: FeatureResult, name: str) -> list[float]:
    return result.values[:, SPEC.names.index(name)].tolist()


def src(*offsets: int, partition: int = 0) -> list[Source]:
    return [("events", partition, o) for o in offsets]


# -- contract ------------------------------------------------------------------------------


def test_columns_are_aggregations_then_transforms(open_: OpenStore) -> None:
    store = open_()
    assert store.names == SPEC.names
    assert feed(store, [ev(T0)]).values.shape == (1, len(SPEC.names))


def test_current_event_is_included(open_: OpenStore) -> None:
    result = feed(open_(), [ev(T0, amount=5.0)])
    row = dict(zip(SPEC.names, result.values[0].tolist(), strict=True))
    assert row == {
        "n": 1,
        "total": 5,
        "avg": 5,
        "lo": 5,
        "hi": 5,
        "last": 5,
        "since": -1,
        "merchants": 1,
        "dsum": 5,
        "m_dmean": 5,
        "amount": 5,
    }
    assert not result.late[0] and not result.replayed[0]


def test_events_of_one_batch_are_read_in_batch_order(open_: OpenStore) -> None:
    result = feed(open_(), [ev(T0, amount=1), ev(T0 + S, amount=2), ev(T0 + 2 * S, amount=4)])
    assert col(result, "n") == [1, 2, 3]
    assert col(result, "total") == [1, 3, 7]


def test_batch_splits_do_not_change_values(open_: OpenStore) -> None:
    events = [ev(T0 + i * 20 * S, card=f"c{i % 2}", amount=i + 0.1) for i in range(12)]
    whole = feed(open_(), events).values
    split_store = open_()
    parts = [feed(split_store, events[a:b]).values for a, b in ((0, 1), (1, 7), (7, 12))]
    np.testing.assert_array_equal(np.vstack(parts), whole)


def test_window_holds_the_last_n_buckets(open_: OpenStore) -> None:
    result = feed(open_(), [ev(T0), ev(T0 + MIN), ev(T0 + 3 * MIN)])
    assert col(result, "n") == [1, 2, 2]  # at T0+3m the window is buckets 1..3


def test_out_of_order_event_within_lateness_lands_in_its_bucket(open_: OpenStore) -> None:
    result = feed(open_(), [ev(T0 + 2 * MIN), ev(T0 + MIN), ev(T0 + 2 * MIN + S)])
    # The second event's window ends at its own bucket (1), so it does not see bucket 2;
    # the third event's window (0..2) sees both.
    assert col(result, "n") == [1, 1, 3]
    assert not result.late.any()


def test_late_event_beyond_lateness_is_not_applied(open_: OpenStore) -> None:
    store = open_()
    result = feed(store, [ev(T0 + 5 * MIN), ev(T0 + 3 * MIN, amount=9)])
    assert result.late.tolist() == [False, True]
    assert col(result, "n") == [1, 0]  # read over its own window, without itself
    assert col(result, "hi") == [1, -1]
    assert col(feed(store, [ev(T0 + 5 * MIN + S)]), "n") == [2]


def test_late_for_one_entity_is_still_applied_to_the_others(open_: OpenStore) -> None:
    store = open_()
    feed(store, [ev(T0 + 5 * MIN, merchant="m1")])
    result = feed(store, [ev(T0, amount=3, merchant="m2")])
    assert result.late.tolist() == [True]
    assert col(result, "m_dmean") == [3]


def test_mean_min_max_last_over_the_window(open_: OpenStore) -> None:
    result = feed(open_(), [ev(T0, amount=3), ev(T0 + S, amount=1), ev(T0 + MIN, amount=2)])
    assert col(result, "avg")[-1] == 2
    assert (col(result, "lo")[-1], col(result, "hi")[-1], col(result, "last")[-1]) == (1, 3, 2)


def test_last_is_the_newest_by_event_time_and_later_on_ties(open_: OpenStore) -> None:
    result = feed(
        open_(), [ev(T0 + 30 * S, amount=1), ev(T0 + 10 * S, amount=2), ev(T0 + 30 * S, amount=3)]
    )
    assert col(result, "last") == [1, 1, 3]


def test_seconds_since_last_excludes_the_current_event_and_is_never_negative(
    open_: OpenStore,
) -> None:
    result = feed(open_(), [ev(T0), ev(T0 + 2500), ev(T0 + S)])
    assert col(result, "since") == [-1, 2.5, 0]


def test_count_distinct_counts_members_over_the_window(open_: OpenStore) -> None:
    result = feed(
        open_(),
        [
            ev(T0, merchant="a"),
            ev(T0 + S, merchant=7),
            ev(T0 + 2 * S, merchant="7"),
            ev(T0 + 4 * MIN, merchant="b"),
        ],
    )
    assert col(result, "merchants") == [1, 2, 2, 1]


def test_count_distinct_window_read_again_follows_out_of_order_members(
    open_: OpenStore,
) -> None:
    # Redis keeps a union of an entity's newest window across batches; an out-of-order
    # member of an older bucket in that window must still show up in it.
    store = open_()
    first = feed(store, [ev(T0, merchant="a"), ev(T0 + MIN, merchant="b")])
    again = feed(store, [ev(T0 + MIN + S, merchant="b"), ev(T0 + MIN + 2 * S, merchant="c")])
    older = feed(store, [ev(T0 + 30 * S, merchant="d"), ev(T0 + MIN + 3 * S, merchant="a")])
    assert col(first, "merchants") + col(again, "merchants") == [1, 2, 2, 3]
    assert col(older, "merchants") == [2, 4]


def test_late_reads_see_only_buckets_above_the_retention_floor(open_: OpenStore) -> None:
    late = T0 + MIN + 30 * S  # bucket 1
    result = feed(
        open_(),
        [
            ev(T0, merchant="a"),
            ev(T0 + MIN, merchant="b"),
            ev(T0 + 5 * MIN, merchant=None),  # floor = 5 - 3 - ceil(90 s / 1 m) = bucket 0
            ev(late),
            ev(T0 + 6 * MIN, merchant=None),  # floor = bucket 1: bucket 0 is dropped
            ev(late),
            ev(T0 + 9 * MIN, merchant=None),  # floor = bucket 4: the late window is empty
            ev(late),
        ],
    )
    assert result.late.tolist() == [False, False, False, True, False, True, False, True]
    assert col(result, "merchants")[3::2] == [2, 1, 0]
    assert col(result, "n")[3::2] == [2, 1, 0]
    assert col(result, "since")[3::2] == [30, 30, -1]


def test_decayed_sum_halves_per_half_life(open_: OpenStore) -> None:
    result = feed(open_(), [ev(T0, amount=8), ev(T0 + MIN, amount=1)])
    assert col(result, "dsum") == [8, 5]
    assert col(result, "m_dmean")[-1] == pytest.approx(5 / 1.5, rel=1e-12)


def test_missing_amount_is_skipped_by_value_aggregations_but_counted(open_: OpenStore) -> None:
    result = feed(
        open_(), [ev(T0, amount=4), ev(T0 + S, amount=None), ev(T0 + 2 * S, amount=float("nan"))]
    )
    assert col(result, "n") == [1, 2, 3]
    assert col(result, "total") == [4, 4, 4]
    assert col(result, "avg") == [4, 4, 4]
    assert col(result, "since") == [-1, 1, 1]
    assert col(result, "amount") == [4, -1, -1]


def test_missing_entity_reads_empty_and_changes_nothing(open_: OpenStore) -> None:
    store = open_()
    result = feed(store, [ev(T0, card=None, amount=2)])
    assert (col(result, "n"), col(result, "lo"), col(result, "dsum")) == ([0], [-1], [0])
    assert col(feed(store, [ev(T0 + S, card="None")]), "n") == [1]


def test_int_and_text_entity_values_are_one_entity(open_: OpenStore) -> None:
    assert col(feed(open_(), [ev(T0, card=7), ev(T0 + S, card="7")]), "n") == [1, 2]


def test_replay_returns_the_recorded_values_and_changes_nothing(open_: OpenStore) -> None:
    store = open_()
    first = feed(store, [ev(T0), ev(T0 + S), ev(T0 + 2 * S)], src(0, 1, 2))
    again = feed(store, [ev(T0 + S), ev(T0 + 3 * S)], src(1, 3))
    assert again.replayed.tolist() == [True, False]
    np.testing.assert_array_equal(again.values[0], first.values[1])
    assert col(again, "n")[1] == 4


def test_replay_inside_one_batch(open_: OpenStore) -> None:
    result = feed(open_(), [ev(T0), ev(T0 + S), ev(T0 + S)], src(0, 1, 1))
    assert result.replayed.tolist() == [False, False, True]
    assert col(result, "n") == [1, 2, 2]


def test_replay_of_a_late_event_keeps_its_late_flag(open_: OpenStore) -> None:
    store = open_()
    feed(store, [ev(T0 + 5 * MIN), ev(T0)], src(0, 1))
    result = feed(store, [ev(T0)], src(1))
    assert (result.late.tolist(), result.replayed.tolist()) == ([True], [True])


def test_partitions_keep_their_own_offsets(open_: OpenStore) -> None:
    store = open_()
    feed(store, [ev(T0)], src(5, partition=0))
    result = feed(store, [ev(T0 + S)], src(3, partition=1))
    assert (result.replayed.tolist(), col(result, "n")) == ([False], [2])


def test_without_sources_a_redelivery_is_applied_again(open_: OpenStore) -> None:
    store = open_()
    feed(store, [ev(T0)])
    assert col(feed(store, [ev(T0)]), "n") == [2]


def test_expired_replay_record_reads_state_without_applying(open_: OpenStore) -> None:
    store = open_(SPEC.model_copy(update={"replay_ttl": 300}))
    feed(store, [ev(T0), ev(T0 + S)], src(0, 1))
    open_.expire_replay_records(store, 300, partition=0)
    result = feed(store, [ev(T0)], src(0))
    assert (result.replayed.tolist(), col(result, "n")) == ([True], [2])


def test_empty_batch_gives_an_empty_matrix(open_: OpenStore) -> None:
    result = feed(open_(), [])
    assert result.values.shape == (0, len(SPEC.names)) and result.late.shape == (0,)


def test_namespaces_are_isolated(open_: OpenStore) -> None:
    for store in (
        open_(namespace=f"a-{uuid.uuid4().hex}"),
        open_(namespace=f"b-{uuid.uuid4().hex}"),
    ):
        assert col(feed(store, [ev(T0)]), "n") == [1]


# -- lost state ----------------------------------------------------------------------------


def test_a_fresh_pipeline_starts_without_history(open_: OpenStore) -> None:
    store = open_()
    assert col(feed(store, [ev(T0)], src(0)), "n") == [1]
    assert col(feed(store, [ev(T0 + S)], src(1), {("events", 0): 0}), "n") == [2]


def test_state_lost_under_a_running_store_raises_on_the_next_batch(open_: OpenStore) -> None:
    store = open_()
    feed(store, [ev(T0)], src(0))
    open_.drop_state(store)
    for _ in range(2):  # and keeps raising: nothing of the refused batch was written
        with pytest.raises(StateLost, match=r"the state epoch \w+ is gone"):
            feed(store, [ev(T0 + S)], src(1))


def test_no_epoch_while_partitions_have_history_is_lost_state(open_: OpenStore) -> None:
    # A worker started after the loss: it never saw the epoch, but its group has commits.
    with pytest.raises(StateLost, match="no state epoch although the partitions were processed"):
        feed(open_(), [ev(T0)], src(5), {("events", 0): -1})


def test_high_water_below_the_applied_offset_stops_every_batch_until_a_rebuild(
    open_: OpenStore,
) -> None:
    store = open_()
    feed(store, [ev(T0), ev(T0 + S)], src(0, 1))
    # A failover dropped writes: the worker applied offset 7, the state holds 1.
    with pytest.raises(StateLost, match="events/0 was applied up to offset 7, the state has 1"):
        feed(store, [ev(T0 + 2 * S)], src(8), {("events", 0): 7})
    # Entities span partitions: a batch of another partition, whose floor holds, stops too.
    with pytest.raises(StateLost, match="the state was found older than what was applied"):
        feed(store, [ev(T0 + 2 * S)], src(0, partition=1))


def test_a_partition_applied_but_without_high_water_is_lost_state(open_: OpenStore) -> None:
    store = open_()
    feed(store, [ev(T0)], src(0))
    with pytest.raises(StateLost, match="events/3 was applied up to offset 0, the state has none"):
        feed(store, [ev(T0 + S)], src(1, partition=3), {("events", 3): 0})


# -- Redis specifics -----------------------------------------------------------------------


@pytest.mark.integration
def test_redis_epoch_is_written_by_the_first_batch_and_a_rebuild_re_arms_the_store(
    client: redis.Redis, admin_client: redis.Redis, unique: str
) -> None:
    store = RedisFeatureStore(SPEC, client, unique)
    store.update_and_read(FeatureBatch([ev(T0)[1]], [T0], src(0)))
    first = read_epoch(client, unique)
    assert first is not None
    assert all(admin_client.pttl(k) == -1 for k in epoch_keys(unique))  # no TTL
    admin_client.delete(*admin_client.scan_iter(f"sf:{unique}:*"))
    with pytest.raises(StateLost, match=f"namespace '{unique}'"):
        store.update_and_read(FeatureBatch([ev(T0 + S)[1]], [T0 + S], src(1)))
    assert list(admin_client.scan_iter(f"sf:{unique}:*")) == []  # the refused batch wrote nothing
    # A rebuild: an unguarded store replays the events (writing no epoch), then the epoch.
    rebuilt = RedisFeatureStore(SPEC, client, unique, guard=False)
    rebuilt.update_and_read(FeatureBatch([ev(T0)[1]], [T0], src(0)))
    assert read_epoch(client, unique) is None
    second = write_epoch(client, unique)
    assert second != first
    batch = FeatureBatch([ev(T0 + S)[1]], [T0 + S], src(1), {("events", 0): 0})
    assert store.update_and_read(batch).values[0, SPEC.names.index("n")] == 2


@pytest.mark.integration
def test_redis_state_behind_marks_the_epoch_lost_and_writes_nothing(
    client: redis.Redis, admin_client: redis.Redis, unique: str
) -> None:
    store = RedisFeatureStore(SPEC, client, unique)
    store.update_and_read(FeatureBatch([ev(T0)[1]], [T0], src(0)))

    def state() -> dict[bytes, Any]:
        keys = admin_client.scan_iter(f"sf:{unique}:{{*")
        return {k: admin_client.dump(k) for k in keys if not k.endswith(b":epoch")}

    before = state()
    with pytest.raises(StateLost, match="events/0 was applied up to offset 5"):
        store.update_and_read(FeatureBatch([ev(T0 + S)[1]], [T0 + S], src(6), {("events", 0): 5}))
    assert read_epoch(client, unique) == "lost"
    assert state() == before


@pytest.mark.integration
def test_redis_state_of_the_layout_before_shards_is_lost_state(
    client: redis.Redis, admin_client: redis.Redis, unique: str
) -> None:
    # What a store of the previous release left: a high-water and an epoch outside the
    # shards. It is not read: the partition's history without a state epoch is lost state.
    admin_client.set(f"sf:{unique}:{{src=events/0}}:hw", "0")
    admin_client.set(f"sf:{unique}:epoch", "e0")
    store = RedisFeatureStore(SPEC, client, unique)
    batch = FeatureBatch([ev(T0 + S)[1]], [T0 + S], src(1), {("events", 0): 0})
    with pytest.raises(StateLost, match="no state epoch although the partitions were processed"):
        store.update_and_read(batch)


@pytest.mark.integration
def test_redis_state_survives_reopening_the_store(client: redis.Redis, unique: str) -> None:
    RedisFeatureStore(SPEC, client, unique).update_and_read(FeatureBatch([ev(T0)[1]], [T0]))
    reopened = RedisFeatureStore(SPEC, client, unique)
    result = reopened.update_and_read(FeatureBatch([ev(T0 + S)[1]], [T0 + S]))
    assert result.values[0, SPEC.names.index("n")] == 2


def test_a_store_opened_while_redis_is_away_waits_for_its_first_batch_to_say_so() -> None:
    # A worker restarted just as Redis restarts (chaos, CI): opening the store sends nothing,
    # so the outage reaches the worker's first batch (a pause), not its start (a crash).
    store = RedisFeatureStore(SPEC, connect("redis://127.0.0.1:1/0?cluster=no"), "away")
    with pytest.raises(redis.ConnectionError):
        store.update_and_read(FeatureBatch([ev(T0)[1]], [T0]))
    store.close()


@pytest.mark.integration
def test_redis_names_the_script_as_the_store_does(client: redis.Redis, unique: str) -> None:
    store = RedisFeatureStore(SPEC, client, unique)
    assert client.script_load(RedisFeatureStore.SCRIPT) == store._calls.sha


@pytest.mark.integration
def test_redis_reloads_the_script_after_a_script_flush(
    client: redis.Redis, admin_client: redis.Redis, unique: str
) -> None:
    store = RedisFeatureStore(SPEC, client, unique)
    admin_client.script_flush()
    assert store.update_and_read(FeatureBatch([ev(T0)[1]], [T0])).values[0, 0] == 1


@pytest.mark.integration
def test_redis_keys_lie_in_the_shard_of_their_entity_value(
    client: redis.Redis, admin_client: redis.Redis, unique: str
) -> None:
    store = RedisFeatureStore(SPEC, client, unique)
    store.update_and_read(FeatureBatch([ev(T0, card="a}b")[1]], [T0], src(0)))
    keys = sorted(k.decode() for k in admin_client.scan_iter(f"sf:{unique}:*"))
    tags = shard_tags(unique)
    card, merchant = tags[shard_of("card", "a}b")], tags[shard_of("merchant", "m1")]
    entity_keys = {k for k in keys if "=" in k}
    assert {k.split("}", 1)[0] for k in entity_keys} == {
        f"sf:{unique}:{{{card}",
        f"sf:{unique}:{{{merchant}",
    }
    assert f"sf:{unique}:{{{card}}}:card=a%7Db:s" in entity_keys
    # Every shard has its epoch and the partition's high-water; they never expire: their
    # absence means lost state. The replay records are in the shards of the entities.
    lasting = set(epoch_keys(unique)) | {f"sf:{unique}:{{{t}}}:hw:events/0" for t in tags}
    assert lasting <= set(keys) and len(lasting) == 2 * SHARDS
    assert all(admin_client.pttl(k) == -1 for k in lasting)
    assert all(admin_client.pttl(k) > 0 for k in keys if k not in lasting)
    records = {k for k in keys if ":rec:" in k}
    assert records == {f"sf:{unique}:{{{t}}}:rec:events/0:0" for t in {card, merchant}}


@pytest.mark.integration
def test_redis_store_refuses_a_decoding_client(redis_url: str, unique: str) -> None:
    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisFeatureStore(SPEC, redis.Redis.from_url(redis_url, decode_responses=True), unique)


# -- Redis equals the reference on random streams ------------------------------------------

CARDS = ["c1", "c2", 3, "3"]
MERCHANTS = ["m1", "m2", 17]
AMOUNTS = st.one_of(
    st.none(),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.1, 0.2, 0.3, 1e-300, 1e300]),
)


@st.composite
def streams(draw: st.DrawFn) -> list[list[tuple[int, dict[str, Any], Source]]]:
    """Batches of (time, record, source): drifting times, jumps back, replays, two partitions."""
    t = T0
    offsets = [0, 0]
    events: list[tuple[int, dict[str, Any], Source]] = []
    for _ in range(draw(st.integers(1, 60))):
        if events and draw(st.integers(0, 9)) == 0:
            events.append(draw(st.sampled_from(events)))  # redelivery of an earlier event
            continue
        # On a 15 s grid, so equal times and events exactly at the lateness bound happen;
        # back within or beyond the lateness, forward into new buckets.
        t += draw(st.integers(-16, 8)) * 15 * S
        partition = draw(st.integers(0, 1))
        offsets[partition] += draw(st.integers(1, 3))
        record = {
            "card": draw(st.sampled_from([*CARDS, None])),
            "merchant": draw(st.sampled_from([*MERCHANTS, None]) | st.integers(0, 300)),
            "amount": draw(AMOUNTS),
        }
        events.append((t, record, ("events", partition, offsets[partition])))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(events) - 1)), max_size=5)))
    bounds = [0, *cuts, len(events)]
    return [events[a:b] for a, b in itertools.pairwise(bounds) if a < b]


def _assert_same(redis_result: FeatureResult, reference_result: FeatureResult) -> None:
    np.testing.assert_allclose(redis_result.values, reference_result.values, rtol=1e-9, atol=0)
    np.testing.assert_array_equal(redis_result.late, reference_result.late)
    np.testing.assert_array_equal(redis_result.replayed, reference_result.replayed)


@pytest.mark.integration
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=streams(), with_sources=st.booleans())
def test_redis_equals_reference_on_random_streams(
    module_client: redis.Redis,
    batches: list[list[tuple[int, dict[str, Any], Source]]],
    with_sources: bool,
) -> None:
    reference = ReferenceFeatureStore(SPEC)
    store = RedisFeatureStore(SPEC, module_client, f"prop-{uuid.uuid4().hex[:10]}")
    for events in batches:
        batch = FeatureBatch(
            [r for _, r, _ in events],
            [t for t, _, _ in events],
            [s for _, _, s in events] if with_sources else None,
        )
        _assert_same(store.update_and_read(batch), reference.update_and_read(batch))


@pytest.mark.integration
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=streams(),
    bucket_s=st.sampled_from([1, 7, 60, 300]),
    n_buckets=st.integers(1, 5),
    lateness_s=st.sampled_from([0, 1, 45, 200]),
)
def test_redis_equals_reference_for_other_windows_and_lateness(
    module_client: redis.Redis,
    batches: list[list[tuple[int, dict[str, Any], Source]]],
    bucket_s: int,
    n_buckets: int,
    lateness_s: int,
) -> None:
    windowed = {"bucket": f"{bucket_s}s", "window": f"{bucket_s * n_buckets}s"}
    spec = FeatureSpec.model_validate(
        {
            "lateness": f"{lateness_s}s",
            "aggregations": [
                {**a.model_dump(exclude_none=True), **(windowed if a.windowed else {})}
                for a in SPEC.aggregations
            ],
        }
    )
    reference = ReferenceFeatureStore(spec)
    store = RedisFeatureStore(spec, module_client, f"prop-{uuid.uuid4().hex[:10]}")
    for events in batches:
        batch = FeatureBatch(
            [r for _, r, _ in events], [t for t, _, _ in events], [s for _, _, s in events]
        )
        _assert_same(store.update_and_read(batch), reference.update_and_read(batch))
