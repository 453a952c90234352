"""OnnxModel: verified load, signature checks that say what to fix, batch scoring, providers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inference import providers
from inference.model_ref import ModelIntegrityError, ModelRef
from inference.onnx_model import OnnxModel
from inference.providers import CPU, CUDA, ModelProviderError, cuda_status, gpu_visible
from inference.signature import ModelSignatureError
from inference.spec import ModelSpec
from streams.workloads.demo_model import export_onnx, train_mlp

COLUMNS = ["a", "b", "c"]


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def matmul_model(
    path: Path,
    weights: np.ndarray,
    *,
    input_name: str = "features",
    elem_type: int = TensorProto.FLOAT,
    input_shape: Sequence[Any] = ("n", 3),
    squeeze: bool = True,
) -> Path:
    """score = x @ weights: (n,) when squeezed, else (n, m)."""
    w = numpy_helper.from_array(weights.astype(np.float32), "w")
    nodes = [
        helper.make_node("Cast", [input_name], ["x"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["x", "w"], ["mm"]),
    ]
    out_shape: list[Any] = ["n", weights.shape[1]]
    if squeeze:
        nodes.append(helper.make_node("Squeeze", ["mm", "axes"], ["score"]))
        out_shape = ["n"]
    else:
        nodes.append(helper.make_node("Identity", ["mm"], ["score"]))
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(input_name, elem_type, list(input_shape))],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, out_shape)],
        initializer=[w, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return save(model, path)


def two_input_model(path: Path) -> Path:
    """score = concat(left (n, 2), right (n, 1)) @ [1, 10, 100]."""
    w = numpy_helper.from_array(np.array([[1.0], [10.0], [100.0]], dtype=np.float32), "w")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    graph = helper.make_graph(
        [
            helper.make_node("Concat", ["left", "right"], ["x"], axis=1),
            helper.make_node("MatMul", ["x", "w"], ["mm"]),
            helper.make_node("Squeeze", ["mm", "axes"], ["score"]),
        ],
        "g",
        [
            helper.make_tensor_value_info("left", TensorProto.FLOAT, ["n", 2]),
            helper.make_tensor_value_info("right", TensorProto.FLOAT, ["n", 1]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n"])],
        initializer=[w, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return save(model, path)


def model_spec(path: Path, **fields: Any) -> ModelSpec:
    values: dict[str, Any] = {
        "name": "m",
        "path": path,
        "inputs": {"features": COLUMNS},
        "providers": "cpu",
        "warmup_batches": 1,
        "warmup_batch_size": 8,
    }
    values.update(fields)
    return ModelSpec.model_validate(values)


def load(path: Path, feature_names: Sequence[str] = COLUMNS, **fields: Any) -> OnnxModel:
    return OnnxModel.load(ModelRef.for_file("m", path), model_spec(path, **fields), feature_names)


def signature_error(path: Path, feature_names: Sequence[str] = COLUMNS, **fields: Any) -> str:
    with pytest.raises(ModelSignatureError) as info:
        load(path, feature_names, **fields)
    return str(info.value)


W = np.array([[1.0], [2.0], [3.0]])


def test_scores_equal_the_numpy_forward_pass_of_the_trained_weights(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3)) * [1.0, 20.0, 300.0] + [0.0, 50.0, 1000.0]
    y = (X[:, 0] + X[:, 1] / 20.0 > 2.5).astype(np.float64)
    weights = train_mlp(X, y, epochs=50)
    path = export_onnx(weights, tmp_path / "mlp.onnx", feature_names=COLUMNS, model_name="m")
    # The featurizer's matrix has more columns, in another order: the mapping picks by name.
    names = ["noise", "c", "a", "b"]
    matrix = np.column_stack([rng.normal(size=500), X[:, 2], X[:, 0], X[:, 1]])
    model = load(path, names)
    scores = model.predict(matrix)
    assert scores.dtype == np.float64 and scores.shape == (500,)
    np.testing.assert_allclose(scores, weights.predict(X), atol=1e-5)
    assert model.provider == CPU
    assert model.name == "m" and model.version == model.sha256[:12]


def test_contiguous_and_gathered_column_selections(tmp_path: Path) -> None:
    path = matmul_model(tmp_path / "m.onnx", W)
    matrix = np.arange(20, dtype=np.float64).reshape(4, 5)
    contiguous = load(path, ["x", "a", "b", "c", "y"])
    np.testing.assert_allclose(contiguous.predict(matrix), matrix[:, 1:4] @ W[:, 0])
    gathered = load(path, ["c", "x", "a", "y", "b"])
    np.testing.assert_allclose(gathered.predict(matrix), matrix[:, [2, 4, 0]] @ W[:, 0])


def test_two_inputs_each_get_their_columns(tmp_path: Path) -> None:
    path = two_input_model(tmp_path / "m.onnx")
    model = load(path, ["p", "q", "r"], inputs={"left": ["r", "p"], "right": ["q"]})
    matrix = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    np.testing.assert_allclose(model.predict(matrix), [3 + 10 * 1 + 100 * 2, 6 + 40 + 500])


def test_two_column_output_takes_the_last_column_or_output_index(tmp_path: Path) -> None:
    path = matmul_model(
        tmp_path / "m.onnx", np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), squeeze=False
    )
    matrix = np.array([[0.25, 0.75, 9.0]])
    np.testing.assert_allclose(load(path).predict(matrix), [0.75])
    np.testing.assert_allclose(load(path, output_index=0).predict(matrix), [0.25])
    assert "out of range" in signature_error(path, output_index=2)


def test_empty_batch_and_wrong_matrix_width(tmp_path: Path) -> None:
    model = load(matmul_model(tmp_path / "m.onnx", W))
    assert model.predict(np.empty((0, 3))).shape == (0,)
    with pytest.raises(ValueError, match=r"expected an \(n, 3\) feature matrix"):
        model.predict(np.zeros((2, 4)))


def test_missing_input_is_named_with_the_inputs_the_model_has(tmp_path: Path) -> None:
    path = matmul_model(tmp_path / "m.onnx", W, input_name="x_in")
    message = signature_error(path)
    assert "model m v" in message and str(path) in message
    assert "'features', which the model does not have" in message
    assert "['x_in']" in message and "rename the key in model.inputs" in message


def test_wrong_width_says_expected_and_found(tmp_path: Path) -> None:
    path = matmul_model(tmp_path / "m.onnx", W)
    message = signature_error(path, ["a", "b", "c", "d"], inputs={"features": ["a", "b", "c", "d"]})
    assert "takes 3 columns but model.inputs.features maps 4" in message


def test_unknown_column_is_named(tmp_path: Path) -> None:
    path = matmul_model(tmp_path / "m.onnx", W)
    message = signature_error(path, inputs={"features": ["a", "b", "amount_log"]})
    assert "['amount_log'], which are not feature columns" in message
    assert "known: a, b, c" in message


def test_unmapped_model_input_is_an_error(tmp_path: Path) -> None:
    path = two_input_model(tmp_path / "m.onnx")
    message = signature_error(path, inputs={"left": ["a", "b"]})
    assert "model inputs ['right'] are not mapped" in message


def test_input_type_rank_batch_and_output_are_checked(tmp_path: Path) -> None:
    ints = matmul_model(tmp_path / "i.onnx", W, elem_type=TensorProto.INT64)
    assert "is tensor(int64), expected tensor(float)" in signature_error(ints)
    fixed = matmul_model(tmp_path / "f.onnx", W, input_shape=(1, 3))
    assert "fixed batch size 1" in signature_error(fixed)
    path = matmul_model(tmp_path / "m.onnx", W)
    assert "model.output is 'prob'" in signature_error(path, output="prob")
    assert "output_index does not apply" in signature_error(path, output_index=0)


def test_changed_file_is_refused_with_both_hashes(tmp_path: Path) -> None:
    path = matmul_model(tmp_path / "m.onnx", W)
    ref = ModelRef.for_file("m", path)
    matmul_model(path, W * 2)
    with pytest.raises(ModelIntegrityError) as info:
        OnnxModel.load(ref, model_spec(path), COLUMNS)
    message = str(info.value)
    assert str(path) in message and ref.sha256 in message
    assert ModelRef.for_file("m", path).sha256 in message


def test_threads_setting_is_accepted(tmp_path: Path) -> None:
    model = load(matmul_model(tmp_path / "m.onnx", W), threads=1, warmup_batches=0)
    np.testing.assert_allclose(model.predict(np.ones((2, 3))), [6.0, 6.0])


def placement_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What inference logged at INFO and above (the DEBUG notes of the CUDA preload aside)."""
    return [
        r for r in caplog.records if r.name.startswith("inference") and r.levelno >= logging.INFO
    ]


