"""What the worker knows its feature state holds (the batch's floors), and the alarm it
raises once when the store says the state is lost."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from features.store import StateLost
from streams.worker.state_guard import AppliedOffsets, StateLossAlarm


class Committed:
    """The group's committed offsets, counting lookups; `down` makes them fail."""

    def __init__(self, offsets: dict[tuple[str, int], int]) -> None:
        self.offsets = offsets
        self.asked: list[list[tuple[str, int]]] = []
        self.down = False

    def __call__(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        self.asked.append(partitions)
        if self.down:
            raise ConnectionError("broker unreachable")
        return {tp: self.offsets[tp] for tp in partitions if tp in self.offsets}


def test_committed_partitions_have_history_and_fresh_ones_none() -> None:
    committed = Committed({("ev", 0): 120})
    applied = AppliedOffsets(committed)
    assert applied.floors([("ev", 0), ("ev", 1)]) == {("ev", 0): -1}
    assert applied.floors([("ev", 0), ("ev", 1)]) == {("ev", 0): -1}
    assert committed.asked == [[("ev", 0), ("ev", 1)]]  # once per partition, not per batch


def test_delivered_offsets_become_the_floors() -> None:
    applied = AppliedOffsets(Committed({}))
    assert applied.floors([("ev", 3)]) == {}
    applied.delivered([("ev", 3, 10), ("ev", 3, 12), ("ev", 4, 5)])
    applied.delivered([("ev", 3, 11)])  # a replay of older offsets lowers nothing
    assert applied.floors([("ev", 3), ("ev", 4)]) == {("ev", 3): 12, ("ev", 4): 5}


def test_an_unreachable_broker_defers_the_lookup_to_the_next_batch() -> None:
    committed = Committed({("ev", 0): 7})
    committed.down = True
    applied = AppliedOffsets(committed)
    assert applied.floors([("ev", 0)]) == {}
    committed.down = False
    assert applied.floors([("ev", 0)]) == {("ev", 0): -1}


class Gauge:
    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = value


def test_the_alarm_alerts_once_names_the_fix_and_clears(caplog: pytest.LogCaptureFixture) -> None:
    sent: list[dict[str, Any]] = []
    gauge = Gauge()
    alarm = StateLossAlarm(
        pipeline="p", namespace="ns", send=sent.append, gauge=gauge, clock=lambda: 12.5
    )
    caplog.set_level(logging.ERROR)
    for _ in range(3):  # every retry of the paused batch raises again
        alarm.raised(StateLost("the state epoch e1 is gone"))
    assert sent == [
        {
            "kind": "feature_state_lost",
            "pipeline": "p",
            "namespace": "ns",
            "reason": "the state epoch e1 is gone",
            "fix": "streamfer rebuild -s SPEC",
            "time_ms": 12_500,
        }
    ]
    assert gauge.value == 1
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 1 and "streamfer rebuild -s SPEC" in lines[0]
    alarm.cleared()
    assert gauge.value == 0 and not alarm.active
    alarm.raised(StateLost("again"))  # a second loss is a second alert
    assert len(sent) == 2
