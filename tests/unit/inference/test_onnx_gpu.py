"""CUDA + IO binding give the CPU's scores. Skips only where CUDA cannot actually run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.model_ref import ModelRef
from inference.onnx_model import OnnxModel
from inference.providers import CPU, CUDA, cuda_status
from inference.spec import ModelSpec
from streams.workloads.demo_model import export_onnx, train_mlp

CUDA_USABLE, CUDA_WHY = cuda_status()

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not CUDA_USABLE, reason=f"CUDA cannot run here: {CUDA_WHY}"),
]

NAMES = ["a", "b", "c", "d"]


@pytest.mark.parametrize("providers", ["cuda", "auto"])
def test_cuda_with_io_binding_scores_like_cpu(tmp_path: Path, providers: str) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 4)) * [1.0, 10.0, 100.0, 0.1]
    y = (X[:, 0] + X[:, 1] / 10 > 0.3).astype(np.float64)
    weights = train_mlp(X, y, hidden=16, epochs=50)
    path = export_onnx(weights, tmp_path / "m.onnx", feature_names=NAMES, model_name="m")
    ref = ModelRef.for_file("m", path)

    def load(which: str) -> OnnxModel:
        spec = ModelSpec(name="m", path=path, inputs={"features": NAMES}, providers=which)
        return OnnxModel.load(ref, spec, NAMES)

    gpu, cpu = load(providers), load("cpu")
    assert gpu.provider == CUDA and gpu.fallback_reason is None
    assert cpu.provider == CPU
    # TF32 is off unless asked for: that is what keeps CUDA within 1e-5 of the CPU.
    assert gpu._session.get_provider_options()[CUDA]["use_tf32"] == "0"
    for n in (1, 7, 512, 2000):
        np.testing.assert_allclose(gpu.predict(X[:n]), cpu.predict(X[:n]), atol=1e-5)
    np.testing.assert_allclose(gpu.predict(X), weights.predict(X), atol=1e-5)


def test_tf32_is_used_only_when_the_spec_asks(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(4096, 4))
    y = (X[:, 0] - X[:, 2] > 0).astype(np.float64)
    weights = train_mlp(X, y, hidden=64, epochs=20)
    path = export_onnx(weights, tmp_path / "m.onnx", feature_names=NAMES, model_name="m")
    ref = ModelRef.for_file("m", path)
    spec = ModelSpec(name="m", path=path, inputs={"features": NAMES}, providers="cuda", tf32=True)
    fast = OnnxModel.load(ref, spec, NAMES)
    assert fast._session.get_provider_options()[CUDA]["use_tf32"] == "1"
    # TF32 keeps 10 mantissa bits: close to the float64 reference, not equal to it
    np.testing.assert_allclose(fast.predict(X), weights.predict(X), atol=5e-3)
