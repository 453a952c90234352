"""Bytes in, bytes out: decode a micro-batch of Kafka messages and encode its predictions.

This is the only per-event Python on the hot path (JSON decode + validation, JSON encode);
everything between works on whole batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from streams.events.dead_letters import DeadLetter, Reason
from streams.events.schema import EventValidator, InvalidEvent


def _objects(items: Sequence[Any]) -> np.ndarray:
    """A 1-d object array of `items` (np.array would turn a list of tuples into 2-d)."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


@dataclass(slots=True)
class DecodedBatch:
    """The scorable events of one micro-batch as columns (row i is one event), plus rejects.

    The columns are decoded once and travel with the batch; shrinking it (poison events,
    non-finite scores, revoked partitions) is one keep-mask over all of them (`keep`).
    """

    records: list[dict[str, Any]]
    ids: np.ndarray  # (n,) object: the event ids as text
    keys: np.ndarray  # (n,) object: the output keys (the key field as bytes, else the message's)
    entities: dict[str, np.ndarray]  # entity field -> (n,) object: its values as text
    event_time_ms: np.ndarray  # (n,) int64
    topics: np.ndarray  # (n,) object
    partitions: np.ndarray  # (n,) int64
    offsets: np.ndarray  # (n,) int64
    # the raw message values and keys, so an event rejected after decoding (a feature-script
    # error, a non-finite score) is dead-lettered unchanged like any other
    values: np.ndarray  # (n,) object
    message_keys: np.ndarray  # (n,) object
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def sources(self) -> list[tuple[str, int, int]]:
        """(topic, partition, offset) per event, as the feature store takes them."""
        return list(
            zip(self.topics.tolist(), self.partitions.tolist(), self.offsets.tolist(), strict=True)
        )

    def in_partitions(self, owned: Iterable[tuple[str, int]]) -> np.ndarray:
        """Mask of the events whose (topic, partition) is in `owned`."""
        mask = np.zeros(len(self.records), dtype=bool)
        for topic, partition in owned:
            mask |= (self.partitions == partition) & (self.topics == topic)
        return mask

    def keep(self, mask: np.ndarray) -> DecodedBatch:
        """The events where `mask` is true (the dead letters are kept as they are)."""
        if mask.all():
            return self
        rows = np.flatnonzero(mask)
        records = self.records
        return DecodedBatch(
            [records[i] for i in rows.tolist()],
            self.ids[rows],
            self.keys[rows],
            {name: column[rows] for name, column in self.entities.items()},
            self.event_time_ms[rows],
            self.topics[rows],
            self.partitions[rows],
            self.offsets[rows],
            self.values[rows],
            self.message_keys[rows],
            list(self.dead_letters),
        )

    def reject(self, bad: np.ndarray, reason: str, messages: Sequence[str]) -> DecodedBatch:
        """The batch without the events where `bad` is true, which become dead letters of
        `reason` (one message each, in batch order) with their raw key and value."""
        rows = np.flatnonzero(bad).tolist()
        if len(rows) != len(messages):
            raise ValueError(f"{len(rows)} rejected events but {len(messages)} messages")
        kept = self.keep(~bad)
        if kept is self:
            return self
        kept.dead_letters.extend(
            DeadLetter(
                reason,
                message,
                self.topics[i],
                int(self.partitions[i]),
                int(self.offsets[i]),
                self.message_keys[i],
                self.values[i],
            )
            for i, message in zip(rows, messages, strict=True)
        )
        return kept

    @classmethod
    def empty(cls, entities: Sequence[str] = ()) -> DecodedBatch:
        """A batch of no events (and no dead letters)."""
        none = _objects([])
        ints = np.empty(0, dtype=np.int64)
        return cls([], none, none, {e: none for e in entities}, ints, none, ints, ints, none, none)


def decode_batch(
    messages: Sequence[Any], validator: EventValidator, *, max_bytes: int, now_ms: int
) -> DecodedBatch:
    """Decode and validate each message; a bad one becomes a dead letter, never an exception."""
    schema = validator.schema
    records: list[dict[str, Any]] = []
    times: list[int] = []
    topics: list[str] = []
    partitions: list[int] = []
    offsets: list[int] = []
    message_keys: list[bytes | None] = []
    values: list[bytes] = []
    dead: list[DeadLetter] = []
    for msg in messages:
        value = msg.value()
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
            dead.append(
                DeadLetter(
                    bad.reason,
                    bad.message,
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                    msg.key(),
                    value,
                )
            )
            continue
        records.append(record)
        times.append(time_ms)
        topics.append(msg.topic())
        partitions.append(msg.partition())
        offsets.append(msg.offset())
        message_keys.append(msg.key())
        values.append(value)
    id_field, key_field = schema.id, schema.key
    raw_keys = _objects(message_keys)
    return DecodedBatch(
        records,
        _objects([str(r[id_field]) for r in records]),
        _objects([str(r[key_field]).encode() for r in records]) if key_field else raw_keys,
        {e: _objects([str(r[e]) for r in records]) for e in schema.entities},
        np.array(times, dtype=np.int64),
        _objects(topics),
        np.array(partitions, dtype=np.int64),
        np.array(offsets, dtype=np.int64),
        _objects(values),
        raw_keys,
        dead,
    )


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


def encode_predictions(batch: DecodedBatch, scored: Scored) -> list[bytes]:
    """One JSON prediction per event, in batch order."""
    model = {"name": scored.model_name, "version": scored.model_version}
    scores = scored.scores.tolist()
    onnx = scored.onnx_scores.tolist()
    river = scored.river_scores.tolist() if scored.river_scores is not None else None
    decisions = scored.decisions.tolist()
    late = scored.late.tolist()
    replayed = scored.replayed.tolist()
    times = batch.event_time_ms.tolist()
    # The "keys" objects filled column by column: a third of the cost of one dict(zip()) each.
    entity_keys: list[dict[str, str]] = [{} for _ in range(len(times))]
    for name, column in batch.entities.items():
        for keys, value in zip(entity_keys, column.tolist(), strict=True):
            keys[name] = value
    adaptation_version = scored.adaptation_version
    scored_at = scored.scored_at_ms
    dumps = orjson.dumps
    out: list[bytes] = []
    for i, event_id in enumerate(batch.ids.tolist()):
        out.append(
            dumps(
                {
                    "event_id": event_id,
                    "keys": entity_keys[i],
                    "score": scores[i],
                    "scores": {"onnx": onnx[i]}
                    if river is None
                    else {"onnx": onnx[i], "river": river[i]},
                    "decision": decisions[i],
                    "model": model,
                    "adaptation_version": adaptation_version,
                    "event_time": times[i],
                    "scored_at": scored_at,
                    "late": late[i],
                    "replayed": replayed[i],
                }
            )
        )
    return out


def encode_feature_records(
    batch: DecodedBatch, scored: Scored, names: Sequence[str]
) -> list[bytes]:
    """Feature vectors as scored, for point-in-time-correct training sets."""
    rows = scored.features.tolist()
    times = batch.event_time_ms.tolist()
    replayed = scored.replayed.tolist()
    dumps = orjson.dumps
    version = scored.model_version
    return [
        dumps(
            {
                "event_id": event_id,
                "event_time": times[i],
                "features": dict(zip(names, rows[i], strict=True)),
                "model_version": version,
                "replayed": replayed[i],
            }
        )
        for i, event_id in enumerate(batch.ids.tolist())
    ]
