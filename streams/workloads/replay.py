"""Labelled replay: any CSV (or a synthetic concept-drift stream) as events plus delayed labels.

Each row becomes one event (event id = row number, event time from a column or synthesized
at `rate` rows per second of event time, numeric columns as floats, the label column left
out) and its label `{event_id, label, label_time}` is published to the labels topic K rows
later — or, with a duration delay, once the replay's event time has moved that far past the
row. The interleaving is a pure generator (`interleave_labels`), so the delay rule is tested
without Kafka.

Synthetic abrupt drift: two River `Hyperplane` concepts back to back, the second from row
`drift_at` on (River's `ConceptDriftStream` with width=1 overflows `math.exp` away from
the drift point, so the two generators are chained instead, which is what an abrupt drift
is).
"""

from __future__ import annotations

import csv
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from features.duration import parse_duration_ms
from streams.ops.progress import ProgressReporter
from streams.spec import Connections, PipelineSpec
from streams.workloads.producing import checked_producer


class ReplayError(Exception):
    """A replay that cannot run as asked (missing column, unreadable file); says the fix."""


@dataclass(frozen=True)
class LabelledRow:
    """One event and the label that will follow it."""

    event: dict[str, Any]
    label: float
    event_time_ms: int


@dataclass(frozen=True)
class LabelDelay:
    """K rows later (`rows`), or once event time passed the row's by `ms`."""

    rows: int | None = None
    ms: int | None = None

    @classmethod
    def parse(cls, text: str | int) -> LabelDelay:
        """'5' → 5 rows; '30s', '10m' → an event-time delay."""
        if isinstance(text, int) or str(text).strip().isdigit():
            return cls(rows=int(text))
        try:
            return cls(ms=parse_duration_ms(str(text)))
        except ValueError:
            raise ReplayError(
                f"--label-delay {text!r}: give a number of rows (e.g. 1) or an event-time "
                "duration (e.g. 30s, 10m)"
            ) from None


def label_record(row: LabelledRow, id_field: str, label_time_ms: int) -> dict[str, Any]:
    label: float | int = int(row.label) if float(row.label).is_integer() else row.label
    return {"event_id": str(row.event[id_field]), "label": label, "label_time": label_time_ms}


def interleave_labels(
    rows: Iterable[LabelledRow], delay: LabelDelay, id_field: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """("event", event) and ("label", label) items in publishing order.

    Row delay K: the label of row i follows the event of row i+K. Time delay D: the label of
    a row follows the first event whose event time is at least the row's + D. Labels still
    due at the end follow the last event.
    """
    waiting: deque[LabelledRow] = deque()
    last_time = 0
    for row in rows:
        yield "event", row.event
        waiting.append(row)
        last_time = row.event_time_ms
        if delay.ms is not None:
            while waiting and waiting[0].event_time_ms + delay.ms <= row.event_time_ms:
                yield "label", label_record(waiting.popleft(), id_field, row.event_time_ms)
        else:
            k = delay.rows or 0
            while len(waiting) > k:
                yield "label", label_record(waiting.popleft(), id_field, row.event_time_ms)
    while waiting:
        yield "label", label_record(waiting.popleft(), id_field, last_time)


# -- sources -------------------------------------------------------------------------------
def synthesized_times(n: int, rate: float, end_ms: int | None = None) -> np.ndarray:
    """Event times at `rate` rows per second, ending at `end_ms` (default: now)."""
    end = int(time.time() * 1000) if end_ms is None else end_ms
    step = 1000.0 / rate
    return (end - (n - 1 - np.arange(n)) * step).astype(np.int64)


def csv_rows(
    path: Path,
    spec: PipelineSpec,
    *,
    label_column: str,
    time_column: str | None = None,
    rate: float = 20.0,
    end_ms: int | None = None,
    limit: int | None = None,
) -> list[LabelledRow]:
    """Read the CSV into labelled rows (ids are row numbers, 0-based after the header).

    Numeric values become floats, others stay strings; spec entity fields that the CSV
    lacks are set to the event id (each row its own entity, so rows spread over partitions).
    """
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            raw = list(itertools.islice(reader, limit))
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc}") from None
    if label_column not in columns:
        raise ReplayError(f"{path} has no column {label_column!r}; columns: {columns}")
    if time_column is not None and time_column not in columns:
        raise ReplayError(f"{path} has no column {time_column!r} for event time: {columns}")
    event = spec.event
    times: Sequence[int]
    if time_column is None:
        times = synthesized_times(len(raw), rate, end_ms).tolist()
    else:
        times = [_time_ms(r[time_column], spec) for r in raw]
    out: list[LabelledRow] = []
    for i, (record, t) in enumerate(zip(raw, times, strict=True)):
        try:
            label = float(record[label_column])
        except ValueError:
            raise ReplayError(
                f"{path} row {i}: label {record[label_column]!r} is not a number"
            ) from None
        fields: dict[str, Any] = {
            name: _value(value)
            for name, value in record.items()
            if name not in (label_column, time_column) and name is not None
        }
        fields[event.id] = str(i)
        for entity in event.entities:
            fields.setdefault(entity, str(i))
        fields[event.time.field] = t if time_column is None else _raw_time(record[time_column])
        out.append(LabelledRow(fields, label, int(t)))
    return out


