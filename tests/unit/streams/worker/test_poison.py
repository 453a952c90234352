"""A feature-script error is isolated to the events that cause it."""

import numpy as np
import redis

from features.store import FeatureBatch, FeatureResult
from streams.events.codec import DecodedBatch
from streams.events.dead_letters import DeadLetter
from streams.worker.pipeline import dead_letter_unscorable, isolate_poison


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


def batch_of(*ids: str) -> DecodedBatch:
    early = DeadLetter("decode_error", "not JSON", "ev", 0, 0, None, b"x")
    return DecodedBatch(
        records=[{"event_id": i} for i in ids],
        event_time_ms=[1000 * n for n in range(len(ids))],
        sources=[("ev", 0, n + 1) for n in range(len(ids))],
        keys=[i.encode() for i in ids],
        dead_letters=[early],
        values=[b'{"event_id": "%s"}' % i.encode() for i in ids],
    )


def test_the_bad_event_is_dead_lettered_and_the_others_are_scored():
    store = OneBadEventStore("b")
    features, kept = isolate_poison(store, batch_of("a", "b", "c"))
    assert [r["event_id"] for r in kept.records] == ["a", "c"]
    assert kept.sources == [("ev", 0, 1), ("ev", 0, 3)]
    assert features.values.shape == (2, 1)
    assert [d.reason for d in kept.dead_letters] == ["decode_error", "feature_error"]
    poison = kept.dead_letters[1]
    assert (poison.offset, poison.key, poison.value) == (2, b"b", b'{"event_id": "b"}')
    assert "bad value" in poison.message
    assert store.calls == [["a"], ["b"], ["c"]]  # one event at a time


def test_a_batch_of_only_poison_yields_no_rows():
    features, kept = isolate_poison(OneBadEventStore("a"), batch_of("a"))
    assert kept.records == [] and features.values.shape == (0, 1)


def test_events_with_a_non_finite_score_are_dead_lettered_with_their_raw_value():
    batch = batch_of("a", "b", "c", "d")
    final = np.array([0.2, np.nan, 0.9, np.inf])
    onnx = np.array([0.2, np.nan, 0.9, 0.5])
    kept = dead_letter_unscorable(batch, np.flatnonzero(~np.isfinite(final)), final, onnx)
    assert [r["event_id"] for r in kept.records] == ["a", "c"]
    assert kept.values == [b'{"event_id": "a"}', b'{"event_id": "c"}']
    assert [d.reason for d in kept.dead_letters] == [
        "decode_error",
        "score_not_finite",
        "score_not_finite",
    ]
    b, d = kept.dead_letters[1:]
    assert (b.offset, b.key, b.value) == (2, b"b", b'{"event_id": "b"}')
    assert "the score is nan" in b.message and "the score is inf" in d.message
    assert len(batch.records) == 4  # the input batch is left as it was
