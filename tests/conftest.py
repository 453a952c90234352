"""Session fixtures: the real Kafka broker and redis-server, and unique names per test.

`make test` brings the local stack up first and exports STREAMFER_BOOTSTRAP,
STREAMFER_REDIS_URL (the `streamfer` ACL user: only the commands streamfer sends) and
STREAMFER_REDIS_ADMIN_URL (the `admin` user, for what tests do besides: FLUSH, PFDEBUG,
SCRIPT FLUSH, looking at keys). Run on its own, pytest starts the stack itself (and stops
what it started). Either way a service that cannot be reached fails the run: nothing is
skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class Services:
    bootstrap: str
    redis_url: str
    redis_admin_url: str = ""  # empty: a Redis without ACL users, redis_url can do it all
    secure_redis_url: str = ""  # rediss://, `streamfer up --secure` (STREAMFER_SECURE_REDIS_URL)


def _reachable(services: Services) -> None:
    from confluent_kafka.admin import AdminClient

    from features.redis_connect import connect

    connect(services.redis_url, socket_timeout=5).ping()
    admin = AdminClient({"bootstrap.servers": services.bootstrap})
    admin.list_topics(timeout=15)


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    bootstrap = os.environ.get("STREAMFER_BOOTSTRAP")
    redis_url = os.environ.get("STREAMFER_REDIS_URL")
    if bootstrap and redis_url:
        found = Services(
            bootstrap,
            redis_url,
            os.environ.get("STREAMFER_REDIS_ADMIN_URL", ""),
            os.environ.get("STREAMFER_SECURE_REDIS_URL", ""),
        )
        _reachable(found)
        yield found
        return
    from streams.stack.local import LocalStack, StackConfig

    # `--secure`, as `make test` starts it: the SASL_SSL tests find the secure listener.
    stack = LocalStack(replace(StackConfig.from_env(), secure=True))
    was_up = stack.status().running
    status = stack.up()
    started = Services(
        status.bootstrap_servers,
        status.redis_url,
        status.redis_admin_url,
        status.secure_redis_url or "",
    )
    _reachable(started)
    try:
        yield started
    finally:
        if not was_up:
            stack.down()


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    # Redis-only tests need no broker: an exported URL is used as it is.
    url = os.environ.get("STREAMFER_REDIS_URL")
    if url:
        from features.redis_connect import connect

        connect(url, socket_timeout=5).ping()
        return url
    services: Services = request.getfixturevalue("services")
    return services.redis_url


@pytest.fixture
def client(redis_url: str) -> Iterator[Any]:
    """A redis-py client of the test Redis (a RedisCluster for a cluster), closed after."""
    from features.redis_connect import connect

    client = connect(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def redis_admin_url(request: pytest.FixtureRequest) -> str:
    """The test Redis as its `admin` ACL user (STREAMFER_REDIS_ADMIN_URL); a Redis without
    ACL users (no admin URL exported) is reached through STREAMFER_REDIS_URL itself."""
    url = os.environ.get("STREAMFER_REDIS_ADMIN_URL")
    if url:
        return url
    if os.environ.get("STREAMFER_REDIS_URL"):
        return str(request.getfixturevalue("redis_url"))
    services: Services = request.getfixturevalue("services")
    return services.redis_admin_url or services.redis_url


@pytest.fixture
def admin_client(redis_admin_url: str) -> Iterator[Any]:
    """A redis-py client with every command (PFDEBUG, SCRIPT FLUSH, PTTL on any key)."""
    from features.redis_connect import connect

    client = connect(redis_admin_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def bootstrap(services: Services) -> str:
    return services.bootstrap


@pytest.fixture
def unique() -> str:
    """A short unique token for topic names and Redis key namespaces of one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def conn(services: Services) -> Any:
    """The services as the project's `Connections` (integration and end-to-end tests)."""
    from streams.spec import Connections

    return Connections(bootstrap=services.bootstrap, redis_url=services.redis_url)


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo network for the test spec, trained once per session (no download)."""
    from streams.workloads.demo_model import build_demo_model
    from tests.integration.harness import make_spec

    path = tmp_path_factory.mktemp("model") / "card-fraud.onnx"
    spec = make_spec("model", {"path": str(path)})
    return build_demo_model(spec, n_events=4000)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real local 3-primary Redis Cluster (tests/cluster_stack.py), one per session, for
    every directory that asks (contract and integration tests share it); failing, never
    skipping, when it cannot start."""
    from tests.cluster_stack import running_cluster

    yield from running_cluster(tmp_path_factory.mktemp("redis-cluster-home"))
