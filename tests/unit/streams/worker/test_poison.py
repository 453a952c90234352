"""A feature-script error is isolated to the events that cause it."""

from dataclasses import dataclass

import numpy as np
import orjson
import redis

from features.store import FeatureBatch, FeatureResult
from streams.events.codec import DecodedBatch, decode_batch
from streams.events.schema import EventSchema, EventValidator
from streams.worker.scoring import isolate_poison

SCHEMA = EventSchema.model_validate(
    {"id": "event_id", "time": {"field": "t", "unit": "ms"}, "entities": ["card"]}
)


@dataclass
class Msg:
    _value: bytes | None
    _offset: int

    def value(self):
        return self._value

    def key(self):
        return orjson.loads(self._value)["event_id"].encode() if self._value[:1] == b"{" else None

    def topic(self):
        return "ev"

    def partition(self):
        return 0

    def offset(self):
        return self._offset


class OneBadEventStore:
    names = ("count",)

    def __init__(self, bad_id: str) -> None:
        self.bad_id = bad_id
        self.calls: list[list[str]] = []

    def update_and_read(self, batch: FeatureBatch) -> FeatureResult:
        ids = [r["event_id"] for r in batch.records]
        self.calls.append(ids)
        if self.bad_id in ids:
            raise redis.ResponseError("user_script:1: bad value")
        n = len(ids)
        return FeatureResult(np.full((n, 1), 7.0), np.zeros(n, bool), np.zeros(n, bool))

    def close(self) -> None:
        pass


def event(event_id: str) -> bytes:
    return orjson.dumps({"event_id": event_id, "t": 1000, "card": "c"})


def batch_of(*ids: str) -> DecodedBatch:
    """Offset 0 is not JSON (an early dead letter); the events follow at offsets 1, 2, ..."""
    messages = [Msg(b"x", 0)] + [Msg(event(i), n + 1) for n, i in enumerate(ids)]
    return decode_batch(messages, EventValidator(SCHEMA), max_bytes=1000, now_ms=2000)


def test_the_bad_event_is_dead_lettered_and_the_others_are_scored():
    store = OneBadEventStore("b")
    features, kept = isolate_poison(store, batch_of("a", "b", "c"))
    assert [r["event_id"] for r in kept.records] == ["a", "c"]
    assert kept.sources == [("ev", 0, 1), ("ev", 0, 3)]
    assert features.values.shape == (2, 1)
    assert [d.reason for d in kept.dead_letters] == ["decode_error", "feature_error"]
    poison = kept.dead_letters[1]
    assert (poison.offset, poison.key, poison.value) == (2, b"b", event("b"))
    assert "bad value" in poison.message
    assert store.calls == [["a"], ["b"], ["c"]]  # one event at a time


def test_a_batch_of_only_poison_yields_no_rows():
    features, kept = isolate_poison(OneBadEventStore("a"), batch_of("a"))
    assert kept.records == [] and features.values.shape == (0, 1)
