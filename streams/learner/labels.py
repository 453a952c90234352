"""Label records: `{event_id, label, label_time}` from the labels topic, and where they came
from (partition, offset), the identity the exactly-once bookkeeping works on."""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass
class LabelRecord:
    """One label, where it lies in the labels topic, and its join attempts so far."""

    event_id: str
    label: float
    label_time_ms: int
    partition: int
    offset: int
    attempts: int = 0
    due: float = 0.0
    produced_ms: int = 0  # the label record's Kafka timestamp (freshness starts there)


def parse_label(raw: bytes | None, partition: int, offset: int) -> LabelRecord | None:
    """`{event_id, label, label_time}` → a record; None for anything malformed."""
    try:
        data = orjson.loads(raw or b"")
        label = data["label"]
        if isinstance(label, bool):
            label = float(label)
        return LabelRecord(
            str(data["event_id"]),
            float(label),
            int(data.get("label_time") or 0),
            partition,
            offset,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