def test_auto_says_where_it_runs_in_one_line_and_warns_only_for_a_present_gpu(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    usable, why = cuda_status()
    path = matmul_model(tmp_path / "m.onnx", W)
    with caplog.at_level(logging.INFO, logger="inference"):
        model = load(path, providers="auto")
    np.testing.assert_allclose(model.predict(np.ones((2, 3))), [6.0, 6.0], atol=1e-5)
    [record] = placement_records(caplog)
    message = record.getMessage()
    assert "model m v" in message and model.sha256[:12] in message
    if usable:
        assert model.provider == CUDA and model.fallback_reason is None
        assert record.levelno == logging.INFO and "on CUDA (device 0" in message
    elif gpu_visible():  # a GPU is there and CUDA does not run: that deserves a warning
        assert model.provider == CPU and model.fallback_reason == why
        assert record.levelno == logging.WARNING and why in message
    else:  # this CPU-only machine: CPU is what is expected, said once, quietly
        assert model.provider == CPU and model.fallback_reason == why
        assert record.levelno == logging.INFO
        assert f"on CPU (no CUDA: {why}" in message


def test_cpu_asked_for_is_one_info_line_without_a_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="inference"):
        model = load(matmul_model(tmp_path / "m.onnx", W), providers="cpu")
    [record] = placement_records(caplog)
    assert record.levelno == logging.INFO and "on CPU (sha256" in record.getMessage()
    assert model.fallback_reason is None


