"""A worker busy for longer than its deadline with no batch finished is stalled; a pause for
a known outage is not; the watchdog thread acts on a stall even while the main thread is
stuck in C, and the process exits with EXIT_STALLED."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

from streams.worker.watchdog import EXIT_STALLED, Progress, Stall, Watchdog


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_idle_is_never_stalled() -> None:
    clock = Clock()
    progress = Progress(clock)
    clock.now += 10_000
    assert progress.stalled(120) is None


def test_a_batch_in_flight_past_the_deadline_is_a_stall() -> None:
    clock = Clock()
    progress = Progress(clock)
    with progress.busy("a batch was in flight"):
        clock.now += 120
        assert progress.stalled(120) is None
        clock.now += 1
        assert progress.stalled(120) == Stall(121, "a batch was in flight")
    assert progress.stalled(120) is None  # it finished after all


def test_each_batch_gets_the_whole_deadline() -> None:
    clock = Clock()
    progress = Progress(clock)
    for _ in range(5):
        with progress.busy("a batch was in flight"):
            clock.now += 100
            assert progress.stalled(120) is None
        clock.now += 100  # idle between batches


def test_a_nested_section_counts_from_the_outermost_and_names_the_innermost() -> None:
    clock = Clock()
    progress = Progress(clock)
    with progress.busy("shutting down"):
        clock.now += 100
        with progress.busy("revoking partitions"):
            clock.now += 30
            assert progress.stalled(120) == Stall(130, "revoking partitions")


def test_a_pause_for_an_outage_is_not_a_stall_and_restarts_the_deadline() -> None:
    clock = Clock()
    progress = Progress(clock)
    with progress.busy("a batch was in flight"):
        clock.now += 100
        progress.pause()
        clock.now += 3600  # Redis down for an hour
        assert progress.stalled(120) is None
        progress.resume()
        clock.now += 120
        assert progress.stalled(120) is None
        clock.now += 1
        assert progress.stalled(120) == Stall(121, "a batch was in flight")


def test_the_watchdog_thread_acts_once_on_a_stall() -> None:
    clock = Clock()
    progress = Progress(clock)
    noted: list[Stall] = []
    acted = threading.Event()
    with progress.busy("a batch was in flight"):
        clock.now += 121
        with Watchdog(
            progress, 120, on_stall=noted.append, act=lambda _s: acted.set(), interval_s=0.01
        ):
            assert acted.wait(5), "the watchdog did not act"
    assert noted == [Stall(121, "a batch was in flight")]


STUCK_WORKER = textwrap.dedent(
    """
    import logging, time
    from streams.worker.watchdog import Progress, Watchdog
    logging.basicConfig(level=logging.INFO)
    progress = Progress()
    with Watchdog(progress, 0.3, interval_s=0.05):
        with progress.busy("a batch was in flight"):
            time.sleep(60)  # the main thread blocked in C, as in librdkafka's cnd_wait
    """
)


def test_a_stuck_process_says_so_in_one_line_and_exits() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", STUCK_WORKER], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == EXIT_STALLED
    lines = [line for line in proc.stderr.splitlines() if "no batch finished" in line]
    assert len(lines) == 1, proc.stderr
    assert "while a batch was in flight" in lines[0]
    # where the main thread is stuck: the line of the blocking call
    sleep_line = STUCK_WORKER.splitlines().index(
        next(line for line in STUCK_WORKER.splitlines() if "time.sleep" in line)
    )
    assert f"main thread at /<string>:{sleep_line + 1} in <module>" in lines[0]
    assert lines[0].endswith("exiting for the supervisor to restart")
