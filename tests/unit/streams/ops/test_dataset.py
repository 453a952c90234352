"""The training-set join: feature records as scored, served scores, labels; event-time order,
one row per event, the time filter, and --since/--until parsing."""

from __future__ import annotations

import orjson
import pytest

from streams.learner.bounded_reader import TopicRecord
from streams.ops.dataset import DatasetError, build_table, feature_names_of, parse_time_ms

NAMES = ("a", "b")


def feature(event_id: str, t: int, a: float, b: float, replayed: bool = False) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "event_time": t,
            "features": {"a": a, "b": b},
            "model_version": "3",
            "replayed": replayed,
        }
    )


def prediction(event_id: str, score: float, *, late: bool = False) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "score": score,
            "scores": {"onnx": score / 2, "river": score},
            "adaptation_version": "7",
            "late": late,
        }
    )


def label(event_id: str, y: float, offset: int) -> TopicRecord:
    value = orjson.dumps({"event_id": event_id, "label": y, "label_time": 5_000 + offset})
    return TopicRecord(0, offset, None, value)


def test_rows_hold_the_first_record_of_each_event_with_its_label_and_scores() -> None:
    records = [
        feature("e2", 200, 2.0, 20.0),
        feature("e1", 100, 1.0, 10.0),
        feature("e2", 200, 2.0, 20.0, replayed=True),  # a redelivery, same values
        feature("e3", 300, 3.0, 30.0),
        b"not json",
    ]
    table = build_table(
        NAMES,
        records,
        [prediction("e1", 0.8, late=True), prediction("e2", 0.4), prediction("e1", 0.1)],
        [label("e1", 1.0, 0), label("e2", 0.0, 1)],
    )
    rows = table.to_pylist()
    assert [r["event_id"] for r in rows] == ["e1", "e2"]  # e3 has no label
    assert [(r["a"], r["b"]) for r in rows] == [(1.0, 10.0), (2.0, 20.0)]
    assert [r["label"] for r in rows] == [1.0, 0.0]
    assert [r["score"] for r in rows] == [0.8, 0.4]  # the first prediction of e1
    assert [r["score_onnx"] for r in rows] == [0.4, 0.2]
    assert [r["late"] for r in rows] == [True, False]
    assert [r["replayed"] for r in rows] == [False, True]
    assert rows[0]["model_version"] == "3" and rows[0]["adaptation_version"] == "7"
    assert feature_names_of(table) == list(NAMES)


def test_unlabelled_rows_and_the_time_filter() -> None:
    records = [feature(f"e{t}", t, float(t), 0.0) for t in (100, 200, 300, 400)]
    table = build_table(NAMES, records, [], [], since_ms=200, until_ms=400, unlabelled=True)
    rows = table.to_pylist()
    assert [r["event_time_ms"] for r in rows] == [200, 300]
    assert all(r["label"] is None and r["score"] is None for r in rows)


def test_a_feature_named_like_a_column_is_refused() -> None:
    with pytest.raises(DatasetError, match="label"):
        build_table(("label",), [], [], [])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1750000000000", 1_750_000_000_000),
        ("2026-01-01T00:00:00Z", 1_767_225_600_000),
        ("2026-01-01T00:00:00", 1_767_225_600_000),
        ("2h", 10_000_000 - 7_200_000),
    ],
)
def test_times_parse(text: str, expected: int) -> None:
    assert parse_time_ms(text, 10_000_000) == expected


def test_a_bad_time_names_the_forms() -> None:
    with pytest.raises(DatasetError, match="ISO 8601"):
        parse_time_ms("yesterday", 0)
