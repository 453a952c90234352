"""The feature store on a 3-primary Redis Cluster, against the reference: a shard's slot
moved to another node between batches (the store's slot map is then stale), a node's reply
lost after its script ran, a node restarted in place with its data mid-stream, and
`streamfer rebuild` into the cluster, whose state must be the very state a rebuild writes
into a single Redis (one key layout for both)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from features.redis_connect import connect
from features.redis_store import RedisFeatureStore
from features.reference import ReferenceFeatureStore
from features.shard_calls import ShardCalls
from features.shards import shard_of, shard_slots
from features.store import FeatureBatch, FeatureResult, Source
from streams.ops.lag import LagReader
from streams.ops.rebuild import rebuild_state, wipe_feature_state
from tests.contract.test_feature_store import SPEC, T0
from tests.integration.harness import make_spec, produce, synthetic
from tests.integration.test_rebuild import feature_state

pytestmark = pytest.mark.integration


def _batches(
    n_batches: int, size: int, seed: int
) -> list[list[tuple[int, dict[str, Any], Source]]]:
    """Batches of (time, record, source) over a few cards and merchants, two partitions."""
    rng = random.Random(seed)
    offsets = [0, 0]
    out = []
    t = T0
    for _ in range(n_batches):
        batch = []
        for _ in range(size):
            t += rng.randrange(0, 4000)
            p = rng.randrange(2)
            record = {
                "card": f"c{rng.randrange(12)}",
                "merchant": rng.choice([None, f"m{rng.randrange(8)}"]),
                "amount": rng.choice([None, round(rng.uniform(1, 500), 2)]),
            }
            batch.append((t - rng.randrange(0, 60_000), record, ("events", p, offsets[p])))
            offsets[p] += 1
        out.append(batch)
    return out


def _feature_batch(events: list[tuple[int, dict[str, Any], Source]]) -> FeatureBatch:
    return FeatureBatch(
        [r for _, r, _ in events], [t for t, _, _ in events], [s for *_, s in events]
    )


def _run(store: Any, events: list[tuple[int, dict[str, Any], Source]]) -> FeatureResult:
    result: FeatureResult = store.update_and_read(_feature_batch(events))
    return result


def _same(got: FeatureResult, want: FeatureResult) -> None:
    np.testing.assert_allclose(got.values, want.values, rtol=1e-9, atol=0)
    np.testing.assert_array_equal(got.late, want.late)
    np.testing.assert_array_equal(got.replayed, want.replayed)


def _node(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


class SlotMigration:
    """Moves one slot to another primary as `redis-cli --cluster reshard` does: IMPORTING
    and MIGRATING, MIGRATE of its keys (all, or chosen ones first), SETSLOT NODE on every
    primary. `.source` / `.target`: the two node ids."""

    def __init__(self, node_admin_urls: tuple[str, ...], slot: int) -> None:
        self.slot = slot
        self.nodes = [_node(u) for u in node_admin_urls]
        ids = [n.execute_command("CLUSTER", "MYID").decode() for n in self.nodes]
        owners = [
            i
            for i, n in enumerate(self.nodes)
            if n.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) > 0
        ]
        assert len(owners) == 1, "the slot's keys should be on one node"
        self._src, self._dst = owners[0], (owners[0] + 1) % len(self.nodes)
        self.source, self.target = ids[self._src], ids[self._dst]
        self._to = urlsplit(node_admin_urls[self._dst])
        self.nodes[self._dst].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", self.source)
        self.nodes[self._src].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", self.target)

    def remaining(self) -> list[bytes]:
        """The slot's keys still on the source."""
        return list(
            self.nodes[self._src].execute_command("CLUSTER", "GETKEYSINSLOT", self.slot, 100_000)
        )

    def migrate(self, keys: list[bytes]) -> None:
        user, password = unquote(self._to.username or ""), unquote(self._to.password or "")
        for start in range(0, len(keys), 100):
            self.nodes[self._src].execute_command(
                "MIGRATE", self._to.hostname, self._to.port, "", 0, 10_000,
                "AUTH2", user, password, "KEYS", *keys[start : start + 100],
            )  # fmt: skip

    def finish(self) -> None:
        """The remaining keys, then the slot is the target's on every primary."""
        self.migrate(self.remaining())
        for n in self.nodes:
            n.execute_command("CLUSTER", "SETSLOT", self.slot, "NODE", self.target)
        for n in self.nodes:
            n.close()


