"""The learner's core without Kafka: predict-then-learn over joined labels (`OnlineLearner`),
and what a restarted learner needs besides the model (`LearnerState`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference.adaptation.modes import AdaptationMode, AdaptationTask
from inference.adaptation.river_build import build_river_model
from inference.adaptation.scoring import final_scores, positive_proba
from inference.adaptation.spec import ONNX_COLUMN, AdaptationSpec
from inference.prequential import RollingComparison


@dataclass
class LearnerState:
    """What a restarted learner needs besides the model (pickled, signed with it)."""

    labels_seen: int = 0
    challenger: RollingComparison | None = None
    drift: Any = None  # inference.drift.DriftMonitor, kept opaque here


@dataclass(frozen=True)
class LearnOutcome:
    river: np.ndarray
    final: np.ndarray
    labels_seen_before: int


@dataclass
class OnlineLearner:
    """Predict-then-learn: each label is first predicted by the model that has learned every
    earlier label (the prequential River output), then learned (`learn_one`, River's stream
    contract: one SGD step per label, not one per batch)."""

    spec: AdaptationSpec
    feature_names: tuple[str, ...]
    threshold: float = 0.5
    model: Any = None
    state: LearnerState = field(default_factory=LearnerState)

    def __post_init__(self) -> None:
        if self.model is None:
            self.model = build_river_model(self.spec.steps, self.spec.task)
        if self.state.challenger is None:
            c = self.spec.challenger
            self.state.challenger = RollingComparison(
                self.spec.challenger_metric, c.window, c.margin, self.threshold
            )

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.feature_names, ONNX_COLUMN)

    @property
    def labels_seen(self) -> int:
        return self.state.labels_seen

    @property
    def promoted(self) -> bool:
        assert self.state.challenger is not None
        return self.state.challenger.promoted

    def learn(self, features: np.ndarray, onnx: np.ndarray, y: np.ndarray) -> LearnOutcome:
        """Learn one batch of joined labels, in order; return the prequential outputs."""
        n = len(y)
        before = self.state.labels_seen
        river = np.empty(n)
        names = self.columns
        classify = self.spec.task is AdaptationTask.CLASSIFICATION
        model = self.model
        rows = np.column_stack([features, onnx]).tolist() if n else []
        targets = np.asarray(y, dtype=np.float64).tolist()
        for i, (row, target) in enumerate(zip(rows, targets, strict=True)):
            x = dict(zip(names, row, strict=True))
            if classify:
                river[i] = positive_proba(model.predict_proba_one(x))
                model.learn_one(x, target >= 0.5)
            else:
                river[i] = float(model.predict_one(x) or 0.0)
                model.learn_one(x, target)
        self.state.labels_seen += n
        promoted = self.promoted
        final = final_scores(
            self.spec, onnx, river, labels_seen=before + np.arange(n), promoted=promoted
        )
        if self.spec.mode is AdaptationMode.CHALLENGER:
            assert self.state.challenger is not None
            self.state.challenger.add(y, onnx, river)
            self.state.challenger.decide()
        return LearnOutcome(river, final, before)

    def meta(self) -> dict[str, Any]:
        """Snapshot metadata the workers act on (signed with the model)."""
        return {
            "labels_seen": self.state.labels_seen,
            "promoted": self.promoted,
            "mode": self.spec.mode.value,
            "task": self.spec.task.value,
            "columns": list(self.columns),
            "created_ms": int(time.time() * 1000),
        }
