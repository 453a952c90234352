"""Prequential (predict-then-learn) evaluation: mergeable window accumulators and a rolling
comparison of two outputs.

A window accumulator holds sums, not samples, so it serializes to a small JSON dict (it is
the value stored in the learner's Faust table) and two accumulators of the same window —
e.g. of two label partitions — merge by addition. ROC AUC is computed from per-class score
histograms (`AUC_BINS` equal-width bins over [0, 1]): exact except for pairs whose scores
fall in the same bin, which count one half, as ties do.

    >>> acc = WindowMetrics.new("classification")
    >>> acc.update(np.array([1, 0, 1]), np.array([0.9, 0.2, 0.4]), threshold=0.5)
    >>> round(acc.result()["accuracy"], 3)
    0.667
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

AUC_BINS = 100
EPS = 1e-15
Task = Literal["classification", "regression"]
OUTPUTS = ("onnx", "river", "final")

# Metrics and whether a higher value is better.
HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "roc_auc": True,
    "log_loss": False,
    "mae": False,
    "rmse": False,
}
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "roc_auc", "log_loss"),
    "regression": ("mae", "rmse"),
}


def window_start(event_time_ms: int, size_ms: int) -> int:
    """Start of the tumbling window holding `event_time_ms` (windows are [start, start+size))."""
    return (event_time_ms // size_ms) * size_ms


@dataclass
class WindowMetrics:
    """Sums for one output over one window; `update` takes whole arrays."""

    task: Task
    n: int = 0
    correct: int = 0
    log_loss_sum: float = 0.0
    pos: list[int] = field(default_factory=list)
    neg: list[int] = field(default_factory=list)
    abs_sum: float = 0.0
    sq_sum: float = 0.0

    @classmethod
    def new(cls, task: Task) -> WindowMetrics:
        if task == "classification":
            return cls(task, pos=[0] * AUC_BINS, neg=[0] * AUC_BINS)
        return cls(task)

    def update(self, y: np.ndarray, p: np.ndarray, *, threshold: float = 0.5) -> None:
        """Add labelled predictions: `p` is P(y=1) for classification, the value for regression."""
        y = np.asarray(y, dtype=np.float64)
        p = np.asarray(p, dtype=np.float64)
        if y.size == 0:
            return
        self.n += int(y.size)
        if self.task == "regression":
            err = p - y
            self.abs_sum += float(np.abs(err).sum())
            self.sq_sum += float((err * err).sum())
            return
        positive = y >= 0.5
        self.correct += int(((p >= threshold) == positive).sum())
        q = np.clip(p, EPS, 1.0 - EPS)
        self.log_loss_sum += float(-(np.where(positive, np.log(q), np.log1p(-q))).sum())
        bins = np.clip((np.clip(p, 0.0, 1.0) * AUC_BINS).astype(np.int64), 0, AUC_BINS - 1)
        pos_counts = np.bincount(bins[positive], minlength=AUC_BINS)
        neg_counts = np.bincount(bins[~positive], minlength=AUC_BINS)
        self.pos = (np.asarray(self.pos, dtype=np.int64) + pos_counts).tolist()
        self.neg = (np.asarray(self.neg, dtype=np.int64) + neg_counts).tolist()

    def merge(self, other: WindowMetrics) -> WindowMetrics:
        """The accumulator of both sample sets (same task)."""
        out = WindowMetrics(
            self.task,
            self.n + other.n,
            self.correct + other.correct,
            self.log_loss_sum + other.log_loss_sum,
            abs_sum=self.abs_sum + other.abs_sum,
            sq_sum=self.sq_sum + other.sq_sum,
        )
        if self.task == "classification":
            out.pos = [a + b for a, b in zip(self.pos, other.pos, strict=True)]
            out.neg = [a + b for a, b in zip(self.neg, other.neg, strict=True)]
        return out

    def result(self) -> dict[str, float | None]:
        """The task's metrics; None where undefined (no samples, or one class only for AUC)."""
        if self.task == "regression":
            if not self.n:
                return {"n": 0, "mae": None, "rmse": None}
            return {
                "n": self.n,
                "mae": self.abs_sum / self.n,
                "rmse": math.sqrt(self.sq_sum / self.n),
            }
        if not self.n:
            return {"n": 0, "accuracy": None, "roc_auc": None, "log_loss": None}
        return {
            "n": self.n,
            "accuracy": self.correct / self.n,
            "roc_auc": binned_auc(self.pos, self.neg),
            "log_loss": self.log_loss_sum / self.n,
        }

    def to_json(self) -> dict[str, Any]:
        if self.task == "regression":
            return {"n": self.n, "abs": self.abs_sum, "sq": self.sq_sum}
        return {
            "n": self.n,
            "correct": self.correct,
            "ll": self.log_loss_sum,
            "pos": self.pos,
            "neg": self.neg,
        }

    @classmethod
    def from_json(cls, task: Task, data: Mapping[str, Any]) -> WindowMetrics:
        if task == "regression":
            return cls(task, int(data["n"]), abs_sum=float(data["abs"]), sq_sum=float(data["sq"]))
        return cls(
            task,
            int(data["n"]),
            int(data["correct"]),
            float(data["ll"]),
            pos=[int(v) for v in data["pos"]],
            neg=[int(v) for v in data["neg"]],
        )


