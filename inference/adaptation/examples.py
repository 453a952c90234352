"""Training examples as the learner learned them: the record each worker's replica replays.

One example is one label joined with what was scored: the feature row plus the ONNX score
(the River model's columns), the label, the event time, the label's production time (for
the freshness metric), the label's identity in the labels topic (partition, offset: what a
restarted learner adopts), and its learn sequence number `seq` (the learner's labels_seen
before it; a replica applies each seq once, in order). JSON (orjson), one record per
example, so a log offset is a label and lag in records is labels behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import orjson


@dataclass(frozen=True)
class LearnedExamples:
    """A batch of examples in learn order (columns; row i has sequence number seq + i)."""

    seq: int
    matrix: np.ndarray  # (n, k): the River model's columns (features + ONNX score)
    y: np.ndarray
    event_ms: np.ndarray
    label_ms: np.ndarray
    labels: tuple[tuple[int, int], ...]  # (partition, offset) of each label
    promoted: bool = False

    def __len__(self) -> int:
        return len(self.y)


def encode_examples(batch: LearnedExamples) -> list[bytes]:
    """One record per example (the per-event encoding step)."""
    rows = batch.matrix.tolist()
    ys = np.asarray(batch.y, dtype=np.float64).tolist()
    events = np.asarray(batch.event_ms, dtype=np.int64).tolist()
    labels_ms = np.asarray(batch.label_ms, dtype=np.int64).tolist()
    return [
        orjson.dumps(
            {
                "seq": batch.seq + i,
                "x": rows[i],
                "y": ys[i],
                "t": events[i],
                "lt": labels_ms[i],
                "l": batch.labels[i],
                "p": batch.promoted,
            }
        )
        for i in range(len(ys))
    ]


@dataclass(frozen=True)
class DecodedExamples:
    """Records read back from the log, in log order (sequence numbers may repeat after a
    learner restart; the replica skips those it applied)."""

    seq: np.ndarray
    matrix: np.ndarray
    y: np.ndarray
    label_ms: np.ndarray
    labels: tuple[tuple[int, int], ...]
    promoted: bool

    def __len__(self) -> int:
        return len(self.seq)


def decode_examples(values: Sequence[bytes], width: int) -> DecodedExamples:
    """Records → columns; a record that is not an example of `width` columns is dropped
    (logged by the caller as a count), never applied half-read."""
    seq: list[int] = []
    rows: list[list[float]] = []
    ys: list[float] = []
    lts: list[int] = []
    labels: list[tuple[int, int]] = []
    promoted = False
    for raw in values:
        try:
            d = orjson.loads(raw)
            x = d["x"]
            if len(x) != width:
                continue
            seq.append(int(d["seq"]))
            rows.append(x)
            ys.append(float(d["y"]))
            lts.append(int(d.get("lt") or 0))
            p, o = d.get("l") or (-1, -1)
            labels.append((int(p), int(o)))
            promoted = bool(d.get("p", promoted))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    n = len(seq)
    return DecodedExamples(
        np.asarray(seq, dtype=np.int64),
        np.asarray(rows, dtype=np.float64).reshape(n, width),
        np.asarray(ys, dtype=np.float64),
        np.asarray(lts, dtype=np.int64),
        tuple(labels),
        promoted,
    )
