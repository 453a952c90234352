"""`streamfer demo`, stage 3: the retraining loop after a drift.

Payments whose fraud pattern changes after the first fifth; River adapts online from the
delayed labels; then the ONNX model is retrained from what was served — `dataset` (the
logged feature vectors joined with their labels) → train (the demo MLP, time-ordered split)
→ `publish` → `shadow` (the learner measures it beside the active model) → `promote` — and
the offline model's accuracy recovers. Accuracy of ONNX / River / final at four points:
before the drift, right after it, after River adapted, after retrain + promote.
Stage 2 (adaptation alone) is `streams.workloads.demo_adaptation`.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml
from rich.console import Console

from inference.promotion import PromotionPolicy
from inference.registry import ModelRegistry
from inference.rollout import ModelRollout
from streams.learner.process import LearnerProcess
from streams.learner.report import read_table
from streams.learner.shadow_metrics import shadow_comparisons
from streams.ops.dataset import write_dataset
from streams.ops.topics import ensure_topics, read_topic
from streams.spec import Connections, PipelineSpec
from streams.worker.pipeline import Worker
from streams.workloads.demo import for_run
from streams.workloads.demo_adaptation import (
    LABEL_DELAY_ROWS,
    STEP,
    DemoError,
    WorkerThread,
    check_adaptive,
    snapshot_key,
)
from streams.workloads.demo_model import build_demo_model, export_onnx, train_mlp
from streams.workloads.replay import LabelledRow, card_payment_rows, replay
from streams.workloads.synthetic import CardPayments

SEED = 5
OUTPUTS = ("onnx", "river", "final")
POINTS = ("before the drift", "after the drift", "after River adapted", "after retrain + promote")
VALID_FRACTION = 0.2


@dataclass(frozen=True)
class RetrainingSummary:
    """What stage 3 measured: per point, each output's accuracy (NaN: nothing scored)."""

    run: str
    payments: int
    drift_at: int
    accuracy: dict[str, dict[str, float]]  # point → output → accuracy
    ranges: dict[str, tuple[int, int]]  # point → payments [from, to)
    dataset_rows: int
    trained_on: int
    validation: dict[str, float]  # candidate and production accuracy on the newest slice
    shadow: dict[str, Any]  # the learner's shadow comparison and the policy's verdict
    versions: tuple[str, str]  # (before, after) promotion
    seconds: float

    def rows(self) -> list[tuple[str, str]]:
        """The summary as (what, value) lines, as `streamfer demo` prints them."""
        old, new = self.versions
        lines = [
            ("run", f"{self.run} ({self.seconds:.0f} s)"),
            (
                "payments",
                f"{self.payments:,}, the fraud pattern changes at payment {self.drift_at:,}",
            ),
            (
                "retrained",
                f"`streamfer dataset` → {self.dataset_rows:,} labelled rows since the drift; "
                f"MLP trained on the oldest {self.trained_on:,}, validated on the newest: "
                f"accuracy {self.validation['candidate']:.3f} vs "
                f"{self.validation['production']:.3f} in production",
            ),
            ("shadow", str(self.shadow.get("verdict", "-"))),
            ("promoted", f"v{new} (was v{old}); workers swapped between batches"),
            ("accuracy", "ONNX / River / final"),
        ]
        for point in POINTS:
            acc = self.accuracy[point]
            start, end = self.ranges[point]
            cells = " / ".join(_fmt(acc[o]) for o in OUTPUTS)
            lines.append((f"  {point}", f"{cells}   (payments {start:,}–{end - 1:,})"))
        return lines


def _fmt(value: float) -> str:
    return "  -  " if np.isnan(value) else f"{value:.3f}"