def move_slot(node_admin_urls: tuple[str, ...], slot: int) -> tuple[str, str]:
    """Move `slot` to another primary, all at once → (from, to) node ids."""
    migration = SlotMigration(node_admin_urls, slot)
    migration.finish()
    return migration.source, migration.target


@pytest.fixture
def cluster_client(redis_cluster: Any) -> Iterator[Any]:
    client = connect(redis_cluster.url)
    yield client
    client.close()


def test_a_shard_moved_between_batches_is_followed_and_counted_once(
    redis_cluster: Any, cluster_client: Any, unique: str
) -> None:
    store = RedisFeatureStore(SPEC, cluster_client, unique)
    reference = ReferenceFeatureStore(SPEC)
    batches = _batches(6, 300, seed=7)
    try:
        for events in batches[:3]:
            _same(_run(store, events), reference.update_and_read(_feature_batch(events)))
        # The busiest card's shard goes to another node; the store still has the old map.
        slot = shard_slots(unique)[shard_of("card", "c0")]
        before = cluster_client.nodes_manager.get_node_from_slot(slot).name
        source, target = move_slot(redis_cluster.node_admin_urls, slot)
        assert source != target
        # A replay of the last batch first (each shard's high-water makes it one), then new.
        for events in [batches[2], *batches[3:]]:
            _same(_run(store, events), reference.update_and_read(_feature_batch(events)))
        assert cluster_client.nodes_manager.get_node_from_slot(slot).name != before
    finally:
        store.close()


def test_batches_during_a_key_by_key_slot_migration_wait_for_it_and_count_once(
    redis_cluster: Any, cluster_client: Any, unique: str
) -> None:
    # Resharding under running workers: while the busiest card's slot migrates, its replay
    # records already on the target and its states still on the source, a batch must not
    # write the states and then fail on the records (a retry would count it twice): it
    # waits, with nothing written, until the slot has moved, then counts once.
    store = RedisFeatureStore(SPEC, cluster_client, unique)
    reference = ReferenceFeatureStore(SPEC)
    batches = _batches(5, 300, seed=23)
    slot = shard_slots(unique)[shard_of("card", "c0")]
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        for events in batches[:2]:
            _same(_run(store, events), reference.update_and_read(_feature_batch(events)))
        migration = SlotMigration(redis_cluster.node_admin_urls, slot)
        try:
            records = [k for k in migration.remaining() if b":rec:" in k]
            assert records and len(records) < len(migration.remaining())
            migration.migrate(records)
            pending = pool.submit(_run, store, batches[2])
            with pytest.raises(FutureTimeout):  # retried while the slot is half moved
                pending.result(timeout=1.0)
        finally:
            migration.finish()
        _same(pending.result(timeout=30), reference.update_and_read(_feature_batch(batches[2])))
        for events in batches[3:]:
            _same(_run(store, events), reference.update_and_read(_feature_batch(events)))
        owner = cluster_client.nodes_manager.get_node_from_slot(slot)
        assert owner.port == _node_port(redis_cluster, migration.target)
    finally:
        pool.shutdown(wait=True)
        store.close()


def _node_port(redis_cluster: Any, node_id: str) -> int:
    for url in redis_cluster.node_admin_urls:
        node = _node(url)
        try:
            if node.execute_command("CLUSTER", "MYID").decode() == node_id:
                return int(urlsplit(url).port or 0)
        finally:
            node.close()
    raise AssertionError(f"no node {node_id}")


def _commit(conn: Any, group: str, topic: str, ends: dict[int, int]) -> None:
    """The worker group's commits, as workers that processed up to `ends` left them."""
    consumer = Consumer(conn.kafka_config(**{"group.id": group, "enable.auto.commit": False}))
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, end) for p, end in ends.items()], asynchronous=False
        )
    finally:
        consumer.close()


