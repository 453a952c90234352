"""The demo model: a k→h→1 MLP (ReLU, sigmoid) trained with numpy + Adam, exported to ONNX,
on a training set of synthetic payments.

No ML framework and no download: `training_set` generates payments, computes their
features with the pure reference store (the same numbers Redis serves) and labels them with
the generator's hidden fraud rule; `train_mlp` fits the weights (standardisation included),
`MlpWeights.predict` is the numpy reference forward pass, and `export_onnx` writes the same
computation as an ONNX graph (opset 17, input `features` (batch, k) float32, output `score`
(batch,)) with the feature names in its metadata. `build_demo_model` does all of it for a
spec; `pin_model` then pins the file it wrote (`model.sha256`), so the demo serves exactly
that file and says nothing about an unpinned model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from features.backends import open_store
from features.store import FeatureBatch
from inference.model_ref import file_sha256
from inference.registry import ModelRegistry
from streams.spec import PipelineSpec
from streams.workloads.synthetic import CardPayments, fraud_label

log = logging.getLogger(__name__)

OPSET = 17
IR_VERSION = 8  # the lowest IR that carries opset 17: readable by any recent onnxruntime
INPUT_NAME = "features"
OUTPUT_NAME = "score"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))


@dataclass(frozen=True)
class MlpWeights:
    """Trained parameters; inputs are standardised as (x - mean) / scale first."""

    mean: np.ndarray  # (k,)
    scale: np.ndarray  # (k,)
    w1: np.ndarray  # (k, h)
    b1: np.ndarray  # (h,)
    w2: np.ndarray  # (h,)
    b2: float

    @property
    def n_features(self) -> int:
        return int(self.w1.shape[0])

    @property
    def hidden(self) -> int:
        return int(self.w1.shape[1])

    def logits(self, X: np.ndarray) -> np.ndarray:
        """(n,) pre-sigmoid outputs, in float64."""
        z = (np.asarray(X, dtype=np.float64) - self.mean) / self.scale
        return np.maximum(z @ self.w1 + self.b1, 0.0) @ self.w2 + self.b2

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(n,) probabilities: the reference the ONNX export must reproduce."""
        return _sigmoid(self.logits(X))

    def log_loss(self, X: np.ndarray, y: np.ndarray) -> float:
        """Mean binary cross-entropy on (X, y)."""
        logit = self.logits(X)
        y = np.asarray(y, dtype=np.float64)
        return float(np.mean(np.logaddexp(0.0, logit) - y * logit))


def _check_xy(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X must be a non-empty (n, k) matrix, got shape {X.shape}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} labels")
    if not np.isfinite(X).all():
        raise ValueError("X has NaN or infinite values: impute or drop them before training")
    if not ((y >= 0.0) & (y <= 1.0)).all():
        raise ValueError("y must hold labels in [0, 1] (0 = legit, 1 = fraud)")
    return X, y


def train_mlp(
    X: np.ndarray,
    y: np.ndarray,
    *,
    hidden: int = 16,
    epochs: int = 200,
    seed: int = 0,
    lr: float = 0.01,
    batch_size: int | None = None,
    l2: float = 0.0,
) -> MlpWeights:
    """Fit a k→hidden→1 MLP to binary labels by Adam on mean cross-entropy.

    Full-batch by default (`batch_size=None`), else shuffled minibatches; deterministic
    for a given `seed`. Constant columns get scale 1 so they standardise to 0.
    """
    X, y = _check_xy(X, y)
    if hidden < 1 or epochs < 0 or lr <= 0 or (batch_size is not None and batch_size < 1):
        raise ValueError("need hidden >= 1, epochs >= 0, lr > 0 and batch_size >= 1 or None")
    rng = np.random.default_rng(seed)
    n, k = X.shape
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale == 0.0] = 1.0
    Z = (X - mean) / scale

    prior = float(np.clip(y.mean(), 1e-4, 1.0 - 1e-4))
    params = [
        rng.normal(0.0, np.sqrt(2.0 / k), size=(k, hidden)),  # w1 (He init for ReLU)
        np.zeros(hidden),  # b1
        rng.normal(0.0, np.sqrt(1.0 / hidden), size=hidden),  # w2
        np.array([np.log(prior / (1.0 - prior))]),  # b2 starts at the base-rate logit
    ]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    step = 0
    size = n if batch_size is None else min(batch_size, n)

    for _ in range(epochs):
        order = np.arange(n) if batch_size is None else rng.permutation(n)
        for start in range(0, n, size):
            rows = order[start : start + size]
            zb, yb = Z[rows], y[rows]
            w1, b1, w2, b2 = params
            pre = zb @ w1 + b1
            act = np.maximum(pre, 0.0)
            d = (_sigmoid(act @ w2 + b2[0]) - yb) / len(rows)
            d_pre = np.outer(d, w2) * (pre > 0.0)
            grads = [
                zb.T @ d_pre + l2 * w1,
                d_pre.sum(axis=0),
                act.T @ d + l2 * w2,
                d.sum(keepdims=True),
            ]
            step += 1
            for i, g in enumerate(grads):
                m1[i] = beta1 * m1[i] + (1.0 - beta1) * g
                m2[i] = beta2 * m2[i] + (1.0 - beta2) * g * g
                m_hat = m1[i] / (1.0 - beta1**step)
                v_hat = m2[i] / (1.0 - beta2**step)
                params[i] = params[i] - lr * m_hat / (np.sqrt(v_hat) + eps)

    w1, b1, w2, b2 = params
    return MlpWeights(mean=mean, scale=scale, w1=w1, b1=b1, w2=w2, b2=float(b2[0]))


