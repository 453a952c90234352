"""Progress: plain periodic lines off a terminal, a live bar on one."""

from __future__ import annotations

import io

from rich.console import Console

from streams.ops.progress import PlainProgress, format_duration, progress_reporter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_every_interval_with_rate_and_eta():
    out = Console(file=io.StringIO(), width=200)
    clock = FakeClock()
    bar = PlainProgress("produce", 10_000, unit="events", console=out, interval_s=5, clock=clock)
    for _ in range(8):
        clock.now += 1
        bar.advance(500)
    bar.close()
    lines = out.file.getvalue().splitlines()
    assert lines == [
        "produce: 2,500/10,000 events (25%), 500 events/s, ETA 15s",
        "produce: done, 4,000 events in 8.0s (500 events/s)",
    ]


def test_plain_lines_without_total():
    out = Console(file=io.StringIO(), width=200)
    clock = FakeClock()
    bar = PlainProgress("rebuild", None, unit="events", console=out, interval_s=1, clock=clock)
    clock.now = 2
    bar.update(300)
    assert out.file.getvalue().strip() == "rebuild: 300 events, 150 events/s"


def test_reporter_picks_plain_off_a_terminal_and_a_bar_on_one():
    plain = Console(file=io.StringIO(), width=200)
    with progress_reporter("bench", 10, console=plain) as bar:
        bar.advance(10)
    assert plain.file.getvalue().startswith("bench: done, 10 events in")

    terminal = Console(file=io.StringIO(), width=200, force_terminal=True)
    with progress_reporter("bench", 10, console=terminal) as bar:
        bar.advance(10)
    text = terminal.file.getvalue()
    assert "bench" in text and "10/10" in text and "events/s" in text


def test_durations_are_short():
    assert [format_duration(s) for s in (4.4, 65, 3725)] == ["4s", "1m05s", "1h02m"]