def accuracy_by_range(
    predictions: Sequence[dict[str, Any]],
    labels: dict[str, tuple[int, float]],
    ranges: dict[str, tuple[int, int]],
    *,
    threshold: float,
) -> dict[str, dict[str, float]]:
    """Per named range of payments, the accuracy of ONNX-only, River-only and final scores;
    River's over the payments a River snapshot scored (NaN where none did)."""
    rows = [
        (
            *labels[p["event_id"]],
            p["scores"]["onnx"],
            p["scores"].get("river", np.nan),
            p["score"],
        )
        for p in predictions
        if p["event_id"] in labels
    ]
    if not rows:
        raise DemoError("no prediction of the stage's payments was read back")
    table = np.asarray(rows, dtype=np.float64)
    position, y = table[:, 0], table[:, 1] >= 0.5
    out: dict[str, dict[str, float]] = {}
    for point, (start, end) in ranges.items():
        inside = (position >= start) & (position < end)
        out[point] = {}
        for column, name in enumerate(OUTPUTS, start=2):
            scored = inside & ~np.isnan(table[:, column])
            correct = (table[scored, column] >= threshold) == y[scored]
            out[point][name] = float(correct.mean()) if scored.any() else float("nan")
    return out


def retraining_spec(spec: PipelineSpec, registry: Path) -> PipelineSpec:
    """The spec served from a registry (hot swap, shadow) with feature vectors logged."""
    model = spec.model.model_copy(
        update={"path": None, "sha256": None, "registry": registry, "swap_poll": 200}
    )
    topics = spec.topics.model_copy(update={"features": f"{spec.topics.events}.features"})
    return spec.model_copy(update={"model": model, "topics": topics})


def train_candidate(
    table: Any, spec: PipelineSpec, path: Path
) -> tuple[Path, int, dict[str, float]]:
    """The demo MLP on the dataset's oldest rows; accuracy of it and of the served ONNX
    scores on the newest slice (time-ordered, never shuffled)."""
    table = table.sort_by([("event_time_ms", "ascending"), ("event_id", "ascending")])
    columns = list(spec.model.feature_columns)
    X = np.column_stack([table.column(c).to_numpy(zero_copy_only=False) for c in columns])
    y = table.column("label").to_numpy(zero_copy_only=False)
    cut = round(len(y) * (1 - VALID_FRACTION))
    weights = train_mlp(X[:cut], y[:cut], seed=SEED)
    served = table.column("score_onnx").to_numpy(zero_copy_only=False)[cut:]
    threshold = spec.model.threshold
    positive = y[cut:] >= 0.5
    validation = {
        "candidate": float(((weights.predict(X[cut:]) >= threshold) == positive).mean()),
        "production": float(((served >= threshold) == positive).mean()),
    }
    export_onnx(weights, path, feature_names=columns, model_name=spec.model.name)
    return path, cut, validation


