"""The demo MLP: trains deterministically, learns, and its ONNX export equals numpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from streams.workloads.demo_model import MlpWeights, export_onnx, train_mlp

NAMES = ["count_1h", "amount_mean_1h", "amount", "web"]


def dataset(n: int = 1500, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Features on very different scales; the label depends on two of them non-linearly."""
    rng = np.random.default_rng(seed)
    X = np.column_stack(
        [
            rng.poisson(3.0, n),
            rng.normal(80.0, 30.0, n),
            rng.lognormal(4.0, 1.0, n),
            rng.integers(0, 2, n),
        ]
    ).astype(np.float64)
    y = ((X[:, 0] > 4) & (X[:, 2] > 60.0) | (X[:, 3] * X[:, 0] > 5)).astype(np.float64)
    return X, y


def run_onnx(path: Path, X: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["score"], {"features": X.astype(np.float32)})[0]


def test_onnx_export_scores_equal_the_numpy_forward_pass(tmp_path: Path) -> None:
    X, y = dataset()
    weights = train_mlp(X, y, epochs=100)
    path = export_onnx(weights, tmp_path / "m.onnx", feature_names=NAMES, model_name="demo")
    scores = run_onnx(path, X)
    assert scores.shape == (len(X),)
    np.testing.assert_allclose(scores, weights.predict(X), atol=1e-5)


def test_export_is_a_valid_model_with_dynamic_batch_and_feature_names(tmp_path: Path) -> None:
    X, y = dataset(200)
    path = export_onnx(
        train_mlp(X, y, epochs=5),
        tmp_path / "m.onnx",
        feature_names=NAMES,
        model_name="demo",
        doc="demo fraud model",
    )
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    assert model.doc_string == "demo fraud model"
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["feature_names"]) == NAMES
    (inp,) = model.graph.input
    assert inp.name == "features"
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 4]
    (out,) = model.graph.output
    assert out.name == "score"
    assert [d.dim_param for d in out.type.tensor_type.shape.dim] == ["batch"]
    for n in (1, 7):
        assert run_onnx(path, X[:n]).shape == (n,)


def test_training_learns_the_labels() -> None:
    X, y = dataset()
    untrained = train_mlp(X, y, epochs=0)
    trained = train_mlp(X, y, epochs=300, lr=0.02)
    assert trained.log_loss(X, y) < 0.5 * untrained.log_loss(X, y)
    assert ((trained.predict(X) >= 0.5) == (y == 1)).mean() > 0.95


def test_minibatch_training_works() -> None:
    X, y = dataset()
    weights = train_mlp(X, y, epochs=20, batch_size=128)
    assert ((weights.predict(X) >= 0.5) == (y == 1)).mean() > 0.9


def test_same_seed_same_weights_and_same_file(tmp_path: Path) -> None:
    X, y = dataset(300)
    a, b = train_mlp(X, y, epochs=20, seed=3), train_mlp(X, y, epochs=20, seed=3)
    for field in ("mean", "scale", "w1", "b1", "w2"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    pa = export_onnx(a, tmp_path / "a.onnx", feature_names=NAMES, model_name="m")
    pb = export_onnx(b, tmp_path / "b.onnx", feature_names=NAMES, model_name="m")
    assert pa.read_bytes() == pb.read_bytes()
    c = train_mlp(X, y, epochs=20, seed=4)
    assert not np.array_equal(a.w1, c.w1)


def test_constant_columns_and_hidden_size() -> None:
    X, y = dataset(300)
    X[:, 3] = 1.0
    weights = train_mlp(X, y, hidden=5, epochs=10)
    assert isinstance(weights, MlpWeights)
    assert weights.hidden == 5 and weights.scale[3] == 1.0
    assert np.isfinite(weights.predict(X)).all()


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    X, y = dataset(50)
    with pytest.raises(ValueError, match="50 rows but y has 49"):
        train_mlp(X, y[:-1])
    with pytest.raises(ValueError, match="labels in"):
        train_mlp(X, y * 2)
    with pytest.raises(ValueError, match="NaN"):
        train_mlp(np.where(X > 1e9, X, np.nan), y)
    with pytest.raises(ValueError, match="4 distinct names"):
        export_onnx(
            train_mlp(X, y, epochs=1), tmp_path / "m.onnx", feature_names=NAMES[:3], model_name="m"
        )
