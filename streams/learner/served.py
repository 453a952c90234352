"""What the workers served, scored: published predictions joined by event id with the
labels, prequential metrics per event-time window (the same as the learner's table).

Pure: records in, metrics out, so a unit test checks the join without Kafka. The learner's
own numbers differ on purpose: its River predicts each label with its newest model just
before learning it, while a worker served an older snapshot (or a replica a few labels
behind: `served_freshness` says how far, from the examples log and the predictions).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from inference.prequential import OUTPUTS, Task, WindowMetrics, window_start
from streams.learner.labels import LabelRecord


@dataclass(frozen=True)
class ServedPrediction:
    """The scores a worker published for one event (see `events.codec.encode_predictions`)."""

    event_id: str
    event_time_ms: int
    onnx: float
    river: float | None  # None while the worker had no River snapshot, or adaptation is off
    final: float
    replayed: bool = False
    scored_at_ms: int = 0
    learned: int | None = None  # a replica's learn sequence when it scored (`v@learned`)


def parse_prediction(raw: bytes | None) -> ServedPrediction | None:
    """A prediction record → its served scores; None for anything malformed."""
    try:
        data = orjson.loads(raw or b"")
        scores = data["scores"]
        river = scores.get("river")
        return ServedPrediction(
            str(data["event_id"]),
            int(data["event_time"]),
            float(scores["onnx"]),
            None if river is None else float(river),
            float(data["score"]),
            bool(data.get("replayed", False)),
            int(data.get("scored_at") or 0),
            learned_sequence(data.get("adaptation_version")),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


@dataclass
class ServedMetrics:
    """Prequential metrics of the served outputs per window start, and how the join went."""

    task: Task
    windows: dict[int, dict[str, WindowMetrics]] = field(default_factory=dict)
    labels: int = 0  # well-formed label records read
    joined: int = 0  # … that found a published prediction
    unmatched: int = 0  # … that found none (not scored, or published after the read began)
    # per example learned, label produced → first prediction that reflected it (replicas)
    freshness_ms: np.ndarray | None = None

    def window(self, start: int) -> dict[str, WindowMetrics]:
        return self.windows.get(start) or {o: WindowMetrics.new(self.task) for o in OUTPUTS}

    def total(self) -> dict[str, WindowMetrics]:
        out = {o: WindowMetrics.new(self.task) for o in OUTPUTS}
        for outputs in self.windows.values():
            out = {o: out[o].merge(outputs[o]) for o in OUTPUTS}
        return out

    def join_counts(self) -> dict[str, Any]:
        return {"labels": self.labels, "joined": self.joined, "unmatched": self.unmatched}


def served_predictions(predictions: Iterable[ServedPrediction]) -> dict[str, ServedPrediction]:
    """One prediction per event id: the first published, a replay's only when no other was
    (a rebuild republishes ids with `replayed`; the first one is what was acted on)."""
    out: dict[str, ServedPrediction] = {}
    for p in predictions:
        known = out.get(p.event_id)
        if known is None or (known.replayed and not p.replayed):
            out[p.event_id] = p
    return out


def served_metrics(
    labels: Iterable[LabelRecord],
    predictions: Iterable[ServedPrediction],
    *,
    task: Task,
    window_ms: int,
    threshold: float,
) -> ServedMetrics:
    """Each label record (one per label offset, as the learner counts) scored against the
    prediction served for its event id, in the window of the prediction's event time."""
    served = served_predictions(predictions)
    result = ServedMetrics(task)
    columns: dict[int, dict[str, list[float]]] = {}
    for label in labels:
        result.labels += 1
        p = served.get(label.event_id)
        if p is None:
            result.unmatched += 1
            continue
        result.joined += 1
        c = columns.setdefault(
            window_start(p.event_time_ms, window_ms),
            {"y": [], "onnx": [], "final": [], "river_y": [], "river": []},
        )
        c["y"].append(label.label)
        c["onnx"].append(p.onnx)
        c["final"].append(p.final)
        if p.river is not None:
            c["river_y"].append(label.label)
            c["river"].append(p.river)
    for start, c in sorted(columns.items()):
        metrics = {o: WindowMetrics.new(task) for o in OUTPUTS}
        for name, ys in (("onnx", "y"), ("final", "y"), ("river", "river_y")):
            metrics[name].update(np.array(c[ys]), np.array(c[name]), threshold=threshold)
        result.windows[start] = metrics
    return result


def served_freshness(
    produced_ms: np.ndarray, scored_at_ms: np.ndarray, learned: np.ndarray
) -> np.ndarray:
    """Per label, in learn order (`produced_ms[s]`: when the label of learn sequence `s` was
    produced): the time until the first prediction scored by a model that had learned it,
    from the predictions' `scored_at` and the learn sequence their model had (`learned`: every
    example below it applied; a replica's adaptation version `v@learned`). NaN for labels no
    prediction reflected (the stream ended first)."""
    order = np.argsort(scored_at_ms, kind="stable")
    times = np.asarray(scored_at_ms, dtype=np.float64)[order]
    reach = np.maximum.accumulate(np.asarray(learned, dtype=np.int64)[order])
    # The first prediction whose model had learned sequence s is the first with reach > s.
    first = np.searchsorted(reach, np.arange(len(produced_ms)), side="right")
    out = np.full(len(produced_ms), np.nan)
    hit = first < len(times)
    out[hit] = times[first[hit]] - np.asarray(produced_ms, dtype=np.float64)[hit]
    return out


def learned_sequence(adaptation_version: str | None) -> int | None:
    """The learn sequence in a replica's adaptation version (`7@1234` → 1234), else None."""
    if not adaptation_version or "@" not in adaptation_version:
        return None
    try:
        return int(adaptation_version.rsplit("@", 1)[1])
    except ValueError:
        return None