def binned_auc(pos: list[int], neg: list[int]) -> float | None:
    """P(score of a positive > score of a negative), same-bin pairs counting one half."""
    p = np.asarray(pos, dtype=np.float64)
    q = np.asarray(neg, dtype=np.float64)
    n_pos, n_neg = p.sum(), q.sum()
    if n_pos == 0 or n_neg == 0:
        return None
    neg_below = np.concatenate(([0.0], np.cumsum(q)[:-1]))
    wins = float((p * neg_below).sum() + 0.5 * (p * q).sum())
    return float(wins / (n_pos * n_neg))


def exact_metric(metric: str, y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> float:
    """One metric over samples (used for the challenger's rolling window)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if metric == "accuracy":
        return float(((p >= threshold) == (y >= 0.5)).mean())
    if metric == "log_loss":
        q = np.clip(p, EPS, 1.0 - EPS)
        return float(-(np.where(y >= 0.5, np.log(q), np.log1p(-q))).mean())
    if metric == "mae":
        return float(np.abs(p - y).mean())
    if metric == "rmse":
        return float(np.sqrt(((p - y) ** 2).mean()))
    if metric == "roc_auc":
        return _rank_auc(y >= 0.5, p)
    raise ValueError(f"unknown metric {metric!r}; known: {sorted(HIGHER_IS_BETTER)}")


def _rank_auc(positive: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties; 0.5 when one class is missing."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return 0.5
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(p.size, dtype=np.float64)
    sorted_p = p[order]
    i = 0
    while i < p.size:  # average ranks over runs of equal scores
        j = i
        while j + 1 < p.size and sorted_p[j + 1] == sorted_p[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass
class RollingComparison:
    """The challenger rule: the last `window` labels scored by ONNX and by River.

    River is promoted when its metric beats ONNX's by more than `margin`, and demoted when
    ONNX's beats River's by more than `margin`; in between the status stays (hysteresis),
    and nothing is decided before the window is full.
    """

    metric: str
    window: int
    margin: float
    threshold: float = 0.5
    promoted: bool = False
    _y: deque[float] = field(default_factory=deque)
    _onnx: deque[float] = field(default_factory=deque)
    _river: deque[float] = field(default_factory=deque)

    def add(self, y: np.ndarray, onnx: np.ndarray, river: np.ndarray) -> None:
        for d, values in ((self._y, y), (self._onnx, onnx), (self._river, river)):
            d.extend(np.asarray(values, dtype=np.float64).tolist())
            while len(d) > self.window:
                d.popleft()

    def scores(self) -> tuple[float, float] | None:
        """(onnx, river) metric over the window, or None until it is full."""
        if len(self._y) < self.window:
            return None
        y = np.fromiter(self._y, np.float64)
        return (
            exact_metric(self.metric, y, np.fromiter(self._onnx, np.float64), self.threshold),
            exact_metric(self.metric, y, np.fromiter(self._river, np.float64), self.threshold),
        )

    def decide(self) -> bool:
        """Update and return the promoted flag."""
        scores = self.scores()
        if scores is None:
            return self.promoted
        onnx, river = scores
        gain = river - onnx if HIGHER_IS_BETTER[self.metric] else onnx - river
        if not self.promoted and gain > self.margin:
            self.promoted = True
        elif self.promoted and gain < -self.margin:
            self.promoted = False
        return self.promoted
