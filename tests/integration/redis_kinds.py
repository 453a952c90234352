"""The Redis an integration test runs against: the single Redis of the stack or a Redis
Cluster (the `redis_cluster` fixture), so that one test checks both with the same code."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from streams.spec import Connections

KINDS = ("single", "cluster")
"""Parametrise a fixture with these and build its value with `redis_under_test`."""


@dataclass(frozen=True)
class RedisUnderTest:
    kind: str
    conn: Connections  # the stack's, with the Redis URL of this kind (the streamfer user)
    admin_url: str  # a user allowed every command (PTTL of any key, INFO)


def redis_under_test(request: pytest.FixtureRequest, kind: str) -> RedisUnderTest:
    conn: Connections = request.getfixturevalue("conn")
    if kind == "single":
        return RedisUnderTest(kind, conn, request.getfixturevalue("redis_admin_url"))
    cluster = request.getfixturevalue("redis_cluster")
    return RedisUnderTest(
        kind, conn.model_copy(update={"redis_url": cluster.url}), cluster.admin_url
    )
