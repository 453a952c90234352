"""Progress of long commands (produce, replay, rebuild, bench): rate and time left.

In a terminal a rich progress bar redraws in place; when the output is a file or a pipe
(CI logs, `nohup`, `| tee`) a plain line is written every `interval_s` seconds instead,
so logs stay readable and grep-able. Callers only say how far they got:

    with progress_reporter("produce", total=1_000_000, unit="events") as bar:
        for chunk in chunks:
            ...
            bar.advance(len(chunk))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class ProgressReporter(Protocol):
    """What a long command calls; cheap enough to call once per batch."""

    def advance(self, n: int = 1) -> None:
        """`n` more units are done."""
        ...

    def update(self, completed: int, total: int | None = None) -> None:
        """`completed` units are done in all (and the total changed, if given)."""
        ...


def format_duration(seconds: float) -> str:
    """12s, 3m05s, 2h07m: short enough for a log line."""
    s = max(round(seconds), 0)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class PlainProgress:
    """One line every `interval_s` seconds (and one at the end) on a non-terminal output.

    The rate on each line is over the last interval (what is happening now), the ETA is
    the remainder at that rate, and the closing line gives the average over the whole run.
    """

    def __init__(
        self,
        description: str,
        total: int | None,
        *,
        unit: str,
        console: Console,
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.completed = 0
        self._console = console
        self._interval = interval_s
        self._clock = clock
        self._started = clock()
        self._last_time = self._started
        self._last_done = 0

    def advance(self, n: int = 1) -> None:
        self.completed += n
        self._maybe_report()

    def update(self, completed: int, total: int | None = None) -> None:
        self.completed = completed
        if total is not None:
            self.total = total
        self._maybe_report()

    def _maybe_report(self) -> None:
        now = self._clock()
        if now - self._last_time < self._interval:
            return
        rate = (self.completed - self._last_done) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_done = now, self.completed
        self._console.print(self.line(rate), highlight=False, soft_wrap=True)

    def line(self, rate: float) -> str:
        """The periodic line: done/total (percent), rate, time left."""
        done = f"{self.completed:,}"
        if self.total:
            pct = 100 * self.completed / self.total
            done += f"/{self.total:,} {self.unit} ({pct:.0f}%)"
        else:
            done += f" {self.unit}"
        text = f"{self.description}: {done}, {rate:,.0f} {self.unit}/s"
        if self.total and rate > 0:
            left = max(self.total - self.completed, 0) / rate
            text += f", ETA {format_duration(left)}"
        return text

    def close(self) -> None:
        elapsed = max(self._clock() - self._started, 1e-9)
        self._console.print(
            f"{self.description}: done, {self.completed:,} {self.unit} in "
            f"{elapsed:.1f}s ({self.completed / elapsed:,.0f} {self.unit}/s)",
            highlight=False,
            soft_wrap=True,
        )


class _RateColumn(ProgressColumn):
    """Units per second, with thousands separators (rich's own column shows bytes)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text(f"? {self.unit}/s", style="progress.data.speed")
        return Text(f"{speed:,.0f} {self.unit}/s", style="progress.data.speed")


class _CountColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        total = f"/{int(task.total):,}" if task.total is not None else ""
        return Text(f"{int(task.completed):,}{total}", style="progress.download")


class RichProgress:
    """A progress bar redrawn in place: count, percentage, rate, elapsed and time left."""

    def __init__(self, description: str, total: int | None, *, unit: str, console: Console):
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            _CountColumn(),
            TaskProgressColumn(),
            _RateColumn(unit),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            speed_estimate_period=10.0,
        )
        self._task = self._progress.add_task(description, total=total)
        self._progress.start()

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)

    def update(self, completed: int, total: int | None = None) -> None:
        if total is not None:
            self._progress.update(self._task, completed=completed, total=total)
        else:
            self._progress.update(self._task, completed=completed)

    def close(self) -> None:
        self._progress.refresh()
        self._progress.stop()


@contextmanager
def progress_reporter(
    description: str,
    total: int | None,
    *,
    unit: str = "events",
    console: Console | None = None,
    interval_s: float = 5.0,
) -> Iterator[ProgressReporter]:
    """A progress bar on a terminal, periodic plain lines otherwise (stderr by default)."""
    console = console or Console(stderr=True)
    reporter: RichProgress | PlainProgress
    if console.is_terminal and not console.is_dumb_terminal:
        reporter = RichProgress(description, total, unit=unit, console=console)
    else:
        reporter = PlainProgress(
            description, total, unit=unit, console=console, interval_s=interval_s
        )
    try:
        yield reporter
    finally:
        reporter.close()


class NoProgress:
    """A reporter that reports nothing (library calls, tests)."""

    def advance(self, n: int = 1) -> None:
        pass

    def update(self, completed: int, total: int | None = None) -> None:
        pass
