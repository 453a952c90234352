"""The demo's adaptation summary, from predictions and labels (no Kafka)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from streams.spec import Connections, load_spec, parse_spec
from streams.workloads.demo_adaptation import (
    FEEDBACK_WAIT_MS,
    DemoError,
    accuracy_across_drift,
    check_adaptive,
    describe_alerts,
    river_final_from,
    snapshot_key,
    with_replicas,
    with_short_waits,
)

EXAMPLES = Path(__file__).resolve().parents[4] / "examples"


def prediction(i: int, onnx: float, river: float | None, final: float) -> dict[str, Any]:
    scores = {"onnx": onnx} if river is None else {"onnx": onnx, "river": river}
    return {"event_id": f"e{i}", "score": final, "scores": scores}


def test_accuracy_before_and_after_on_the_payments_river_scored() -> None:
    labels = {f"e{i}": (i, float(i >= 4)) for i in range(8)}  # fraud from the drift on
    predictions = [
        prediction(0, 0.1, None, 0.1),  # before River's first snapshot: not counted
        prediction(1, 0.1, 0.2, 0.1),
        prediction(2, 0.1, 0.9, 0.1),  # River wrong before the drift
        prediction(3, 0.1, 0.1, 0.1),
        prediction(4, 0.1, 0.9, 0.9),  # after: ONNX misses the new fraud, River finds it
        prediction(5, 0.1, 0.9, 0.9),
        prediction(6, 0.1, 0.4, 0.1),
        prediction(7, 0.1, 0.9, 0.9),
    ]
    before_from, acc = accuracy_across_drift(predictions, labels, drift_at=4)
    assert before_from == 1
    assert (acc["onnx"].before, acc["onnx"].after) == (1.0, 0.0)
    assert (acc["river"].before, acc["river"].after) == (pytest.approx(2 / 3), 0.75)
    assert (acc["final"].before, acc["final"].after) == (1.0, 0.75)
    assert river_final_from(predictions, labels) == 4


def test_no_river_score_at_all_is_a_clear_error() -> None:
    with pytest.raises(DemoError, match="learner never caught up"):
        accuracy_across_drift([prediction(0, 0.1, None, 0.1)], {"e0": (0, 0.0)}, 1)


def test_alerts_after_the_drift_come_first_with_the_label_they_fired_at() -> None:
    def alert(name: str, seen: int, event_time_ms: int) -> dict[str, Any]:
        return {
            "detector": "ADWIN",
            "kind": "output",
            "name": name,
            "labels_seen": seen,
            "event_time_ms": event_time_ms,
        }

    drift_time_ms = 1_000_000
    text = describe_alerts(
        [
            # learned out of order across label partitions: count 7,976, event after the drift
            alert("onnx", 7976, drift_time_ms + 5),
            alert("river", 352, 100),
            alert("onnx", 8500, drift_time_ms + 900),
            alert("final", 8064, drift_time_ms + 60),
        ],
        drift_time_ms=drift_time_ms,
    )
    assert text == (
        "3 after the drift (ADWIN), first: onnx error at label 7,976, final error at label "
        "8,064; 1 before it: river error at label 352"
    )
    assert describe_alerts([], drift_time_ms) == "none"


def test_the_adaptation_stage_needs_an_adaptive_spec() -> None:
    check_adaptive(load_spec(EXAMPLES / "card-payments-adaptive.yaml"), "adaptive", 16_000)
    with pytest.raises(DemoError, match=r"adaptation\.mode is off"):
        check_adaptive(load_spec(EXAMPLES / "card-payments.yaml"), "card-payments.yaml", 16_000)
    with pytest.raises(DemoError, match="at least 1,000"):
        check_adaptive(load_spec(EXAMPLES / "card-payments-adaptive.yaml"), "adaptive", 10)


def test_a_random_snapshot_key_only_when_none_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMFER_SNAPSHOT_KEY", raising=False)
    with snapshot_key(Connections.from_env()) as (connections, generated):
        key = os.environ["STREAMFER_SNAPSHOT_KEY"]  # for the learner's process
        assert generated and len(key) >= 32
        assert connections.snapshot_secret == key  # for the demo's own worker
    assert "STREAMFER_SNAPSHOT_KEY" not in os.environ
    monkeypatch.setenv("STREAMFER_SNAPSHOT_KEY", "the-operators-own-key")
    with snapshot_key(Connections.from_env()) as (connections, generated):
        assert not generated and os.environ["STREAMFER_SNAPSHOT_KEY"] == "the-operators-own-key"
        assert connections.snapshot_secret == "the-operators-own-key"


def test_the_stage_runs_replicas_with_short_waits_in_the_spec_the_learner_reads() -> None:
    spec = load_spec(EXAMPLES / "card-payments-adaptive.yaml")
    staged = with_short_waits(with_replicas(spec))
    # the learner process reads the spec as the demo writes it (only the fields set)
    dumped = staged.model_dump(mode="json", exclude_unset=True)
    learner_spec = parse_spec(dumped)
    for s in (staged, learner_spec):
        assert s.adaptation.serving.value == "replica" and s.topics.examples
        assert s.batching.max_wait == FEEDBACK_WAIT_MS
        assert s.adaptation.batch.max_wait == FEEDBACK_WAIT_MS
        # everything else of the batching is the spec's own
        assert s.adaptation.batch.max_size == spec.adaptation.batch.max_size
        assert s.batching.max_size == spec.batching.max_size
    assert spec.batching.max_wait > FEEDBACK_WAIT_MS  # the example spec's waits are longer
