"""Bytes in, bytes out: decode a micro-batch of Kafka messages and encode its predictions.

This is the only per-event Python on the hot path (JSON decode + validation, JSON encode);
everything between works on whole batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from streams.events.dead_letters import DeadLetter, Reason
from streams.events.schema import EventValidator, InvalidEvent


@dataclass(slots=True)
class DecodedBatch:
    """The scorable events of one micro-batch, as parallel lists, plus the rejects."""

    records: list[dict[str, Any]] = field(default_factory=list)
    event_time_ms: list[int] = field(default_factory=list)
    sources: list[tuple[str, int, int]] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # the raw message values, so an event rejected after decoding (a feature-script error,
    # a non-finite score) is dead-lettered unchanged like any other
    values: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def without(self, positions: set[int]) -> DecodedBatch:
        """The batch minus the events at `positions` (used when a partition is revoked)."""
        keep = [i for i in range(len(self.records)) if i not in positions]
        return DecodedBatch(
            [self.records[i] for i in keep],
            [self.event_time_ms[i] for i in keep],
            [self.sources[i] for i in keep],
            [self.keys[i] for i in keep],
            self.dead_letters,
            [self.values[i] for i in keep],
        )

    def dead_letter(self, i: int, reason: str, message: str) -> DeadLetter:
        """Event `i` as a dead letter: its source, key and raw value, with why."""
        topic, partition, offset = self.sources[i]
        return DeadLetter(reason, message, topic, partition, offset, self.keys[i], self.values[i])


def decode_batch(
    messages: Sequence[Any], validator: EventValidator, *, max_bytes: int, now_ms: int
) -> DecodedBatch:
    """Decode and validate each message; a bad one becomes a dead letter, never an exception."""
    out = DecodedBatch()
    for msg in messages:
        value = msg.value()
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        try:
            if value is None:
                raise InvalidEvent(Reason.EMPTY, "message has no value (tombstone)")
            if len(value) > max_bytes:
                raise InvalidEvent(
                    Reason.OVERSIZED,
                    f"message is {len(value)} bytes; event.max_bytes is {max_bytes}",
                )
            try:
                event = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise InvalidEvent(Reason.DECODE_ERROR, f"not valid JSON: {exc}") from None
            record, time_ms = validator.validate(event, now_ms)
        except InvalidEvent as bad:
            out.dead_letters.append(
                DeadLetter(bad.reason, bad.message, topic, partition, offset, msg.key(), value)
            )
            continue
        out.records.append(record)
        out.event_time_ms.append(time_ms)
        out.sources.append((topic, partition, offset))
        out.keys.append(msg.key())
        out.values.append(value)
    return out


@dataclass(frozen=True, slots=True)
class Scored:
    """Batch-level outputs of scoring, all aligned with DecodedBatch.records."""

    features: np.ndarray  # (n, k) feature matrix as scored
    scores: np.ndarray  # (n,) final score
    onnx_scores: np.ndarray  # (n,)
    river_scores: np.ndarray | None  # (n,) when adaptation is on
    decisions: np.ndarray  # (n,) bool
    late: np.ndarray  # (n,) bool
    replayed: np.ndarray  # (n,) bool
    model_name: str
    model_version: str
    adaptation_version: str | None
    scored_at_ms: int


def encode_predictions(
    batch: DecodedBatch, scored: Scored, *, id_field: str, entities: tuple[str, ...]
) -> list[bytes]:
    """One JSON prediction per event, in batch order."""
    model = {"name": scored.model_name, "version": scored.model_version}
    scores = scored.scores.tolist()
    onnx = scored.onnx_scores.tolist()
    river = scored.river_scores.tolist() if scored.river_scores is not None else None
    decisions = scored.decisions.tolist()
    late = scored.late.tolist()
    replayed = scored.replayed.tolist()
    dumps = orjson.dumps
    out: list[bytes] = []
    for i, record in enumerate(batch.records):
        out.append(
            dumps(
                {
                    "event_id": record[id_field],
                    "keys": {e: str(record[e]) for e in entities},
                    "score": scores[i],
                    "scores": {"onnx": onnx[i]}
                    if river is None
                    else {"onnx": onnx[i], "river": river[i]},
                    "decision": decisions[i],
                    "model": model,
                    "adaptation_version": scored.adaptation_version,
                    "event_time": batch.event_time_ms[i],
                    "scored_at": scored.scored_at_ms,
                    "late": late[i],
                    "replayed": replayed[i],
                }
            )
        )
    return out


def encode_feature_records(
    batch: DecodedBatch, scored: Scored, names: Sequence[str], id_field: str
) -> list[bytes]:
    """Feature vectors as scored, for point-in-time-correct training sets."""
    rows = scored.features.tolist()
    dumps = orjson.dumps
    version = scored.model_version
    return [
        dumps(
            {
                "event_id": record[id_field],
                "event_time": batch.event_time_ms[i],
                "features": dict(zip(names, rows[i], strict=True)),
                "model_version": version,
                "replayed": bool(scored.replayed[i]),
            }
        )
        for i, record in enumerate(batch.records)
    ]