def _value(text: str) -> Any:
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else None


def _raw_time(text: str) -> Any:
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        return text


def _time_ms(text: str, spec: PipelineSpec) -> int:
    from streams.events.schema import EventValidator

    validator = EventValidator(spec.event.model_copy(update={"max_past": None, "max_future": None}))
    return validator._event_time_ms({spec.event.time.field: _raw_time(text)}, 0)


def hyperplane_drift_rows(
    n: int,
    drift_at: int,
    *,
    spec: PipelineSpec,
    seed: int = 1,
    rate: float = 20.0,
    end_ms: int | None = None,
) -> list[LabelledRow]:
    """An abrupt concept drift: River `Hyperplane(seed)` before row `drift_at`, another
    hyperplane (`seed + 1`) from it on. The stream fills the spec's model input columns
    (one hyperplane dimension each), so any raw-feature spec — weather.yaml too — runs it."""
    from river.datasets import synth

    columns = list(spec.model.feature_columns)
    before = synth.Hyperplane(seed=seed, n_features=len(columns))
    after = synth.Hyperplane(seed=seed + 1, n_features=len(columns))
    stream = itertools.chain(
        itertools.islice(before, drift_at), itertools.islice(after, max(n - drift_at, 0))
    )
    times = synthesized_times(n, rate, end_ms).tolist()
    event = spec.event
    out: list[LabelledRow] = []
    for i, ((x, y), t) in enumerate(zip(stream, times, strict=False)):
        fields: dict[str, Any] = {c: float(v) for c, v in zip(columns, x.values(), strict=True)}
        fields[event.id] = str(i)
        for entity in event.entities:
            fields.setdefault(entity, str(i))
        fields[event.time.field] = t
        out.append(LabelledRow(fields, float(y), int(t)))
    return out


def card_payment_rows(spec: PipelineSpec, workload: Any) -> list[LabelledRow]:
    """The demo generator with labels: each payment's fraud label from the hidden rule,
    which changes at `workload.drift_at` (the demo's concept-drift mode).

    Labels need the card's recent mean amount and count as the rule sees them, so the
    events are featurized with the pure reference store, in production order.
    """
    from features.backends import open_store
    from features.store import FeatureBatch
    from streams.workloads.synthetic import fraud_label

    store = open_store(spec.features, "memory://", "labels")
    names = list(spec.features.names)
    mean_col = names.index("card_amount_mean_1h") if "card_amount_mean_1h" in names else None
    count_col = names.index("card_count_1h") if "card_count_1h" in names else None
    drift_at = workload.drift_at
    out: list[LabelledRow] = []
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        times = [int(e[spec.event.time.field]) for e in batch]
        values = store.update_and_read(FeatureBatch(batch, times, None)).values
        for i, event in enumerate(batch):
            index = len(out)
            mean = float(values[i, mean_col]) if mean_col is not None else 0.0
            count = float(values[i, count_col]) if count_col is not None else 0.0
            drifted = drift_at is not None and index >= drift_at
            label = fraud_label(event, mean, count, drifted=drifted)
            out.append(LabelledRow(dict(event), float(label), times[i]))
        batch.clear()

    for event in workload.events():
        batch.append(event)
        if len(batch) == 1000:
            flush()
    if batch:
        flush()
    store.close()
    return out


def feature_matrix(rows: Sequence[LabelledRow], columns: Sequence[str]) -> np.ndarray:
    """(n, k) float matrix of the named fields (what raw-feature specs score)."""
    return np.array([[float(r.event[c]) for c in columns] for r in rows], dtype=np.float64)


def train_prefix_model(
    rows: Sequence[LabelledRow],
    spec: PipelineSpec,
    *,
    fraction: float = 0.05,
    out: Path | None = None,
    seed: int = 0,
) -> Path:
    """Train the offline model (the demo MLP → ONNX) on the first `fraction` of rows.

    The model's input columns must be raw event fields of the rows (as in weather.yaml).
    """
    from streams.workloads.demo_model import export_onnx, train_mlp

    columns = list(spec.model.feature_columns)
    missing = [c for c in columns if c not in rows[0].event]
    if missing:
        raise ReplayError(f"model inputs {missing} are not columns of the replayed rows")
    n = max(int(len(rows) * fraction), 10)
    X = feature_matrix(rows[:n], columns)
    y = np.array([r.label for r in rows[:n]])
    weights = train_mlp(X, y, hidden=16, epochs=300, seed=seed, lr=0.01, batch_size=64)
    path = out or (Path(spec.model.path) if spec.model.path else None)
    if path is None:
        raise ReplayError("the spec's model has no path to write to")
    return export_onnx(
        weights,
        path,
        feature_names=columns,
        model_name=spec.model.name,
        doc=f"trained on the first {n} rows ({fraction:.0%}) of a labelled replay",
    )


