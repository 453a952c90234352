from __future__ import annotations

from pathlib import Path

import pytest

from streams.demo_model import build_demo_model
from streams.spec import Connections
from tests.integration.harness import make_spec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def conn(services) -> Connections:
    return Connections(bootstrap=services.bootstrap, redis_url=services.redis_url)


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo network for the test spec, trained once per session (no download)."""
    path = tmp_path_factory.mktemp("model") / "card-fraud.onnx"
    spec = make_spec("model", {"path": str(path)})
    return build_demo_model(spec, n_events=4000)
