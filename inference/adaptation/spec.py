"""The `adaptation:` section of a pipeline spec: what the learner trains and how workers
use it. Validated at load: every River name it declares is built once, so a typo fails
when the spec is read, not when the learner starts."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.duration import DurationMs
from inference.adaptation.modes import AdaptationMode, AdaptationTask
from inference.adaptation.river_build import build_river_component, build_river_model
from inference.prequential import TASK_METRICS

# The River model sees the features as the worker scored them plus the ONNX score, so it
# can lean on the offline model while it is good and learn past it once the world changes.
ONNX_COLUMN = "onnx_score"


class Serving(StrEnum):
    """How workers keep their River model current (docs/adaptation.md: which to choose).

    replica: every worker applies the learner's examples log to its own copy (fresh within
    milliseconds; each worker pays the learn cost). snapshot: workers load the learner's
    signed snapshots (each `snapshot.every_labels` / `snapshot.every`; for models whose
    learning is too costly to repeat in every worker)."""

    REPLICA = "replica"
    SNAPSHOT = "snapshot"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChallengerSpec(_Frozen):
    """Promotion rule of `challenger` mode, over the last `window` labels."""

    metric: Literal["accuracy", "roc_auc", "log_loss", "mae", "rmse"] | None = Field(
        default=None, description="default: accuracy (classification), mae (regression)"
    )
    window: int = Field(default=500, ge=10, description="labels in the rolling window")
    margin: float = Field(default=0.01, ge=0.0, description="how much better River must be")


class SnapshotSpec(_Frozen):
    every_labels: int = Field(default=200, ge=1, description="publish after this many labels")
    every: DurationMs = Field(default=5_000, gt=0, description="or after this long")


def _adwin() -> dict[str, dict[str, Any]]:
    return {"drift.ADWIN": {}}


class DriftSpec(_Frozen):
    detector: dict[str, dict[str, Any]] = Field(
        default_factory=_adwin,
        description="one River drift detector, e.g. {drift.ADWIN: {delta: 0.002}}",
    )
    outputs: tuple[Literal["onnx", "river", "final"], ...] = ("onnx", "river", "final")
    features: tuple[str, ...] = Field(default=(), description="feature columns to watch")


class LabelRetrySpec(_Frozen):
    """Labels that arrive before their prediction is logged are retried, then expire."""

    attempts: int = Field(default=6, ge=0)
    backoff: DurationMs = Field(default=500, gt=0, description="first wait; doubles per try")


class LearnBatching(_Frozen):
    max_size: int = Field(default=500, ge=1, le=100_000)
    max_wait: DurationMs = Field(default=500, gt=0)


class AdaptationSpec(_Frozen):
    """The `adaptation:` section: what the learner trains and how workers use it."""

    mode: AdaptationMode = AdaptationMode.OFF
    task: AdaptationTask = AdaptationTask.CLASSIFICATION
    model: tuple[str | dict[str, Any], ...] | None = Field(
        default=None,
        description="River pipeline steps, e.g. [{preprocessing.StandardScaler: {}}, "
        "{linear_model.LogisticRegression: {}}]; default: scaler + logistic/linear regression",
    )
    min_labels: int = Field(default=500, ge=0, description="stack: labels before River is final")
    serving: Serving = Field(
        default=Serving.SNAPSHOT,
        description="replica: workers tail topics.examples; snapshot: they load snapshots",
    )
    challenger: ChallengerSpec = ChallengerSpec()
    snapshot: SnapshotSpec = SnapshotSpec()
    drift: DriftSpec = DriftSpec()
    label_retry: LabelRetrySpec = LabelRetrySpec()
    batch: LearnBatching = LearnBatching()
    metrics_window: DurationMs = Field(
        default=3_600_000, gt=0, description="tumbling window of the prequential metrics"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        metric = self.challenger.metric
        if metric is not None and metric not in TASK_METRICS[self.task.value]:
            raise ValueError(
                f"challenger.metric '{metric}' does not fit task '{self.task.value}': "
                f"use one of {list(TASK_METRICS[self.task.value])}"
            )
        if self.model is not None or self.mode is not AdaptationMode.OFF:
            build_river_model(self.steps, self.task)  # unknown names fail at load, not later
            build_river_component(self.drift.detector, "drift.detector", kind="drift")
        return self

    @property
    def steps(self) -> tuple[str | dict[str, Any], ...]:
        if self.model is not None:
            return self.model
        last = (
            "linear_model.LogisticRegression"
            if self.task is AdaptationTask.CLASSIFICATION
            else "linear_model.LinearRegression"
        )
        return ("preprocessing.StandardScaler", last)

    @property
    def challenger_metric(self) -> str:
        return self.challenger.metric or TASK_METRICS[self.task.value][0]
