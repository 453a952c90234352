"""The Redis servers a suite run measures against: the stack's single Redis, and a cluster.

Every system run talks to one of them (`SystemDef.cluster`). A target carries the URL the
workers use and the URL `INFO cpu` is read through: the admin user where one is given
(STREAMFER_REDIS_ADMIN_URL, STREAMFER_BENCH_CLUSTER_ADMIN_URL), since a managed Redis's app
user may lack INFO (the local stack's `streamfer` user has it). The cluster is
STREAMFER_BENCH_CLUSTER_URL when set, else a local 3-primary `LocalRedisCluster`
(what `streamfer up --redis-cluster 3` runs) in a temporary home on free ports below the
ephemeral range, stopped and removed when the run ends, failed or not. One try: a port taken
between the scan and the start fails the run with the node's log (run it again).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streams.spec import Connections

log = logging.getLogger(__name__)

CLUSTER_URL_ENV = "STREAMFER_BENCH_CLUSTER_URL"
CLUSTER_ADMIN_URL_ENV = "STREAMFER_BENCH_CLUSTER_ADMIN_URL"
ADMIN_URL_ENV = "STREAMFER_REDIS_ADMIN_URL"
CLUSTER_PRIMARIES = 3
DEFAULT_CLUSTER_PORT = 27000


@dataclass(frozen=True)
class RedisTarget:
    """One Redis (single or cluster): the workers' URL and the URL INFO is read through."""

    kind: str  # "single" or "cluster"
    url: str
    info_url: str


def single_target(connections: Connections) -> RedisTarget:
    """The stack's Redis, INFO through STREAMFER_REDIS_ADMIN_URL when set."""
    return RedisTarget(
        "single", connections.redis_url, os.environ.get(ADMIN_URL_ENV) or connections.redis_url
    )


@contextlib.contextmanager
def cluster_target(start_port: int = DEFAULT_CLUSTER_PORT) -> Iterator[RedisTarget]:
    """The cluster to measure: STREAMFER_BENCH_CLUSTER_URL, or a local one for the run."""
    url = os.environ.get(CLUSTER_URL_ENV)
    if url:
        yield RedisTarget("cluster", url, os.environ.get(CLUSTER_ADMIN_URL_ENV) or url)
        return
    from streams.stack.discovery import find_redis_cli, find_redis_server
    from streams.stack.redis_cluster import LocalRedisCluster, free_cluster_base

    home = Path(tempfile.mkdtemp(prefix="sf-bench-cluster-"))
    cluster = LocalRedisCluster(
        home, free_cluster_base(CLUSTER_PRIMARIES, start_port), CLUSTER_PRIMARIES
    )
    try:
        # `up` stops what it started when it fails; `down` below covers the success path.
        urls = cluster.up(find_redis_server(), find_redis_cli(), time.monotonic() + 90.0)
        first = cluster.nodes[0].port
        log.info("Redis Cluster: %d primaries from port %d", len(cluster.nodes), first)
        yield RedisTarget("cluster", urls.url, urls.admin_url)
    finally:
        cluster.down()
        shutil.rmtree(home, ignore_errors=True)