def test_rebuild_into_the_cluster_writes_the_single_redis_state(
    conn: Any,
    redis_cluster: Any,
    cluster_client: Any,
    admin_client: Any,
    model_file: Any,
    unique: str,
) -> None:
    spec = make_spec(unique, {"path": str(model_file)})
    produce(conn, spec, synthetic(2000, seed=31, n_cards=80))
    marks = LagReader(conn).watermarks(spec.topics.events)
    _commit(conn, spec.group, spec.topics.events, {p: hi for p, (_lo, hi) in marks.items()})

    single = rebuild_state(spec, conn)
    on_cluster = conn.model_copy(update={"redis_url": redis_cluster.url})
    # Something to wipe first: a rebuild over a stale state.
    stale = RedisFeatureStore(spec.features, cluster_client, spec.namespace)
    stale.update_and_read(FeatureBatch([{"card_id": "stale"}], [T0], [("x", 0, 0)]))
    stale.close()
    rebuilt = rebuild_state(spec, on_cluster)
    assert rebuilt.events == single.events > 0
    cluster_admin = connect(redis_cluster.admin_url)
    try:
        state = feature_state(cluster_admin, spec.namespace)
        assert state == feature_state(admin_client, spec.namespace)
        assert wipe_feature_state(cluster_client, spec.namespace) == len(state)
        assert feature_state(cluster_admin, spec.namespace) == {}
    finally:
        cluster_admin.close()


def test_a_node_call_retried_after_its_reply_was_lost_counts_once(
    cluster_client: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worst retry: the script ran on the node, then the connection died before the
    # reply (a node restarting, a network cut). The retried call must be a replay.
    store = RedisFeatureStore(SPEC, cluster_client, unique)
    reference = ReferenceFeatureStore(SPEC)
    batches = _batches(4, 200, seed=11)
    real_call = ShardCalls._call
    lost: list[tuple[int, ...]] = []

    def reply_lost_once(self: ShardCalls, conn: Any, shards: tuple[int, ...], *args: Any) -> Any:
        reply = real_call(self, conn, shards, *args)
        if not lost:
            lost.append(shards)
            raise redis.ConnectionError("connection reset by peer (after the script ran)")
        return reply

    try:
        _same(_run(store, batches[0]), reference.update_and_read(_feature_batch(batches[0])))
        monkeypatch.setattr(ShardCalls, "_call", reply_lost_once)
        got = _run(store, batches[1])
        want = reference.update_and_read(_feature_batch(batches[1]))
        assert lost, "no call was made to fail"
        # Same numbers; the events of the retried node read as replayed (they were applied).
        np.testing.assert_allclose(got.values, want.values, rtol=1e-9, atol=0)
        np.testing.assert_array_equal(got.late, want.late)
        assert got.replayed.any() and not want.replayed.any()
        for events in batches[2:]:  # and the state holds each event once
            _same(_run(store, events), reference.update_and_read(_feature_batch(events)))
    finally:
        store.close()


def test_a_node_restarted_with_its_data_mid_stream_is_waited_for_and_counts_once(
    redis_cluster: Any, cluster_client: Any, unique: str
) -> None:
    store = RedisFeatureStore(SPEC, cluster_client, unique)
    reference = ReferenceFeatureStore(SPEC)
    batches = _batches(5, 300, seed=13)
    owner = cluster_client.nodes_manager.get_node_from_slot(
        shard_slots(unique)[shard_of("card", "c0")]
    )
    url = next(u for u in redis_cluster.node_admin_urls if urlsplit(u).port == owner.port)
    node = _node(url)
    try:
        for events in batches[:2]:
            _same(_run(store, events), reference.update_and_read(_feature_batch(events)))
        run_id = node.info("server")["run_id"]
        # A graceful restart in place (AOF flushed, same process and ports, script cache
        # gone); the node's test config allows DEBUG from local connections.
        with pytest.raises(redis.ConnectionError):
            node.execute_command("DEBUG", "RESTART")
        for events in batches[2:]:
            _same(_run(store, events), reference.update_and_read(_feature_batch(events)))
        assert node.info("server")["run_id"] != run_id, "the node did not restart"
    finally:
        store.close()
        node.close()