# -- producing -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplayResult:
    events: int
    labels: int
    seconds: float


def produce_labelled(
    connections: Connections,
    spec: PipelineSpec,
    rows: Iterable[LabelledRow],
    delay: LabelDelay,
    *,
    pace: float = 0.0,
    progress: ProgressReporter | None = None,
    step: Callable[[int, int], None] | None = None,
    step_every: int = 500,
) -> ReplayResult:
    """Publish events and their delayed labels; `pace` > 0 limits rows per wall second.

    `step(events, labels)` is called after every `step_every` events, once everything so
    far was acknowledged: the demo waits there for the learner, so the loop stays in step
    on a slow machine as on a fast one.
    """
    if not spec.topics.labels:
        raise ReplayError("the spec names no labels topic: set topics.labels")
    producer, failures = checked_producer(connections, **{"linger.ms": 5})
    key_field = spec.event.key or spec.event.entities[0]
    started = time.perf_counter()
    events = labels = 0
    dumps = orjson.dumps
    for kind, record in interleave_labels(rows, delay, spec.event.id):
        if kind == "event":
            topic, key = spec.topics.events, str(record.get(key_field, "")).encode()
            events += 1
            if pace > 0:
                ahead = events / pace - (time.perf_counter() - started)
                if ahead > 0:
                    producer.poll(0)
                    time.sleep(ahead)
        else:
            topic, key = spec.topics.labels, str(record["event_id"]).encode()
            labels += 1
        while True:
            try:
                producer.produce(topic, dumps(record), key)
                break
            except BufferError:
                producer.poll(0.05)
        if (events + labels) % 1000 == 0:
            producer.poll(0)
            if progress is not None:
                progress.update(events)
        if step is not None and kind == "event" and events % step_every == 0:
            while producer.flush(10) > 0:
                pass
            step(events, labels)
    while producer.flush(10) > 0:
        pass
    if progress is not None:
        progress.update(events)
    if failures:
        raise RuntimeError(f"{len(failures)} records were not delivered, e.g. {failures[0]}")
    return ReplayResult(events, labels, time.perf_counter() - started)


def replay_rows(
    spec: PipelineSpec,
    *,
    csv_path: Path | None = None,
    label_column: str | None = None,
    time_column: str | None = None,
    rate: float = 20.0,
    drift_rows: int = 0,
    synthetic: int = 0,
    drift_at: int | None = None,
    seed: int = 1,
    limit: int | None = None,
    start_row: int = 0,
) -> list[LabelledRow]:
    """The labelled rows a replay publishes: a CSV, card payments, or the drift stream."""
    if csv_path is not None:
        if not label_column:
            raise ReplayError("--csv needs --label-column: the column holding each row's label")
        rows = csv_rows(
            csv_path,
            spec,
            label_column=label_column,
            time_column=time_column,
            rate=rate,
            limit=limit,
        )
    elif synthetic > 0:
        from streams.workloads.synthetic import CardPayments

        rows = card_payment_rows(
            spec, CardPayments(synthetic, seed=seed, rate=rate, drift_at=drift_at)
        )
    elif drift_rows > 0:
        rows = hyperplane_drift_rows(
            drift_rows,
            drift_at if drift_at is not None else drift_rows // 2,
            spec=spec,
            seed=seed,
            rate=rate,
        )
    else:
        raise ReplayError(
            "say what to replay: --csv FILE --label-column COL, --drift-stream N, or "
            "--synthetic N with --label-delay"
        )
    rows = rows[start_row:]
    if not rows:
        raise ReplayError("nothing to replay: no rows (after --start-row)")
    return rows


def replay(
    spec: PipelineSpec,
    connections: Connections,
    rows: Sequence[LabelledRow],
    *,
    label_delay: str = "1",
    pace: float = 0.0,
    progress: ProgressReporter | None = None,
    step: Callable[[int, int], None] | None = None,
    step_every: int = 500,
) -> ReplayResult:
    """Ensure the topics, then publish the rows' events and their delayed labels."""
    from streams.ops.topics import ensure_topics

    delay = LabelDelay.parse(label_delay)
    ensure_topics(connections, spec)
    return produce_labelled(
        connections,
        spec,
        rows,
        delay,
        pace=pace,
        progress=progress,
        step=step,
        step_every=step_every,
    )
