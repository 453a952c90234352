"""Builds the demo model of a spec: synthetic payments → reference features → labels → MLP.

No download: the training set is generated here, features come from the pure reference
store (the same numbers Redis serves), labels from the generator's hidden fraud rule.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from features.store import FeatureBatch, open_store
from inference.demo_model import export_onnx, train_mlp
from inference.registry import ModelRegistry
from streams.spec import PipelineSpec
from streams.synthetic import CardPayments, fraud_label

log = logging.getLogger(__name__)


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
