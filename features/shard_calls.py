"""One script call per Redis node for a batch: the feature shards grouped by the node that
owns their slot, the calls to different nodes run concurrently, failed groups retried.

On a single Redis every shard is on the one server: one inline call, no thread hop. On a
Redis Cluster the shards are grouped by redis-py's slot map; each group is one EVALSHA on
its node's own connection (not through RedisCluster's command routing, which does not
route scripts by their keys), declaring the epoch key of the group's first shard (Redis 7.0
accepts declared keys of one slot only) so that a node no longer owning it answers
MOVED/ASK before running anything; the script reads every other shard's epoch before
writing anything, so a stale map fails the call there ("non local key"). A group that
fails with MOVED/ASK/TRYAGAIN/CLUSTERDOWN, a connection error, or a script stopped on a key
that is not local (a slot moving) has the slot map refreshed, its shards regrouped and
retried, until `RETRY_S` seconds have passed; then `ClusterCallError`. A retried group is
safe: the per-shard high-water of the script makes a call that already applied a replay,
never a double count. NOSCRIPT (never loaded there, restarted, failed over): load, retry.

With `replicas` > 0 each call is followed, in the same round trip, by `WAIT replicas
WAIT_MS`: a call whose node has fewer replicas holding its writes by then raises
`ReplicasBehind`, retried as above (and on one server, an outage to the worker), so the
worker stores offsets only for batches whose state a failover to a replica keeps. A node
left without its replica (failed over, the old primary not back yet) stalls the pipeline
until one is back: durability over availability, as the URL asked (`?replicas=N`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster

from features.redis_connect import RedisClient, is_cluster

log = logging.getLogger(__name__)

RETRY_S = 30.0
"""How long a group of shards is retried (slot map refresh, regroup) before giving up."""

WAIT_MS = 1000
"""How long one call waits for its node's replicas to acknowledge its writes."""


class ReplicasBehind(redis.exceptions.ConnectionError):
    """A node's replicas did not acknowledge a call's writes in time: not yet durable."""


Shards = tuple[int, ...]
Encode = Callable[[Shards], bytes]
"""The batch document for a call covering these shards."""

_RETRIABLE = (
    ReplicasBehind,
    redis.exceptions.AskError,  # MovedError is an AskError
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


class ClusterCallError(redis.exceptions.ConnectionError):
    """A group of shards could not be served within `RETRY_S` seconds: to the worker an
    outage of Redis (pause and retry with backoff), not a feature-script error."""


def _retriable(exc: Exception) -> bool:
    if isinstance(exc, _RETRIABLE):
        return True
    # A key moved away under a running script (a slot being migrated key by key), or the
    # cluster going down mid-call: nothing was written yet in the script's read phase.
    text = str(exc)
    return isinstance(exc, redis.ResponseError) and (
        "non local key" in text or "cluster is down" in text
    )


class ShardCalls:
    """Runs the feature script over all shards of a namespace, one call per node."""

    def __init__(
        self,
        client: RedisClient,
        script: str,
        keys: Sequence[str],
        slots: Sequence[int],
        replicas: int = 0,
    ):
        self._client = client
        self._replicas = replicas
        self._script = script
        self._keys = tuple(keys)
        self._slots = tuple(slots)
        self._cluster = is_cluster(client)
        self._pool: ThreadPoolExecutor | None = None
        # Redis names a script by the SHA1 of its text. Nothing is sent here: each node gets
        # the script on its first NOSCRIPT (below), so a Redis that is away while a worker
        # starts is an outage its first batch waits out, not a crash at start.
        self.sha = hashlib.sha1(script.encode()).hexdigest()

    def close(self) -> None:
        """Stop the thread pool (the client is the caller's)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def run(self, config: bytes, encode: Encode) -> list[tuple[Shards, Any]]:
        """(shards, reply) per call, covering every shard once."""
        everything = tuple(range(len(self._keys)))
        if not self._cluster:
            return [(everything, self._call(self._client, everything, config, encode))]
        assert isinstance(self._client, RedisCluster)
        done: list[tuple[Shards, Any]] = []
        pending: list[int] = list(everything)
        deadline = time.monotonic() + RETRY_S
        attempt = 0
        while pending:
            groups = self._groups(pending)
            pending = []
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=max(len(groups), 4), thread_name_prefix="sf-shards"
                )
            futures = [
                (shards, self._pool.submit(self._call, conn, shards, config, encode))
                for conn, shards in groups
            ]
            failure: Exception | None = None
            for shards, future in futures:
                try:
                    done.append((shards, future.result()))
                except Exception as exc:
                    if not _retriable(exc):
                        raise
                    failure = exc
                    pending.extend(shards)
            if not pending:
                break
            if time.monotonic() > deadline:
                raise ClusterCallError(
                    f"feature shards {sorted(pending)} not served for {RETRY_S:.0f}s: "
                    f"{type(failure).__name__}: {failure}"
                ) from failure
            log.debug("feature shards %s retried after %r", sorted(pending), failure)
            attempt += 1
            time.sleep(min(0.02 * 2**attempt, 1.0))
            self._refresh()
        return done

    def _groups(self, shards: Sequence[int]) -> list[tuple[redis.Redis, Shards]]:
        assert isinstance(self._client, RedisCluster)
        by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
        manager = self._client.nodes_manager
        for shard in shards:
            node = manager.get_node_from_slot(self._slots[shard])
            by_node.setdefault(node.name, (node, []))[1].append(shard)
        out = []
        for node, owned in by_node.values():
            conn = self._client.get_redis_connection(node)
            out.append((conn, tuple(owned)))
        return out

    def _refresh(self) -> None:
        assert isinstance(self._client, RedisCluster)
        try:
            self._client.nodes_manager.initialize()
        except Exception as exc:  # every node unreachable for now: the next try asks again
            log.debug("slot map refresh failed: %r", exc)

    def _call(self, conn: Any, shards: Shards, config: bytes, encode: Encode) -> Any:
        key = self._keys[shards[0]]
        doc = encode(shards)
        try:
            return self._evalsha(conn, key, config, doc)
        except redis.exceptions.NoScriptError:
            # This server lost its script cache (restart, SCRIPT FLUSH, failover): load once.
            conn.script_load(self._script)
            return self._evalsha(conn, key, config, doc)

    def _evalsha(self, conn: Any, key: str, config: bytes, doc: bytes) -> Any:
        if not self._replicas:
            return conn.evalsha(self.sha, 1, key, config, doc)
        pipe = conn.pipeline(transaction=False)
        pipe.evalsha(self.sha, 1, key, config, doc)
        pipe.execute_command("WAIT", self._replicas, WAIT_MS)
        reply, acked = pipe.execute()
        if acked < self._replicas:
            raise ReplicasBehind(
                f"{acked} of {self._replicas} replicas acknowledged the feature script's "
                f"writes within {WAIT_MS} ms (the URL's replicas={self._replicas})"
            )
        return reply