def _const(name: str, value: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name)


def export_onnx(
    weights: MlpWeights,
    path: Path | str,
    *,
    feature_names: Sequence[str],
    model_name: str,
    doc: str = "",
) -> Path:
    """Write `weights` as an ONNX model computing `weights.predict` in float32.

    The graph keeps standardisation explicit (Sub, Div) so it reads like the numpy code;
    `feature_names` (the column order of the `features` input) go into metadata_props.
    """
    k, h = weights.n_features, weights.hidden
    names = list(feature_names)
    if len(names) != k or len(set(names)) != k:
        raise ValueError(
            f"feature_names must be {k} distinct names (the model's input width), "
            f"got {len(names)}: {names}"
        )
    initializers = [
        _const("mean", weights.mean),
        _const("scale", weights.scale),
        _const("w1", weights.w1),
        _const("b1", weights.b1),
        _const("w2", weights.w2.reshape(h, 1)),
        _const("b2", np.array([weights.b2])),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "squeeze_axes"),
    ]
    nodes = [
        helper.make_node("Sub", [INPUT_NAME, "mean"], ["centered"]),
        helper.make_node("Div", ["centered", "scale"], ["standardized"]),
        helper.make_node("MatMul", ["standardized", "w1"], ["hidden_mm"]),
        helper.make_node("Add", ["hidden_mm", "b1"], ["hidden_pre"]),
        helper.make_node("Relu", ["hidden_pre"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "w2"], ["logit_mm"]),
        helper.make_node("Add", ["logit_mm", "b2"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["probability"]),
        helper.make_node("Squeeze", ["probability", "squeeze_axes"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes,
        model_name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", k])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch"])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="streamfer",
        doc_string=doc,
    )
    helper.set_model_props(
        model,
        {
            "model_name": model_name,
            "feature_names": json.dumps(names),
            "architecture": f"mlp {k}-{h}-1 relu sigmoid",
        },
    )
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


# -- the demo's training set and model -------------------------------------------------
def training_set(
    spec: PipelineSpec, n_events: int, *, seed: int = 11, drifted: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(X, y): the model's input columns for `n_events` synthetic events, and their labels."""
    store = open_store(spec.features, "memory://", f"train-{seed}")
    names = list(spec.features.names)
    columns = [names.index(c) for c in spec.model.feature_columns]
    mean_col = names.index("card_amount_mean_1h") if "card_amount_mean_1h" in names else None
    count_col = names.index("card_count_1h") if "card_count_1h" in names else None
    xs: list[np.ndarray] = []
    ys: list[int] = []
    batch: list[dict[str, object]] = []
    events = CardPayments(n_events, seed=seed, end_ms=1_700_000_000_000).events()
    for event in events:
        batch.append(event)
        if len(batch) == 1000:
            _featurize(store, batch, columns, mean_col, count_col, drifted, xs, ys)
            batch = []
    if batch:
        _featurize(store, batch, columns, mean_col, count_col, drifted, xs, ys)
    store.close()
    return np.vstack(xs), np.asarray(ys, dtype=np.float64)


def _featurize(
    store: object,
    batch: list[dict[str, object]],
    columns: list[int],
    mean_col: int | None,
    count_col: int | None,
    drifted: bool,
    xs: list[np.ndarray],
    ys: list[int],
) -> None:
    times = [int(e["event_time"]) for e in batch]  # type: ignore[call-overload]
    result = store.update_and_read(FeatureBatch(batch, times, None))  # type: ignore[attr-defined]
    values = result.values
    xs.append(values[:, columns])
    for i, event in enumerate(batch):
        mean = float(values[i, mean_col]) if mean_col is not None else 0.0
        count = float(values[i, count_col]) if count_col is not None else 0.0
        ys.append(fraud_label(event, mean, count, drifted=drifted))


def build_demo_model(spec: PipelineSpec, *, n_events: int = 20_000, seed: int = 11) -> Path:
    """Train and write the spec's model file (or register a new version in its registry)."""
    X, y = training_set(spec, n_events, seed=seed)
    log.info("training on %d events, %.1f%% fraud", len(y), 100 * y.mean())
    weights = train_mlp(X, y, hidden=16, epochs=20, seed=seed, lr=0.01, batch_size=256)
    doc = f"streamfer demo model for spec '{spec.name}', trained on {n_events} synthetic events"
    columns = list(spec.model.feature_columns)
    if spec.model.path is not None:
        path = Path(spec.model.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return export_onnx(
            weights, path, feature_names=columns, model_name=spec.model.name, doc=doc
        )
    assert spec.model.registry is not None
    tmp = Path(spec.model.registry) / ".incoming.onnx"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(weights, tmp, feature_names=columns, model_name=spec.model.name, doc=doc)
    ref = ModelRegistry(Path(spec.model.registry)).register(spec.model.name, tmp, activate=True)
    tmp.unlink()
    return ref.path


def pin_model(spec: PipelineSpec) -> PipelineSpec:
    """`spec` with `model.sha256` set to the digest of its model file (a plain `path`; a
    registry spec is returned as it is: its manifests vouch for its files)."""
    if spec.model.path is None or spec.model.sha256 is not None:
        return spec
    model = spec.model.model_copy(update={"sha256": file_sha256(spec.model.path)})
    return spec.model_copy(update={"model": model})
