"""The served outputs scored: published predictions joined by event id with the labels,
per event-time window, with the learner's prequential metrics; and the report beside the
learner's own numbers."""

from __future__ import annotations

import io

import numpy as np
import orjson
import pytest
from rich.console import Console

from inference.prequential import WindowMetrics
from streams.learner.labels import LabelRecord
from streams.learner.report import build_report, print_report
from streams.learner.served import ServedPrediction, parse_prediction, served_metrics
from streams.learner.tables import DictTable

WINDOW = 1000


def label(event_id: str, y: float, offset: int) -> LabelRecord:
    return LabelRecord(event_id, y, 0, 0, offset)


def prediction(
    event_id: str, t: int, onnx: float, final: float, river: float | None = None, **kw: bool
) -> ServedPrediction:
    return ServedPrediction(event_id, t, onnx, river, final, **kw)


def expected(y: list[float], p: list[float]) -> dict[str, float | None]:
    m = WindowMetrics.new("classification")
    m.update(np.array(y), np.array(p))
    return m.result()


def test_parse_prediction_reads_the_published_record() -> None:
    raw = orjson.dumps(
        {
            "event_id": 7,
            "score": 0.8,
            "scores": {"onnx": 0.6, "river": 0.9},
            "decision": True,
            "event_time": 1234,
            "replayed": False,
        }
    )
    assert parse_prediction(raw) == ServedPrediction("7", 1234, 0.6, 0.9, 0.8, False)
    no_river = orjson.dumps(
        {"event_id": "a", "score": 0.1, "scores": {"onnx": 0.1}, "event_time": 5}
    )
    assert parse_prediction(no_river) == ServedPrediction("a", 5, 0.1, None, 0.1)
    assert parse_prediction(b"{not json") is None
    assert parse_prediction(orjson.dumps({"event_id": "a", "score": 0.1})) is None


def test_labels_join_predictions_by_event_id_in_the_prediction_windows() -> None:
    predictions = [
        prediction("a", 100, 0.9, 0.8, river=0.7),
        prediction("b", 200, 0.2, 0.6),  # before the worker had a River snapshot
        prediction("c", 1500, 0.4, 0.3, river=0.2),
    ]
    labels = [label("a", 1, 0), label("b", 0, 1), label("c", 0, 2), label("zz", 1, 3)]
    served = served_metrics(
        labels, predictions, task="classification", window_ms=WINDOW, threshold=0.5
    )
    assert served.join_counts() == {"labels": 4, "joined": 3, "unmatched": 1}
    assert sorted(served.windows) == [0, 1000]
    first = served.windows[0]
    assert first["onnx"].result() == expected([1, 0], [0.9, 0.2])
    assert first["final"].result() == expected([1, 0], [0.8, 0.6])
    assert first["river"].result() == expected([1], [0.7])  # only what River served
    assert served.windows[1000]["final"].result() == expected([0], [0.3])
    assert served.total()["final"].result() == expected([1, 0, 0], [0.8, 0.6, 0.3])


def test_each_label_record_counts_and_the_first_non_replayed_prediction_serves() -> None:
    predictions = [
        prediction("a", 0, 0.1, 0.1, replayed=True),
        prediction("a", 0, 0.9, 0.9),
        prediction("a", 0, 0.2, 0.2),  # a duplicate publish: the first was acted on
    ]
    labels = [label("a", 1, 0), label("a", 1, 1)]  # the label was published twice
    served = served_metrics(
        labels, predictions, task="classification", window_ms=WINDOW, threshold=0.5
    )
    assert served.windows[0]["final"].result() == expected([1, 1], [0.9, 0.9])


def test_report_puts_served_beside_the_learners_own_per_window() -> None:
    served = served_metrics(
        [label("a", 1, 0), label("b", 0, 1)],
        [prediction("a", 100, 0.9, 0.8, river=0.4), prediction("b", 2100, 0.2, 0.3, river=0.1)],
        task="classification",
        window_ms=WINDOW,
        threshold=0.5,
    )
    learner = WindowMetrics.new("classification")
    learner.update(np.array([1.0]), np.array([0.95]))
    table = DictTable()
    entry = {o: learner.to_json() for o in ("onnx", "river", "final")}
    table.put(0, "w|0|0", {"start": 0, "size": WINDOW, "outputs": entry, "cov": [[0, 1]]})
    report = build_report(table.items(), served, window_ms=WINDOW)
    assert [w["start_ms"] for w in report["windows"]] == [0, 2000]
    first, second = report["windows"]
    assert first["served"]["river"] == expected([1], [0.4])
    assert first["learner"]["river"] == expected([1], [0.95])
    assert second["learner"]["labels"] == 0 and second["served"]["labels"] == 1
    assert report["total"]["served"]["labels"] == 2
    assert report["served_join"] == {"labels": 2, "joined": 2, "unmatched": 0}

    # piped, the table keeps one line per row and names the learner's column for what it is
    console = Console(width=10_000, soft_wrap=True, record=True, file=io.StringIO())
    print_report(report, console, "t")
    text = console.export_text()
    rows = [
        line for line in text.splitlines() if "01-01" in line or line.lstrip("│ ").startswith("all")
    ]
    assert len(rows) == 3, text
    assert "predict-then-learn" in text and "served" in text


@pytest.mark.parametrize("river_served", [True, False])
def test_served_river_is_shown_only_when_workers_can_serve_it(river_served: bool) -> None:
    served = served_metrics(
        [label("a", 1, 0)],
        [prediction("a", 0, 0.9, 0.9)],
        task="classification",
        window_ms=WINDOW,
        threshold=0.5,
    )
    report = build_report([], served, window_ms=WINDOW, river_served=river_served)
    assert ("river" in report["total"]["served"]) is river_served


def test_freshness_is_the_first_prediction_that_reflects_each_label() -> None:
    from streams.learner.served import learned_sequence, served_freshness

    produced = np.array([100.0, 110.0, 120.0, 130.0])
    # predictions scored at these times by models that had learned this many labels
    scored_at = np.array([105.0, 140.0, 125.0, 160.0, 170.0])
    learned = np.array([0, 3, 1, 3, 3])
    ages = served_freshness(produced, scored_at, learned)
    # label 0: first reflected at 125 (learned 1); labels 1, 2 at 140; label 3 never
    np.testing.assert_array_equal(ages[:3], [125 - 100, 140 - 110, 140 - 120])
    assert np.isnan(ages[3])
    assert (learned_sequence("7@1234"), learned_sequence("7"), learned_sequence(None)) == (
        1234,
        None,
        None,
    )


def test_report_freshness_from_the_examples_log_and_the_predictions() -> None:
    from streams.learner.bounded_reader import TopicRecord
    from streams.learner.report import freshness, freshness_summary

    examples = [
        TopicRecord(0, s, None, orjson.dumps({"seq": s, "lt": 1000 + 10 * s})) for s in range(3)
    ]
    served = [
        prediction("a", 0, 0.5, 0.5, scored_at_ms=1015, learned=1),
        prediction("b", 0, 0.5, 0.5, scored_at_ms=1050, learned=3),
        prediction("c", 0, 0.5, 0.5),  # snapshot serving: no learn sequence, not counted
    ]
    ages = freshness(examples, served)
    np.testing.assert_array_equal(ages, [15, 1050 - 1010, 1050 - 1020])
    summary = freshness_summary(ages)
    assert summary is not None and summary["p50_ms"] == float(np.median(ages))
    assert freshness_summary(None) is None
