"""WAIT's cost on loopback: a one-key script call on one primary, alone and followed by
`WAIT 1 1000` in the same round trip (what `?replicas=1` adds to each feature-script call).
Run against `streamfer up --redis-cluster 3 --redis-replicas 1` (its STREAMFER_REDIS_URL)."""

from __future__ import annotations

import os
import statistics
import time

from features.redis_connect import connect, split_replicas

url, _ = split_replicas(os.environ["STREAMFER_REDIS_URL"])
cluster = connect(url)
node = cluster.get_primaries()[0]
conn = cluster.get_redis_connection(node)
sha = conn.script_load("redis.call('SET', KEYS[1], ARGV[1]) return 1")
key = next(
    k
    for i in range(100_000)
    if cluster.nodes_manager.get_node_from_slot(cluster.keyslot(k := f"sf:waitlat:{{{i}}}")).name
    == node.name
)


def timed(wait: bool, calls: int = 3000) -> tuple[float, float]:
    took = []
    for _ in range(calls):
        start = time.perf_counter()
        if wait:
            pipe = conn.pipeline(transaction=False)
            pipe.evalsha(sha, 1, key, "v")
            pipe.execute_command("WAIT", 1, 1000)
            assert pipe.execute()[1] >= 1
        else:
            conn.evalsha(sha, 1, key, "v")
        took.append((time.perf_counter() - start) * 1e6)
    took.sort()
    return statistics.median(took), took[int(len(took) * 0.99)]


for _ in range(2):
    for label, wait in (("no WAIT", False), ("WAIT 1 ", True)):
        p50, p99 = timed(wait)
        print(f"{label}  p50/p99 µs: {p50:.0f} / {p99:.0f}")
