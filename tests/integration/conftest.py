from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.harness import kill_leftover_workers

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _no_worker_outlives_its_test() -> Iterator[None]:
    yield
    kill_leftover_workers()
