"""`AckWatch`: when an at-least-once producer waited on counts as stuck (and is replaced)."""

from __future__ import annotations

from streams.worker.delivery import AckWatch
from tests.unit.streams.worker.test_kafka_log import Clock


def test_an_outage_is_never_stuck_however_long() -> None:
    clock = Clock(0.0)
    watch = AckWatch(60.0, 10, clock)
    for _ in range(100):  # 1000 s of waits, no broker answering
        clock.now += 10
        assert not watch.stuck(10, lambda _timeout: False)


def test_the_stall_counts_from_the_broker_answering_not_from_the_last_ack() -> None:
    clock = Clock(0.0)
    watch = AckWatch(60.0, 10, clock)
    answers = False
    for _ in range(9):  # a 90 s outage
        clock.now += 10
        assert not watch.stuck(10, lambda _timeout: answers)
    answers = True  # back: the producer gets its reconnect's time
    for _ in range(6):
        clock.now += 10
        assert not watch.stuck(10, lambda _timeout: answers)
    clock.now += 10
    assert watch.stuck(10, lambda _timeout: answers)  # 60 s answered, nothing acknowledged


def test_any_acknowledgement_restarts_the_clock() -> None:
    clock = Clock(0.0)
    watch = AckWatch(60.0, 10, clock)
    left = 10
    while left > 0:  # one record acknowledged every 50 s: slow, not stuck
        for _ in range(5):
            clock.now += 10
            assert not watch.stuck(left, lambda _timeout: True)
        left -= 1


def test_a_broker_gone_again_at_the_deadline_is_an_outage_again() -> None:
    clock = Clock(0.0)
    watch = AckWatch(60.0, 10, clock)
    clock.now += 10
    assert not watch.stuck(10, lambda _timeout: True)  # answering from here
    clock.now += 70
    assert not watch.stuck(10, lambda _timeout: False)  # but not now: wait on
    assert watch.stuck(10, lambda _timeout: True)
