"""The supervisor's restart delay doubles while a worker keeps crashing and starts over
after a healthy run."""

from __future__ import annotations

from streams.worker.restarts import RestartBackoff


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def crash_after(backoff: RestartBackoff, clock: Clock, slot: int, ran_s: float) -> float:
    """Start `slot`, let it run `ran_s`, let it die: the delay before its restart."""
    backoff.started(slot)
    clock.now += ran_s
    delay = backoff.delay(slot)
    clock.now += delay
    return delay


def test_crashes_in_a_row_double_the_delay_up_to_the_maximum() -> None:
    clock = Clock()
    backoff = RestartBackoff(initial_s=1, maximum_s=30, healthy_s=60, clock=clock)
    delays = [crash_after(backoff, clock, 0, ran_s=2) for _ in range(8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_healthy_run_resets_the_delay() -> None:
    clock = Clock()
    backoff = RestartBackoff(initial_s=1, maximum_s=30, healthy_s=60, clock=clock)
    for _ in range(6):
        crash_after(backoff, clock, 0, ran_s=1)
    assert crash_after(backoff, clock, 0, ran_s=59.9) == 30  # not healthy long enough
    assert crash_after(backoff, clock, 0, ran_s=60) == 1
    assert crash_after(backoff, clock, 0, ran_s=1) == 2


def test_slots_back_off_independently() -> None:
    clock = Clock()
    backoff = RestartBackoff(initial_s=1, maximum_s=30, healthy_s=60, clock=clock)
    for _ in range(3):
        crash_after(backoff, clock, 0, ran_s=1)
    assert crash_after(backoff, clock, 1, ran_s=1) == 1
    assert crash_after(backoff, clock, 0, ran_s=1) == 8
