"""`streamfer dataset`: a training set built from what was actually scored.

The features topic holds every feature vector exactly as a worker scored it (no feature can
have seen data from after its event: the store computed it at that event), so joining it by
event id with the labels and with the published predictions gives a point-in-time-correct
training set by construction, with the served scores beside it. Columns (Parquet, one row
per event, the first feature record of an event kept):

    event_id, event_time_ms           the event
    <feature name> …                  float64, the spec's columns in order, as scored
    label, label_time_ms              null when unlabelled (rows kept with `unlabelled`)
    model_version, adaptation_version what scored it
    score, score_onnx, score_river    the served scores (null when no prediction was read)
    late, replayed                    the store's flags for the event

The pure part (`build_table`) joins records; `write_dataset` reads the topics (bounded) and
writes the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streams.learner.bounded_reader import TopicRecord, read_to_end
from streams.learner.labels import parse_label
from streams.ops.progress import NoProgress, ProgressReporter
from streams.spec import Connections, PipelineSpec

META_COLUMNS = (
    "event_id",
    "event_time_ms",
    "label",
    "label_time_ms",
    "model_version",
    "adaptation_version",
    "score",
    "score_onnx",
    "score_river",
    "late",
    "replayed",
)
FEATURES_METADATA_KEY = b"streamfer.features"


class DatasetError(Exception):
    """A training set that cannot be built (no features topic, a name clash); says the fix."""


@dataclass(frozen=True)
class DatasetSummary:
    """What `write_dataset` wrote."""

    path: Path
    rows: int
    labelled: int
    feature_records: int


def build_table(
    names: Sequence[str],
    feature_records: Iterable[bytes | None],
    predictions: Iterable[bytes | None],
    labels: Iterable[TopicRecord],
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    unlabelled: bool = False,
) -> Any:
    """Join feature records, predictions and labels by event id → a `pyarrow.Table`.

    Rows are ordered by event time (then event id) and limited to `since_ms <= event time <
    until_ms`; an event fed twice (a redelivery) keeps its first record, which the
    store's idempotency makes equal to the others.
    """
    import pyarrow as pa

    clash = sorted(set(names) & set(META_COLUMNS))
    if clash:
        raise DatasetError(f"feature names {clash} clash with dataset columns: rename them")
    rows: dict[str, dict[str, Any]] = {}
    for raw in feature_records:
        record = _json(raw)
        if record is None or "event_id" not in record:
            continue
        event_id = str(record["event_id"])
        t = int(record.get("event_time") or 0)
        if (since_ms is not None and t < since_ms) or (until_ms is not None and t >= until_ms):
            continue
        if event_id in rows:
            rows[event_id]["replayed"] |= bool(record.get("replayed"))
            continue
        rows[event_id] = {
            "t": t,
            "f": record.get("features") or {},
            "m": record.get("model_version"),
            "replayed": bool(record.get("replayed")),
        }
    for raw in predictions:
        p = _json(raw)
        row = rows.get(str(p.get("event_id"))) if p else None
        if p is None or row is None or "score" in row:
            continue
        scores = p.get("scores") or {}
        row["score"], row["onnx"], row["river"] = (
            p.get("score"),
            scores.get("onnx"),
            scores.get("river"),
        )
        row["a"], row["late"] = p.get("adaptation_version"), bool(p.get("late"))
    label_of: dict[str, tuple[float, int]] = {}
    for record in labels:
        label = parse_label(record.value, record.partition, record.offset)
        if label is not None:
            label_of.setdefault(label.event_id, (label.label, label.label_time_ms))
    ids = sorted((i for i in rows if unlabelled or i in label_of), key=lambda i: (rows[i]["t"], i))
    columns: dict[str, Any] = {
        "event_id": pa.array(ids, pa.string()),
        "event_time_ms": pa.array([rows[i]["t"] for i in ids], pa.int64()),
    }
    for name in names:
        columns[name] = pa.array([rows[i]["f"].get(name) for i in ids], pa.float64())
    got = [label_of.get(i) for i in ids]
    columns["label"] = pa.array([g[0] if g else None for g in got], pa.float64())
    columns["label_time_ms"] = pa.array([g[1] if g else None for g in got], pa.int64())
    columns["model_version"] = pa.array([rows[i]["m"] for i in ids], pa.string())
    columns["adaptation_version"] = pa.array([rows[i].get("a") for i in ids], pa.string())
    for column, key in (("score", "score"), ("score_onnx", "onnx"), ("score_river", "river")):
        columns[column] = pa.array([rows[i].get(key) for i in ids], pa.float64())
    columns["late"] = pa.array([rows[i].get("late", False) for i in ids], pa.bool_())
    columns["replayed"] = pa.array([rows[i]["replayed"] for i in ids], pa.bool_())
    table = pa.table(columns)
    return table.replace_schema_metadata({FEATURES_METADATA_KEY: orjson.dumps(list(names))})


def feature_names_of(table: Any) -> list[str]:
    """The feature columns a dataset file holds, in the spec's order (from its metadata)."""
    meta = table.schema.metadata or {}
    names: list[str] = orjson.loads(meta[FEATURES_METADATA_KEY])
    return names


def write_dataset(
    spec: PipelineSpec,
    connections: Connections,
    output: Path,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    unlabelled: bool = False,
    timeout_s: float = 120.0,
    progress: ProgressReporter | None = None,
) -> DatasetSummary:
    """Read the features, predictions and labels topics to their ends; write the Parquet."""
    import pyarrow.parquet as pq

    if not spec.topics.features:
        raise DatasetError(
            "the spec has no topics.features: workers log no feature vectors, so there is "
            "nothing point-in-time correct to build from. Set topics.features and let the "
            "workers run"
        )
    progress = progress or NoProgress()
    progress.update(0, 3)
    features = read_to_end(connections, spec.topics.features, timeout_s=timeout_s)
    progress.update(1, 3)
    predictions = read_to_end(connections, spec.topics.predictions, timeout_s=timeout_s)
    progress.update(2, 3)
    labels = (
        read_to_end(connections, spec.topics.labels, timeout_s=timeout_s)
        if spec.topics.labels
        else []
    )
    progress.update(3, 3)
    table = build_table(
        spec.features.names,
        (r.value for r in features),
        (r.value for r in predictions),
        labels,
        since_ms=since_ms,
        until_ms=until_ms,
        unlabelled=unlabelled,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, output)
    labelled = table.num_rows - table.column("label").null_count
    return DatasetSummary(output, table.num_rows, labelled, len(features))


def parse_time_ms(value: str, now_ms: int) -> int:
    """--since/--until: epoch milliseconds, an ISO 8601 time (UTC unless it says), or a
    duration such as `2h` meaning that long before `now_ms`."""
    from datetime import UTC, datetime

    from features.duration import parse_duration_ms

    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            return now_ms - parse_duration_ms(text)
        except (ValueError, TypeError):
            raise DatasetError(
                f"{value!r} is not a time: give epoch milliseconds, an ISO 8601 time "
                "(2026-01-31T12:00:00Z) or a duration before now (30m, 2h, 7d)"
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _json(raw: bytes | None) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
