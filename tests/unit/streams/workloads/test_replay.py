"""Labelled replay: rows → events, labels K rows (or a duration) later; the drift stream."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.spec import PipelineSpec, parse_spec
from streams.workloads.replay import (
    LabelDelay,
    LabelledRow,
    ReplayError,
    csv_rows,
    hyperplane_drift_rows,
    interleave_labels,
    synthesized_times,
)
from tests.integration.harness import spec_dict


@pytest.fixture
def spec() -> PipelineSpec:
    raw = spec_dict("replay", {"path": "/nowhere.onnx"})
    raw["topics"]["labels"] = "labels-replay"
    return parse_spec(raw)


def _rows(n: int, step_ms: int = 1000) -> list[LabelledRow]:
    return [LabelledRow({"event_id": str(i)}, float(i % 2), i * step_ms) for i in range(n)]


def _order(items: list[tuple[str, dict[str, object]]]) -> list[str]:
    return [f"{kind[0]}{record['event_id']}" for kind, record in items]


def test_label_follows_its_event_k_rows_later() -> None:
    items = list(interleave_labels(_rows(4), LabelDelay(rows=1), "event_id"))
    assert _order(items) == ["e0", "e1", "l0", "e2", "l1", "e3", "l2", "l3"]
    label = items[2][1]
    assert label == {"event_id": "0", "label": 0, "label_time": 1000}


def test_delay_zero_and_longer_delays() -> None:
    assert _order(list(interleave_labels(_rows(2), LabelDelay(rows=0), "event_id"))) == [
        "e0",
        "l0",
        "e1",
        "l1",
    ]
    order = _order(list(interleave_labels(_rows(5), LabelDelay(rows=3), "event_id")))
    assert order.index("l0") == order.index("e3") + 1
    assert order[-2:] == ["l3", "l4"]  # still due at the end: after the last event


def test_time_delay_uses_event_time() -> None:
    order = _order(list(interleave_labels(_rows(6, step_ms=1000), LabelDelay(ms=2500), "event_id")))
    assert order.index("l0") == order.index("e3") + 1  # 3000 ms >= 0 + 2500
    assert order.index("l2") == order.index("e5") + 1


def test_label_delay_parsing() -> None:
    assert LabelDelay.parse("5") == LabelDelay(rows=5)
    assert LabelDelay.parse(0) == LabelDelay(rows=0)
    assert LabelDelay.parse("30s") == LabelDelay(ms=30_000)
    with pytest.raises(ReplayError, match="number of rows"):
        LabelDelay.parse("soon")


def test_csv_rows_become_events_without_their_label(tmp_path: Path, spec: PipelineSpec) -> None:
    path = tmp_path / "data.csv"
    path.write_text("amount,mcc,city,target\n10.5,5411,Berlin,1\n3,7995,Paris,0\n")
    rows = csv_rows(path, spec, label_column="target", rate=2.0, end_ms=10_000)
    assert [r.label for r in rows] == [1.0, 0.0]
    first = rows[0].event
    assert first["event_id"] == "0" and "target" not in first
    assert first["amount"] == 10.5 and first["mcc"] == 5411.0 and first["city"] == "Berlin"
    assert first["card_id"] == "0" and first["merchant_id"] == "0"  # entities the CSV lacks
    assert [r.event_time_ms for r in rows] == [9_500, 10_000]  # 2 rows/s, ending at end_ms
    assert rows[1].event["event_time"] == 10_000


def test_csv_time_column_and_errors(tmp_path: Path, spec: PipelineSpec) -> None:
    path = tmp_path / "timed.csv"
    path.write_text("ts,amount,y\n1700000000000,1,0\n1700000001000,2,1\n")
    rows = csv_rows(path, spec, label_column="y", time_column="ts")
    assert [r.event_time_ms for r in rows] == [1_700_000_000_000, 1_700_000_001_000]
    assert "ts" not in rows[0].event or rows[0].event["event_time"] == 1_700_000_000_000
    with pytest.raises(ReplayError, match="no column 'label'"):
        csv_rows(path, spec, label_column="label")
    with pytest.raises(ReplayError, match="cannot read"):
        csv_rows(tmp_path / "missing.csv", spec, label_column="y")


def test_synthesized_times_are_evenly_spaced() -> None:
    assert synthesized_times(3, 4.0, end_ms=1000).tolist() == [500, 750, 1000]


def test_hyperplane_drift_stream_changes_concept_at_drift_at(spec: PipelineSpec) -> None:
    rows = hyperplane_drift_rows(400, 200, spec=spec, seed=3)
    again = hyperplane_drift_rows(400, 200, spec=spec, seed=3)
    assert [r.label for r in rows] == [r.label for r in again]  # deterministic for a seed
    columns = set(spec.model.feature_columns)  # one hyperplane dimension per model input
    assert set(rows[0].event) == columns | {"event_id", "event_time", "card_id", "merchant_id"}
    no_drift = hyperplane_drift_rows(400, 400, spec=spec, seed=3)
    assert [r.label for r in rows[:200]] == [r.label for r in no_drift[:200]]
    assert [r.label for r in rows[200:]] != [r.label for r in no_drift[200:]]