def run_retraining_demo(
    spec: PipelineSpec, connections: Connections, n_events: int, *, log: Console
) -> RetrainingSummary:
    """Stage 3: drift, River adapts, then dataset → train → publish → shadow → promote."""
    part = n_events // 5
    check_adaptive(spec, spec.name, 2 * part)
    if part < STEP:
        raise DemoError(f"--retrain-events {n_events}: give at least {5 * STEP:,}, or 0")
    started = time.perf_counter()
    run_id = uuid.uuid4().hex[:6]
    spec = for_run(spec, f"r{run_id}")
    if spec.model.path is not None and not Path(spec.model.path).exists():
        build_demo_model(spec)
    first_model = spec.model.path
    rows = card_payment_rows(
        spec, CardPayments(n_events, seed=SEED, drift_at=part, run_id=f"t{run_id}")
    )
    labels = {str(r.event[spec.event.id]): (i, r.label) for i, r in enumerate(rows)}
    ranges = {
        POINTS[0]: (0, part),
        POINTS[1]: (part, 2 * part),
        POINTS[2]: (2 * part, 3 * part),
        POINTS[3]: (4 * part, n_events),
    }
    with (
        snapshot_key(connections) as (connections, _random_key),
        tempfile.TemporaryDirectory(prefix="streamfer-retrain-") as tmp,
    ):
        workdir = Path(tmp)
        rollout = ModelRollout(ModelRegistry(workdir / "models", key=connections.model_secret))
        spec = retraining_spec(spec, workdir / "models")
        names = spec.features.names
        assert first_model is not None
        first = rollout.publish(spec.model.name, first_model, spec.model, names)
        rollout.promote(spec.model.name, first.version)
        ensure_topics(connections, spec)
        spec_file = workdir / "spec.yaml"
        spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True)))
        log.print("stage 3: starting the learner and a worker serving the registry's v1…")
        learner = LearnerProcess(spec_file, connections, workdir, args=("--idle-exit", "120"))
        worker_thread: WorkerThread | None = None
        try:
            learner.wait(lambda s: True, 120, "the learner's web view")
            running = worker_thread = WorkerThread(Worker(spec, connections, worker_id=0))
            worker = running.worker

            def stream(chunk: Sequence[LabelledRow], until: int) -> None:
                def in_step(_events: int, published: int) -> None:
                    learner.wait(
                        lambda s: int(s["labels_seen"]) + int(s["expired"]) >= published,
                        120,
                        f"the learner to learn {published:,} labels",
                    )
                    running.check()

                replay(spec, connections, chunk, label_delay=str(LABEL_DELAY_ROWS), step=in_step)
                learner.wait(
                    lambda s: (
                        int(s["labels_seen"]) + int(s["expired"]) >= until
                        and int(s["pending"]) == 0
                    ),
                    120,
                    f"the learner to take {until:,} labels",
                )

            log.print(f"streaming {3 * part:,} payments; the fraud pattern changes at {part:,}…")
            stream(rows[: 3 * part], 3 * part)
            _wait(lambda: worker.stats.predictions >= 3 * part, 60, "the worker's predictions")
            log.print("`streamfer dataset`: feature vectors as scored ⋈ labels, since the drift…")
            drift_ms = int(rows[part].event[spec.event.time.field])
            built = write_dataset(spec, connections, workdir / "train.parquet", since_ms=drift_ms)
            import pyarrow.parquet as pq

            table = pq.read_table(built.path)
            candidate, trained_on, validation = train_candidate(table, spec, workdir / "v2.onnx")
            new = rollout.publish(spec.model.name, candidate, spec.model, names, metrics=validation)
            log.print(f"published v{new.version}; shadow scoring it beside v{first.version}…")
            rollout.shadow(spec.model.name, new.version)
            _wait(lambda: worker.shadow is not None, 60, "the shadow model to load")
            stream(rows[3 * part : 4 * part], 4 * part)
            shadow = _shadow_verdict(connections, spec, new.version, part)
            shadow["learner_gauges"] = _exports_shadow(learner.port, new.version)
            log.print(f"shadow: {shadow['verdict']}; promoting v{new.version}…")
            rollout.promote(spec.model.name, new.version)
            _wait(lambda: worker.model.version == new.version, 60, "the promoted version")
            stream(rows[4 * part :], n_events)
        finally:
            if worker_thread is not None:
                worker_thread.stop()
            learner.stop()
        running.join()
    records = read_topic(connections, spec.topics.predictions, expected=n_events, timeout_s=60)
    predictions = [orjson.loads(r.value()) for r in records]
    return RetrainingSummary(
        run=run_id,
        payments=n_events,
        drift_at=part,
        accuracy=accuracy_by_range(predictions, labels, ranges, threshold=spec.model.threshold),
        ranges=ranges,
        dataset_rows=built.rows,
        trained_on=trained_on,
        validation=validation,
        shadow=shadow,
        versions=(first.version, new.version),
        seconds=time.perf_counter() - started,
    )


def _shadow_verdict(
    connections: Connections, spec: PipelineSpec, version: str, labels: int
) -> dict[str, Any]:
    """The learner's metrics of the shadow beside the active model, and the policy's say."""
    policy = PromotionPolicy("accuracy", margin=0.01, min_labels=labels // 2)
    comparisons = shadow_comparisons(read_table(connections, spec), spec.adaptation.task.value)
    found = comparisons.get(version)
    if found is None:
        return {"verdict": "the learner has no shadow metrics yet; promoted by the operator"}
    go, why = policy.decide(found.labels, found.shadow, found.active)
    return {
        "labels": found.labels,
        "shadow": found.shadow,
        "active": found.active,
        "promote": go,
        "verdict": why if go else f"{why}; promoted by the operator anyway",
    }


def _exports_shadow(port: int, version: str) -> bool:
    """Whether the learner's /metrics carries the shadow's prequential gauges (the dashboard's
    prequential chart plots them beside the active model's)."""
    from urllib.request import urlopen

    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return f'output="shadow:{version}"' in response.read().decode()


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.05)
