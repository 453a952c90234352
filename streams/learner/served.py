"""What the workers served, scored: published predictions joined by event id with the
labels, prequential metrics per event-time window (the same as the learner's table).

Pure: records in, metrics out, so a unit test checks the join without Kafka. The learner's
own numbers differ on purpose: its River predicts each label with its newest model just
before learning it, while a worker served an older snapshot.
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
