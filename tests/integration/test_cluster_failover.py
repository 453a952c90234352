"""The feature store on a Redis Cluster with replicas (`streamfer up --redis-cluster 3
--redis-replicas 1`): a primary killed between batches is replaced by its replica and no
batch is lost or counted twice, and a batch is not acknowledged while its node's replica
cannot have it (`?replicas=1`: WAIT after each call), both checked against the reference;
and a worker (`streamfer run`) scoring through a primary's failover loses nothing."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import redis

from features.redis_connect import connect, split_replicas
from features.redis_store import RedisFeatureStore
from features.reference import ReferenceFeatureStore
from features.shard_calls import WAIT_MS, ClusterCallError
from features.shards import shard_of, shard_slots
from features.store import FeatureResult
from streams.stack.discovery import find_redis_cli, find_redis_server
from tests.cluster_stack import running_cluster
from tests.contract.test_feature_store import SPEC
from tests.integration.harness import (
    assert_features_exact,
    make_spec,
    prediction_counts,
    produce,
    read_json,
    recompute_features,
    synthetic,
    topic_size,
    wait_for,
    worker_process,
    write_spec,
)
from tests.integration.test_cluster_features import _batches, _feature_batch, _run, _same

pytestmark = pytest.mark.integration

NODE_TIMEOUT_MS = 2000  # a failover starts about this long after a primary stops answering


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A cluster of its own: 3 primaries with one replica each (killed nodes stay killed
    for the other tests of the session otherwise)."""
    home = tmp_path_factory.mktemp("redis-cluster-replicas")
    yield from running_cluster(home, replicas=1, node_timeout_ms=NODE_TIMEOUT_MS)


def _role(url: str) -> dict[str, Any]:
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        return dict(client.info("replication"))
    finally:
        client.close()


