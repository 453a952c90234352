"""Batch scoring with a River model, and the rule that picks the served (final) output."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from inference.adaptation.modes import AdaptationMode, AdaptationTask
from inference.adaptation.spec import AdaptationSpec


def supports_many(model: Any) -> bool:
    """Whether River's DataFrame batch methods cover every step of `model`."""
    from river import base, compose

    steps = list(model.steps.values()) if isinstance(model, compose.Pipeline) else [model]
    *front, last = steps
    batch_last = base.MiniBatchClassifier | base.MiniBatchRegressor
    return isinstance(last, batch_last) and all(
        isinstance(s, base.MiniBatchTransformer) for s in front
    )


def river_predict(
    model: Any,
    task: AdaptationTask,
    columns: Sequence[str],
    matrix: np.ndarray,
    *,
    batched: bool | None = None,
) -> np.ndarray:
    """(n,) River outputs for a (n, k) matrix: P(y=1) for classifiers, values for regressors.

    With batch methods the DataFrame is built straight from the matrix (no per-event Python);
    otherwise one `*_one` call per row.
    """
    n = matrix.shape[0]
    if n == 0:
        return np.empty(0)
    if batched is None:
        batched = supports_many(model)
    if batched:
        import pandas as pd

        frame = pd.DataFrame(matrix, columns=list(columns), copy=False)
        if task is AdaptationTask.CLASSIFICATION:
            proba = model.predict_proba_many(frame)
            for positive in (True, 1, "1", "True"):
                if positive in proba.columns:
                    return np.asarray(proba[positive], dtype=np.float64)
            return np.zeros(n)
        return np.asarray(model.predict_many(frame), dtype=np.float64)
    names = list(columns)
    rows = matrix.tolist()
    if task is AdaptationTask.CLASSIFICATION:
        return np.fromiter(
            (
                positive_proba(model.predict_proba_one(dict(zip(names, r, strict=True))))
                for r in rows
            ),
            np.float64,
            n,
        )
    return np.fromiter(
        (float(model.predict_one(dict(zip(names, r, strict=True))) or 0.0) for r in rows),
        np.float64,
        n,
    )


def positive_proba(proba: Mapping[Any, float]) -> float:
    """P(positive) from River's class → probability dict (labels learned as bools)."""
    for positive in (True, 1):
        if positive in proba:
            return float(proba[positive])
    return 0.0


def final_scores(
    spec: AdaptationSpec,
    onnx: np.ndarray,
    river: np.ndarray | None,
    *,
    labels_seen: int | np.ndarray,
    promoted: bool,
) -> np.ndarray:
    """The served output: ONNX, or River once trusted (stack: enough labels; challenger:
    promoted). `labels_seen` may be per row, for the learner's replay of the rule."""
    if river is None or spec.mode is AdaptationMode.OFF:
        return onnx
    if spec.mode is AdaptationMode.STACK:
        return np.where(np.asarray(labels_seen) >= spec.min_labels, river, onnx)
    return river if promoted else onnx
