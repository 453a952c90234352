"""The overlap's bookkeeping: in-flight batches leave revoked partitions' events, a log
write gates its batch's offsets, and a gate that says no leaves the offsets unstored."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest

from streams.events.codec import decode_batch
from streams.events.schema import EventValidator
from streams.worker.consumer import MessageBatch
from streams.worker.delivery import AtLeastOnceOutput, OutputBatch, OutputTopics
from streams.worker.metrics import WorkerMetrics
from streams.worker.overlap import InFlight, LogWrite, RedisLane
from streams.worker.scoring import ScoredBatch
from tests.unit.streams.worker.test_scoring import END_MS, SPEC, Msg, events

TOPIC = SPEC.topics.events


def in_flight(n: int, partitions: int) -> InFlight:
    messages = [
        Msg(orjson.dumps(e), str(e["card_id"]).encode(), i % partitions, 100 + i)
        for i, e in enumerate(events(n))
    ]
    decoded = decode_batch(
        messages, EventValidator(SPEC.event), max_bytes=SPEC.event.max_bytes, now_ms=END_MS
    )
    assert len(decoded) == n  # every event scorable
    return InFlight(MessageBatch(messages, 0.0), decoded)  # type: ignore[arg-type]


def test_an_in_flight_batch_keeps_only_the_events_of_partitions_not_revoked() -> None:
    batch = in_flight(30, partitions=3)
    assert batch.owned_events() is batch.decoded  # nothing revoked: the batch as it is

    batch.revoked |= {(TOPIC, 1)}

    owned = batch.owned_events()
    expected = [i for i in range(30) if i % 3 != 1]
    assert owned.ids.tolist() == [batch.decoded.ids[i] for i in expected]
    assert set(owned.partitions.tolist()) == {0, 2}


def test_a_revoked_partition_leaves_no_offset_even_when_it_is_assigned_back() -> None:
    # Its events were left out of the scoring, so committing its offsets would lose them
    # (the chaos run's exactly-once hang: partitions lost in an outage, assigned back).
    batch = in_flight(30, partitions=3)
    assert batch.owned_batch() is batch.batch
    batch.revoked |= {(TOPIC, 2)}

    offsets = batch.owned_batch().next_offsets()

    assert set(offsets) == {(TOPIC, 0), (TOPIC, 1)}
    full = batch.batch.next_offsets()
    assert offsets == {tp: full[tp] for tp in offsets}


def test_a_log_write_is_durable_only_once_it_succeeded() -> None:
    result: ScoredBatch = None  # type: ignore[assignment]  # not read by LogWrite
    ok: Future[None] = Future()
    writing = LogWrite(ok, result)
    assert not writing.durable(0.01)  # still running
    ok.set_result(None)
    assert writing.durable(None)

    failed: Future[None] = Future()
    failed.set_exception(ConnectionError("redis went away"))
    retried = LogWrite(failed, result)
    assert not retried.durable(None)
    retried.written()  # the worker retried it on its own thread
    assert retried.durable(0)


def test_the_redis_lane_runs_features_and_log_writes_in_submission_order() -> None:
    lane = RedisLane()
    seen: list[tuple[str, int]] = []
    release = threading.Event()

    def feature(i: int) -> Any:
        if i == 0:
            assert release.wait(5)  # the first call holds the lane
        seen.append(("features", i))
        return i

    first = lane.features(lambda: feature(0))
    writing = lane.log(lambda: seen.append(("log", 0)), None)  # type: ignore[arg-type]
    second = lane.features(lambda: feature(1))
    assert not writing.durable(0.05)  # queued behind the first feature call
    release.set()
    assert (first.result(5), second.result(5)) == (0, 1)
    assert writing.durable(5)
    assert seen == [("features", 0), ("log", 0), ("features", 1)]
    lane.close()


def _no_broker(_timeout_s: float) -> bool:
    return False


@dataclass
class RecordedOffsets:
    """A `SourceOffsets` that records what was stored; `answers` says whether a broker
    answers (by default none does)."""

    stored: list[dict[tuple[str, int], int]]
    answers: Callable[[float], bool] = _no_broker

    def store_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        self.stored.append(offsets)

    def commit(self) -> None:
        pass

    def group_metadata(self) -> Any:
        return None

    def broker_answers(self, timeout_s: float) -> bool:
        return self.answers(timeout_s)


@pytest.mark.parametrize("durable", [True, False])
def test_offsets_are_stored_only_once_the_batch_gate_says_durable(durable: bool) -> None:
    batch = in_flight(8, partitions=2)
    offsets = RecordedOffsets([])
    asked: list[float | None] = []

    def gate(timeout_s: float | None) -> bool:
        asked.append(timeout_s)
        return durable

    # No broker: the batch produces nothing, so flush() has nothing to wait for.
    output = AtLeastOnceOutput(
        {"bootstrap.servers": "127.0.0.1:1"},
        offsets,
        OutputTopics("predictions", "dead-letters"),
        WorkerMetrics(),
    )
    try:
        output.send(OutputBatch(source=batch.batch, durable=gate))
        assert offsets.stored == [] and asked == []  # not before the next step
        output.idle()
    finally:
        output.close()

    assert len(asked) == 1
    expected = batch.batch.next_offsets()
    assert offsets.stored == ([expected] if durable else [])
    assert expected == {(TOPIC, p): 100 + max(np.arange(p, 8, 2)) + 1 for p in (0, 1)}
