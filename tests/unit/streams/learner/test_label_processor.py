"""The learner's core without Kafka: label join with retry and expiry, offsets that make a
restart exact, and metrics that never count a label twice."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from inference.adaptation.learner import OnlineLearner
from streams.learner.labels import LabelRecord, parse_label
from streams.learner.offsets import OffsetRanges, PartitionProgress, restore_progress
from streams.learner.processor import LabelProcessor
from streams.learner.tables import DictTable, totals
from streams.spec import PipelineSpec, parse_spec
from streams.worker.prediction_log import LoggedPrediction
from tests.integration.harness import spec_dict


class FakeLog:
    """The prediction log as a dict (entries can be added later, as a slow worker would)."""

    def __init__(self) -> None:
        self.entries: dict[str, LoggedPrediction] = {}

    def add(self, event_id: str, x: float, onnx: float, t: int = 0) -> None:
        self.entries[event_id] = LoggedPrediction(event_id, {"a": x}, {"onnx": onnx}, "1", None, t)

    def read(self, ids: Sequence[str]) -> list[LoggedPrediction | None]:
        return [self.entries.get(i) for i in ids]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_spec(**adaptation: object) -> PipelineSpec:
    raw = spec_dict("learn", {"path": "/nowhere.onnx"})
    raw["features"] = {"transforms": [{"name": "a", "field": "amount", "op": "raw"}]}
    raw["model"]["inputs"] = {"features": ["a"]}
    raw["topics"]["labels"] = "labels"
    raw["adaptation"] = {
        "mode": "stack",
        "min_labels": 0,
        "label_retry": {"attempts": 2, "backoff": "1s"},
        "metrics_window": "10s",
        **adaptation,
    }
    return parse_spec(raw)


@pytest.fixture
def spec() -> PipelineSpec:
    return make_spec()


def processor(spec: PipelineSpec, log: FakeLog, clock: Clock | None = None) -> LabelProcessor:
    learner = OnlineLearner(spec.adaptation, spec.features.names)
    return LabelProcessor(spec, log, DictTable(), learner, {}, clock=clock or Clock())  # type: ignore[arg-type]


def label(i: int, y: float = 1.0, partition: int = 0) -> LabelRecord:
    return LabelRecord(str(i), y, 0, partition, i)


def test_labels_join_learn_and_count_per_window(spec: PipelineSpec) -> None:
    log = FakeLog()
    for i in range(4):
        log.add(str(i), float(i), 0.9, t=i * 6_000)  # windows [0, 10 s) and [10 s, 20 s)
    p = processor(spec, log)
    result = p.consume([label(i) for i in range(4)])
    assert result.learned == 4 and p.learner.labels_seen == 4
    assert result.windows == {0, 10_000}
    assert totals(p.table.items(), "classification")["onnx"] == {
        "n": 4,
        "accuracy": 1.0,
        "roc_auc": None,
        "log_loss": pytest.approx(-np.log(0.9)),
    }


def test_early_labels_are_retried_then_learned_or_expired(spec: PipelineSpec) -> None:
    log, clock = FakeLog(), Clock()
    p = processor(spec, log, clock)
    result = p.consume([label(0), label(1)])
    assert result.retried == 2 and result.learned == 0
    assert p.progress[0].pending == {0, 1} and p.progress[0].resume_offset() == 0
    log.add("0", 1.0, 0.8)  # the worker logs event 0 now
    clock.now = 0.5
    assert p.due_retries().learned == 0  # backoff (1 s) not over yet
    clock.now = 1.0
    retried = p.due_retries()
    assert retried.learned == 1 and retried.retried == 1  # event 1 waits again (2 s)
    clock.now = 3.0
    expired = p.due_retries()
    assert expired.expired == 1 and not p.retry
    assert p.progress[0].pending == set() and p.progress[0].resume_offset() == 2
    assert p.table.get("x|0") == {"n": 1, "cov": [[1, 2]]}


def test_malformed_labels_are_counted_not_fatal(spec: PipelineSpec) -> None:
    assert parse_label(b"not json", 0, 5) is None
    assert parse_label(b'{"label": 1}', 0, 5) is None
    parsed = parse_label(b'{"event_id": 7, "label": true, "label_time": 3}', 1, 9)
    assert parsed == LabelRecord("7", 1.0, 3, 1, 9)
    p = processor(spec, FakeLog())
    assert p.consume([(0, 0)]).bad == 1 and p.table.get("b|0") == {"n": 1, "cov": [[0, 1]]}


def test_restart_from_a_snapshot_skips_what_it_learned(spec: PipelineSpec) -> None:
    log = FakeLog()
    for i in range(6):
        log.add(str(i), float(i), 0.7)
    first = processor(spec, log)
    first.consume([label(0), label(1), label(3)])
    first.progress[0].pending.add(2)  # offset 2 was waiting for its prediction at snapshot time
    meta = {"offsets": first.offsets_meta("labels")}
    assert meta["offsets"]["partitions"]["0"] == {"next": 4, "pending": [2]}

    progress = restore_progress(meta, "labels")
    assert progress[0].resume_offset() == 2
    assert restore_progress(meta, "other-topic") == {}
    again = processor(spec, log)
    again.progress.update(progress)
    again.table = first.table  # the Faust table survives the restart
    result = again.consume([label(2), label(3), label(4), label(5)])
    assert result.skipped == 1  # offset 3 is in the snapshot already
    assert result.learned == 3 and again.learner.labels_seen == 3
    # metrics: 0, 1, 3 counted before; 2, 4, 5 now; nothing twice
    assert totals(again.table.items(), "classification")["onnx"]["n"] == 6


def test_replayed_labels_are_not_counted_twice_in_metrics(spec: PipelineSpec) -> None:
    log = FakeLog()
    for i in range(3):
        log.add(str(i), float(i), 0.6)
    p = processor(spec, log)
    p.consume([label(0), label(1), label(2)])
    p.progress.clear()  # as if the model came back from an older snapshot
    result = p.consume([label(0), label(1), label(2)])
    assert result.learned == 3  # learned again (the restored model had not seen them) …
    assert totals(p.table.items(), "classification")["onnx"]["n"] == 3  # … counted once


def test_logged_final_scores_are_the_final_output(spec: PipelineSpec) -> None:
    log = FakeLog()
    log.entries["0"] = LoggedPrediction("0", {"a": 1.0}, {"onnx": 0.9, "final": 0.2}, "1", "3", 0)
    p = processor(spec, log)
    p.consume([label(0, y=0.0)])
    total = totals(p.table.items(), "classification")
    assert total["onnx"]["accuracy"] == 0.0 and total["final"]["accuracy"] == 1.0


def test_offset_ranges() -> None:
    r = OffsetRanges()
    for o in (5, 7, 6, 1, 2, 9):
        r.add(o)
    assert r.ranges == [[1, 3], [5, 8], [9, 10]]
    assert 6 in r and 8 not in r and 0 not in r and len(r) == 6
    r.add(8)
    assert r.ranges == [[1, 3], [5, 10]]


def test_partition_progress() -> None:
    progress = PartitionProgress(next=10, pending={4, 8})
    assert progress.resume_offset() == 4
    assert progress.already_learned(3) and not progress.already_learned(4)
    assert not progress.already_learned(10)
    assert PartitionProgress.from_json(progress.to_json()) == progress


def test_regression_learns_and_reports_mae() -> None:
    regression = make_spec(task="regression")
    log = FakeLog()
    for i in range(50):
        log.add(str(i), float(i % 5), 0.0)
    p = processor(regression, log)
    p.consume([LabelRecord(str(i), 2.0 * (i % 5), 0, 0, i) for i in range(50)])
    total = totals(p.table.items(), "regression")
    assert total["onnx"]["mae"] == pytest.approx(4.0)  # ONNX says 0; labels average 4
    assert total["river"]["mae"] < total["onnx"]["mae"]
