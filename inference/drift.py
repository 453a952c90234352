"""Drift detection: one River detector per watched stream, alerts as plain JSON dicts.

Watched streams are each output's error (0/1 misclassification for classifiers, absolute
error for regressors) — a rising error says the model went stale — and chosen feature
columns — a moving input says the world changed, before labels can tell. The detector is
declared like a model component (`{drift.ADWIN: {delta: 0.002}}`), resolved inside `river`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference.adaptation.river_build import build_river_component

_STATS = ("estimation", "variance", "width", "n_detections", "total")


@dataclass(frozen=True)
class DriftAlert:
    """One detection: which detector fired on which stream, when, with what statistics."""

    detector: str
    kind: str  # "output" (its error stream) or "feature" (its values)
    name: str
    event_time_ms: int
    labels_seen: int
    statistics: dict[str, float]
    detected_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "drift",
            "detector": self.detector,
            "kind": self.kind,
            "name": self.name,
            "event_time_ms": self.event_time_ms,
            "detected_at_ms": self.detected_at_ms,
            "labels_seen": self.labels_seen,
            "statistics": self.statistics,
        }


class DriftMonitor:
    """Detectors for output error streams and feature streams, fed a batch at a time."""

    def __init__(
        self,
        detector: Mapping[str, Any],
        *,
        outputs: Sequence[str] = ("onnx", "river", "final"),
        features: Sequence[str] = (),
        task: str = "classification",
        threshold: float = 0.5,
    ) -> None:
        prototype = build_river_component(dict(detector), "adaptation.drift.detector", kind="drift")
        self.detector_name = type(prototype).__name__
        self.task = task
        self.threshold = threshold
        self.streams: dict[tuple[str, str], Any] = {
            ("output", name): copy.deepcopy(prototype) for name in outputs
        }
        self.streams.update({("feature", name): copy.deepcopy(prototype) for name in features})
        self.values_seen: dict[tuple[str, str], int] = dict.fromkeys(self.streams, 0)

    def errors(self, y: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The error stream of one output."""
        y = np.asarray(y, dtype=np.float64)
        scores = np.asarray(scores, dtype=np.float64)
        if self.task == "classification":
            wrong: np.ndarray = (scores >= self.threshold) != (y >= 0.5)
            return wrong.astype(np.float64)
        absolute: np.ndarray = np.abs(scores - y)
        return absolute

    def update(
        self,
        y: np.ndarray,
        outputs: Mapping[str, np.ndarray],
        features: Mapping[str, np.ndarray],
        event_time_ms: np.ndarray,
        *,
        labels_seen_before: int = 0,
    ) -> list[DriftAlert]:
        """Feed one batch (rows in label order); return the detections it caused."""
        alerts: list[DriftAlert] = []
        times = np.asarray(event_time_ms, dtype=np.int64).tolist()
        for (kind, name), det in self.streams.items():
            if kind == "output":
                if name not in outputs:
                    continue
                values = self.errors(y, outputs[name]).tolist()
            else:
                if name not in features:
                    continue
                values = np.asarray(features[name], dtype=np.float64).tolist()
            key = (kind, name)
            for i, value in enumerate(values):
                det.update(value)
                if det.drift_detected:
                    alerts.append(
                        DriftAlert(
                            self.detector_name,
                            kind,
                            name,
                            int(times[i]),
                            labels_seen_before + i + 1,
                            _statistics(det, self.values_seen[key] + i + 1),
                        )
                    )
            self.values_seen[key] += len(values)
        return alerts


def _statistics(detector: Any, values_seen: int) -> dict[str, float]:
    stats: dict[str, float] = {"values_seen": float(values_seen)}
    for name in _STATS:
        value = getattr(detector, name, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            stats[name] = float(value)
    return stats
