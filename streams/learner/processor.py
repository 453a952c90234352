"""The learner's pure core: a batch of labels → join with the prediction log → River
predict-then-learn → prequential metrics → drift, with the offsets bookkeeping.

No I/O of its own: the prediction log, the metrics table, the learner and the clock are
passed in, so a unit test drives it with dicts and a fake clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from inference.adaptation import AdaptationSpec, LearnedExamples, OnlineLearner
from inference.drift import DriftAlert, DriftMonitor
from inference.prequential import OUTPUTS, WindowMetrics, window_start
from streams.learner.labels import LabelRecord
from streams.learner.offsets import OffsetRanges, PartitionProgress, offsets_meta
from streams.learner.tables import MetricsTable, window_key
from streams.spec import PipelineSpec
from streams.worker.prediction_log import LoggedPrediction
from streams.worker.scoring import SHADOW_PREFIX


class PredictionReader(Protocol):
    """What the processor needs of the prediction log: the entries of these event ids."""

    def read(self, event_ids: Sequence[str]) -> list[LoggedPrediction | None]: ...


@dataclass
class BatchResult:
    """What one batch (or one round of retries) did: counts, drift alerts, windows touched."""

    learned: int = 0
    retried: int = 0
    expired: int = 0
    skipped: int = 0
    bad: int = 0
    alerts: list[DriftAlert] = field(default_factory=list)
    windows: set[int] = field(default_factory=set)
    examples: list[LearnedExamples] = field(default_factory=list)  # for the examples log


def produced_ms(found: Sequence[tuple[LabelRecord, Any]], learned_ms: int) -> np.ndarray:
    """When each label was produced (the freshness metric starts there): the labels topic's
    record timestamp when the consumer kept it (`produced_ms`), else the time it was learned
    (a lower bound on freshness: the learner's own waits are then not counted)."""
    return np.array([r.produced_ms or learned_ms for r, _e in found], dtype=np.int64)


class LabelProcessor:
    """Join → learn → metrics → drift for batches of labels; offsets bookkeeping included.

    Its only reads are through `prediction_log`; unit tests pass a dict and a dict table.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        prediction_log: PredictionReader,
        table: MetricsTable,
        learner: OnlineLearner,
        progress: dict[int, PartitionProgress],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.adaptation: AdaptationSpec = spec.adaptation
        self.log = prediction_log
        self.table = table
        self.learner = learner
        self.progress = progress
        self.clock = clock
        self.retry: list[LabelRecord] = []
        # Labels a restarted learner adopted from the examples log (learned before the
        # crash, after its snapshot): skipped like learned ones, never learned twice.
        self.adopted: dict[int, set[int]] = {}
        self.names = tuple(spec.features.names)
        self.task = self.adaptation.task.value
        self.threshold = spec.model.threshold
        drift = learner.state.drift
        if drift is None:
            d = self.adaptation.drift
            drift = DriftMonitor(
                d.detector,
                outputs=d.outputs,
                features=d.features,
                task=self.task,
                threshold=self.threshold,
            )
            learner.state.drift = drift
        self.drift: DriftMonitor = drift

    def consume(self, records: Sequence[LabelRecord | tuple[int, int]]) -> BatchResult:
        """A batch from the topic: labels, or (partition, offset) of malformed ones."""
        result = BatchResult()
        fresh: list[LabelRecord] = []
        for r in records:
            partition, offset = (r.partition, r.offset) if isinstance(r, LabelRecord) else r
            progress = self.progress.setdefault(partition, PartitionProgress())
            if progress.already_learned(offset):
                result.skipped += 1
                continue
            if offset in self.adopted.get(partition, ()):
                progress.next = max(progress.next, offset + 1)
                progress.pending.discard(offset)
                result.skipped += 1
                continue
            progress.next = max(progress.next, offset + 1)
            if isinstance(r, LabelRecord):
                fresh.append(r)
            else:
                result.bad += 1
                self._count(partition, offset, "b")
        self._join_and_learn(fresh, result)
        return result

    def due_retries(self) -> BatchResult:
        """Labels whose wait is over get another join attempt."""
        now = self.clock()
        due = [r for r in self.retry if r.due <= now]
        if not due:
            return BatchResult()
        self.retry = [r for r in self.retry if r.due > now]
        result = BatchResult()
        self._join_and_learn(due, result)
        return result

    def _join_and_learn(self, records: list[LabelRecord], result: BatchResult) -> None:
        if not records:
            return
        logged = self.log.read([r.event_id for r in records])
        found: list[tuple[LabelRecord, LoggedPrediction]] = []
        retry = self.adaptation.label_retry
        for record, entry in zip(records, logged, strict=True):
            progress = self.progress[record.partition]
            if entry is not None:
                found.append((record, entry))
                progress.pending.discard(record.offset)
            elif record.attempts < retry.attempts:
                record.due = self.clock() + retry.backoff / 1000 * 2**record.attempts
                record.attempts += 1
                self.retry.append(record)
                progress.pending.add(record.offset)
                result.retried += 1
            else:
                progress.pending.discard(record.offset)
                self._count(record.partition, record.offset, "x")
                result.expired += 1
        if found:
            self._learn(found, result)

    def _learn(
        self, found: list[tuple[LabelRecord, LoggedPrediction]], result: BatchResult
    ) -> None:
        n = len(found)
        names = self.names
        features = np.array(
            [[e.features.get(c, 0.0) for c in names] for _r, e in found], dtype=np.float64
        ).reshape(n, len(names))
        onnx = np.array([float(e.scores.get("onnx", 0.0)) for _r, e in found])
        y = np.array([r.label for r, _e in found])
        times = np.array([int(e.event_time_ms) for _r, e in found], dtype=np.int64)
        outcome = self.learner.learn(features, onnx, y)
        result.examples.append(
            LearnedExamples(
                outcome.labels_seen_before,
                np.column_stack([features, onnx]),
                y,
                times,
                produced_ms(found, int(time.time() * 1000)),
                tuple((r.partition, r.offset) for r, _e in found),
                self.learner.promoted,
            )
        )
        logged_final = np.array([e.scores.get("final", np.nan) for _r, e in found], dtype=float)
        final = np.where(np.isnan(logged_final), outcome.final, logged_final)
        outputs = {"onnx": onnx, "river": outcome.river, "final": final}
        self._update_windows(found, y, outputs, times, result, shadow_scores(found))
        watched = {c: features[:, names.index(c)] for c in self.drift_features if c in names}
        result.alerts.extend(
            self.drift.update(
                y, outputs, watched, times, labels_seen_before=outcome.labels_seen_before
            )
        )
        result.learned += n

    @property
    def drift_features(self) -> tuple[str, ...]:
        return self.adaptation.drift.features

    def _update_windows(
        self,
        found: list[tuple[LabelRecord, LoggedPrediction]],
        y: np.ndarray,
        outputs: Mapping[str, np.ndarray],
        times: np.ndarray,
        result: BatchResult,
        shadows: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        size = self.adaptation.metrics_window
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (record, _entry) in enumerate(found):
            groups.setdefault((record.partition, window_start(int(times[i]), size)), []).append(i)
        for (partition, start), rows in groups.items():
            key = window_key(partition, start)
            value = self.table.get(key)
            covered = OffsetRanges(value["cov"] if value else ())
            fresh = [i for i in rows if found[i][0].offset not in covered]
            if not fresh:
                continue
            metrics = {
                name: WindowMetrics.from_json(self.task, value["outputs"][name])  # type: ignore[arg-type]
                if value
                else WindowMetrics.new(self.task)  # type: ignore[arg-type]
                for name in OUTPUTS
            }
            idx = np.asarray(fresh)
            for name in OUTPUTS:
                metrics[name].update(y[idx], outputs[name][idx], threshold=self.threshold)
            # Shadow candidates (`shadow:<version>`) over the labels of the events they scored,
            # and the active ONNX model over the same events (`shadow:<version>|active`), so
            # the two are compared on one sample.
            kept = value["outputs"] if value else {}
            for name, scores in (shadows or {}).items():
                shadowed = idx[np.isfinite(scores[idx])]
                if not len(shadowed):
                    continue
                for output, column in ((name, scores), (f"{name}|active", outputs["onnx"])):
                    m = (
                        WindowMetrics.from_json(self.task, kept[output])  # type: ignore[arg-type]
                        if output in kept
                        else WindowMetrics.new(self.task)  # type: ignore[arg-type]
                    )
                    m.update(y[shadowed], column[shadowed], threshold=self.threshold)
                    metrics[output] = m
            for name in kept:
                if name.startswith(SHADOW_PREFIX) and name not in metrics:
                    metrics[name] = WindowMetrics.from_json(self.task, kept[name])  # type: ignore[arg-type]
            for i in fresh:
                covered.add(found[i][0].offset)
            self.table.put(
                partition,
                key,
                {
                    "start": start,
                    "size": size,
                    "outputs": {name: m.to_json() for name, m in metrics.items()},
                    "cov": covered.ranges,
                },
            )
            result.windows.add(start)

    def _count(self, partition: int, offset: int, kind: str) -> None:
        key = f"{kind}|{partition}"
        value = self.table.get(key) or {"n": 0, "cov": []}
        covered = OffsetRanges(value["cov"])
        if offset in covered:
            return
        covered.add(offset)
        self.table.put(partition, key, {"n": int(value["n"]) + 1, "cov": covered.ranges})

    def offsets_meta(self, topic: str) -> dict[str, Any]:
        """What a snapshot records of the progress (see `offsets.offsets_meta`)."""
        return offsets_meta(topic, self.progress)


def shadow_scores(found: Sequence[tuple[LabelRecord, LoggedPrediction]]) -> dict[str, np.ndarray]:
    """Per shadow version's score name, its scores row for row (NaN where it scored none)."""
    out: dict[str, np.ndarray] = {}
    for i, (_record, entry) in enumerate(found):
        for name, score in entry.scores.items():
            if name.startswith(SHADOW_PREFIX):
                out.setdefault(name, np.full(len(found), np.nan))[i] = score
    return out
