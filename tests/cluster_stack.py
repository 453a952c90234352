"""A real local 3-primary Redis Cluster for tests: what the `redis_cluster` fixture
(tests/conftest.py) starts once per session.

Built on `streams.stack.redis_cluster` (what `streamfer up --redis-cluster 3` runs), in its
own home on free ports, with the stack's ACL users: `.url` is the `streamfer` user (only the
commands streamfer sends), `.admin_url` and `.node_admin_urls` the `admin` user. A cluster
that cannot start fails the tests that use it; nothing is skipped.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLUSTER_PRIMARIES = 3
# Below Linux's ephemeral range (32768+), so a client's outgoing port cannot take one later.
_PORT_RANGE = (20000, 32000)


@dataclass(frozen=True)
class RedisClusterServices:
    """Where the session's cluster listens: seed URLs and one admin URL per primary."""

    url: str
    admin_url: str
    node_admin_urls: tuple[str, ...]
    cluster: Any = None  # the LocalRedisCluster: its nodes' pids, `up` to restart a node


def free_cluster_base(count: int) -> int:
    """A free base port for a cluster of `count` nodes, from a random start in the range
    (tests started at the same time do not all try the same ports)."""
    from streams.stack.redis_cluster import free_cluster_base as first_free

    return first_free(count, random.randrange(*_PORT_RANGE), _PORT_RANGE[1])


def running_cluster(
    home: Path, replicas: int = 0, node_timeout_ms: int | None = None
) -> Iterator[RedisClusterServices]:
    """Start the cluster under `home` (3 primaries, `replicas` each), yield where it
    listens, stop every node it started."""
    from streams.stack.config import StackError
    from streams.stack.discovery import find_redis_cli, find_redis_server
    from streams.stack.redis_cluster import LocalRedisCluster, stop_all

    deadline = time.monotonic() + 90.0
    try:
        # A port found free can be taken before a node binds it (other tests pick free ports
        # too): a few fresh bases, then the last error fails the tests.
        for attempt in range(3):
            base = free_cluster_base(CLUSTER_PRIMARIES * (1 + replicas))
            timeout = {} if node_timeout_ms is None else {"node_timeout_ms": node_timeout_ms}
            cluster = LocalRedisCluster(
                home / f"try-{attempt}", base, CLUSTER_PRIMARIES, replicas=replicas, **timeout
            )
            try:
                urls = cluster.up(find_redis_server(), find_redis_cli(), deadline)
                break
            except StackError:
                cluster.down()
                if attempt == 2 or time.monotonic() >= deadline:
                    raise
        yield RedisClusterServices(urls.url, urls.admin_url, urls.node_admin_urls, cluster)
    finally:
        for tried in home.glob("try-*"):  # every node any attempt started, by its folder
            stop_all(tried, timeout_s=30.0)