def test_auto_on_a_host_showing_a_gpu_warns_when_cuda_cannot_be_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reason = "the CUDA provider library did not load (libcudnn.so.9: not found)"
    monkeypatch.setattr(providers, "cuda_session", lambda *a, **k: (None, reason))
    monkeypatch.setattr("inference.onnx_model.gpu_visible", lambda: True)
    with caplog.at_level(logging.INFO, logger="inference"):
        model = load(matmul_model(tmp_path / "m.onnx", W), providers="auto")
    [record] = placement_records(caplog)
    assert record.levelno == logging.WARNING
    assert "a GPU is present but CUDA is not used" in record.getMessage()
    assert reason in record.getMessage() and model.fallback_reason == reason


def test_a_first_auto_load_prints_nothing_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Neither onnxruntime's C++ logger nor its Python wrapper writes to stdout/stderr, even
    on the first CUDA attempt of the process (the reason is logged once, by us)."""
    monkeypatch.setattr(providers, "_cuda_unusable", {})
    monkeypatch.setattr(providers, "_cuda_libraries_preloaded", False)
    path = matmul_model(tmp_path / "m.onnx", W)
    capfd.readouterr()
    load(path, providers="auto")
    load(path, providers="auto")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_cuda_required_fails_clearly_without_a_gpu(tmp_path: Path) -> None:
    usable, _ = cuda_status()
    path = matmul_model(tmp_path / "m.onnx", W)
    if usable:
        assert load(path, providers="cuda").provider == CUDA
        return
    with pytest.raises(ModelProviderError, match="providers is 'cuda' but CUDA is not usable"):
        load(path, providers="cuda")


class _BrokenCudaSession:
    """A CPU session that claims CUDA but whose IO binding fails, like a broken GPU setup."""

    def __init__(self, session: Any) -> None:
        self._session = session

    def get_providers(self) -> list[str]:
        return [CUDA, CPU]

    def io_binding(self) -> Any:
        raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def test_auto_falls_back_to_cpu_when_the_cuda_warm_up_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import onnxruntime as ort

    def broken(data: bytes, options: Any, device_id: int, *, tf32: bool) -> tuple[Any, str]:
        return _BrokenCudaSession(ort.InferenceSession(data, options, providers=[CPU])), ""

    monkeypatch.setattr(providers, "cuda_session", broken)
    path = matmul_model(tmp_path / "m.onnx", W)
    with caplog.at_level(logging.INFO, logger="inference"):
        model = load(path, providers="auto")
    assert model.provider == CPU
    assert model.fallback_reason is not None
    assert "warm-up on CUDA failed" in model.fallback_reason
    [record] = placement_records(caplog)  # CUDA loaded, so a GPU is there: a warning
    assert record.levelno == logging.WARNING
    assert "no CUDA-capable device" in record.getMessage()
    np.testing.assert_allclose(model.predict(np.ones((1, 3))), [6.0])
    with pytest.raises(ModelProviderError, match="warm-up on CUDA failed"):
        load(path, providers="cuda")


def test_features_beyond_float32_saturate_instead_of_giving_nan(tmp_path: Path) -> None:
    """A window sum of huge amounts can exceed float32: the model sees ±max, not inf."""
    model = load(matmul_model(tmp_path / "m.onnx", W), providers="cpu")
    huge = np.array([[1e300, 0.0, 0.0], [-1e300, 0.0, 0.0], [1.0, 1.0, 1.0]])
    scores = model.predict(huge)
    assert np.isfinite(scores).all()
    assert scores[2] == 6.0
    assert scores[0] == pytest.approx(float(np.finfo(np.float32).max), rel=1e-6)