def _wait(what: str, check: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except redis.RedisError:
            pass  # a node restarting, or the cluster between states
        assert time.monotonic() < deadline, f"{what} within {timeout_s:.0f} s"
        time.sleep(0.05)


def _same_values(got: FeatureResult, want: FeatureResult) -> None:
    """A batch whose call was retried after its script ran: the same numbers and late
    flags; its events on that node read as replayed (they had been applied)."""
    np.testing.assert_allclose(got.values, want.values, rtol=1e-9, atol=0)
    np.testing.assert_array_equal(got.late, want.late)


def _node_of(
    cluster_client: Any, replicated: Any, namespace: str, value: str
) -> tuple[str, Any, str, Any]:
    """(admin URL, node, admin URL of its replica, that replica's node) of the primary
    holding `value`'s shard."""
    owner = cluster_client.nodes_manager.get_node_from_slot(
        shard_slots(namespace)[shard_of("card", value)]
    )
    by_port = {urlsplit(u).port: u for u in replicated.node_admin_urls}
    nodes = {n.port: n for n in replicated.cluster.nodes}
    url = by_port[owner.port]
    replica_port = next(
        port
        for port, u in by_port.items()
        if (info := _role(u)).get("role") == "slave" and info.get("master_port") == owner.port
    )
    return url, nodes[owner.port], by_port[replica_port], nodes[replica_port]


def _served(store: RedisFeatureStore, events: Any) -> FeatureResult:
    """One batch as a worker gets it through: a group not served within the store's
    retries is an outage to the worker, which pauses and runs the batch again (bounded)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return _run(store, events)
        except ClusterCallError:
            assert time.monotonic() < deadline, "the cluster did not serve the batch again"


@pytest.fixture
def store_client(replicated: Any) -> Iterator[Any]:
    url, replicas = split_replicas(replicated.url)
    assert replicas == 1, "the local cluster's URL asks for its replica"
    client = connect(url)
    yield client
    client.close()


def test_a_primary_failed_over_between_batches_loses_no_batch_and_counts_once(
    replicated: Any, store_client: Any, unique: str
) -> None:
    store = RedisFeatureStore(SPEC, store_client, unique, replicas=1)
    reference = ReferenceFeatureStore(SPEC)
    batches = _batches(6, 300, seed=17)
    _, node, replica_url, _ = _node_of(store_client, replicated, unique, "c0")
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        for events in batches[:2]:
            _same(_run(store, events), reference.update_and_read(_feature_batch(events)))
        pid = int(node.pid_file.read_text())
        os.kill(pid, signal.SIGKILL)  # no AOF flush, no goodbye: only the replica has it
        # The next batch retries (connection refused, then MOVED to the promoted replica,
        # then WAIT: the new primary has no replica yet) while the cluster fails over.
        pending = pool.submit(_served, store, batches[2])
        _wait("the replica took over", lambda: _role(replica_url)["role"] == "master", 60)
        replicated.cluster.up(find_redis_server(), find_redis_cli(), time.monotonic() + 60)
        _wait(
            "the old primary is back as the replica of the new one",
            lambda: _role(replica_url).get("connected_slaves", 0) >= 1,
            60,
        )
        want = reference.update_and_read(_feature_batch(batches[2]))
        _same_values(pending.result(timeout=150), want)
        for events in batches[3:]:
            _same(_run(store, events), reference.update_and_read(_feature_batch(events)))
    finally:
        pool.shutdown(wait=True)
        store.close()


def test_a_batch_is_not_acknowledged_while_the_replica_cannot_have_it(
    replicated: Any, store_client: Any, unique: str
) -> None:
    store = RedisFeatureStore(SPEC, store_client, unique, replicas=1)
    reference = ReferenceFeatureStore(SPEC)
    batches = _batches(3, 200, seed=19)
    _, _, _, replica = _node_of(store_client, replicated, unique, "c0")
    replica_pid = int(replica.pid_file.read_text())
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        _same(_run(store, batches[0]), reference.update_and_read(_feature_batch(batches[0])))
        os.kill(replica_pid, signal.SIGSTOP)  # connected, but acknowledges nothing
        try:
            pending = pool.submit(_run, store, batches[1])
            with pytest.raises(FutureTimeout):  # several WAITs run out meanwhile
                pending.result(timeout=3 * WAIT_MS / 1000)
        finally:
            os.kill(replica_pid, signal.SIGCONT)
        want = reference.update_and_read(_feature_batch(batches[1]))
        got = pending.result(timeout=30)
        _same_values(got, want)
        assert got.replayed.any(), "the call was retried after its script ran"
        _same(_run(store, batches[2]), reference.update_and_read(_feature_batch(batches[2])))
    finally:
        pool.shutdown(wait=True)
        store.close()


def test_a_worker_keeps_scoring_through_a_primary_failover_and_loses_nothing(
    request: pytest.FixtureRequest, replicated: Any, model_file: Any, unique: str, tmp_path: Any
) -> None:
    # The whole pipeline on the replicated cluster (its URL asks for the replica): a primary
    # SIGKILLed mid-stream, its replica promoted, the old node back as a replica. Every
    # event gets a prediction and every served feature equals the recomputation.
    conn = request.getfixturevalue("conn").model_copy(update={"redis_url": replicated.url})
    model = {"path": str(model_file)}
    spec = make_spec(unique, model)
    spec_file = write_spec(tmp_path / "spec.yaml", unique, model)
    n = 30_000
    events = synthetic(n, seed=29, n_cards=1000)
    produce(conn, spec, events)
    client = connect(split_replicas(replicated.url)[0])
    try:
        primary = client.get_primaries()[0]
    finally:
        client.close()
    by_port = {urlsplit(u).port: u for u in replicated.node_admin_urls}
    node = next(n for n in replicated.cluster.nodes if n.port == primary.port)
    replica_url = next(
        u
        for u in by_port.values()
        if (info := _role(u)).get("role") == "slave" and info.get("master_port") == primary.port
    )
    # Idle exit: a worker paused through the outage may take it for the stream's end; a
    # second worker then finishes what is left, as after any stop.
    first = worker_process(spec_file, conn, "--idle-exit", "10")
    try:
        wait_for(lambda: topic_size(conn, spec.topics.predictions) > n // 4, 120, "a quarter")
        os.kill(int(node.pid_file.read_text()), signal.SIGKILL)
        # Mid-stream: part of the events are scored after the failover.
        assert topic_size(conn, spec.topics.predictions) < n
        _wait("the replica took over", lambda: _role(replica_url)["role"] == "master", 60)
        replicated.cluster.up(find_redis_server(), find_redis_cli(), time.monotonic() + 60)
        assert first.wait(300) == 0
    finally:
        if first.poll() is None:
            first.kill()
    second = worker_process(spec_file, conn, "--idle-exit", "5")
    assert second.wait(300) == 0

    counts = prediction_counts(read_json(conn, spec.topics.predictions, timeout_s=120))
    assert set(counts) == {e["event_id"] for e in events}, "an event has no prediction"
    served = read_json(conn, spec.topics.features, timeout_s=120)
    assert_features_exact(served, recompute_features(conn, spec), spec.features.names)
