"""Fixtures of the contract tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from features.redis_connect import connect


@pytest.fixture(scope="module", params=["redis", "cluster"])
def module_client(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A client of the single Redis, then of the cluster."""
    if request.param == "cluster":
        client = connect(request.getfixturevalue("redis_cluster").url)
    else:
        client = connect(request.getfixturevalue("redis_url"))
    yield client
    client.close()
