"""A worker that makes no progress while it has work says so and exits.

The main thread marks what it is busy with (a batch from consume to commit, a rebalance
callback, the shutdown) in `Progress`; a `Watchdog` thread of its own checks it every second.
When one busy section has lasted longer than the deadline, the worker is stuck (e.g. inside
librdkafka's `send_offsets_to_transaction`, where Python never regains control): the
watchdog logs one line naming where the main thread is, sets `streamfer_stalled` and ends the
process with `EXIT_STALLED`, so the supervisor (or Kubernetes) starts a fresh one. What was
not committed is consumed again. Time paused for a known outage (Redis down, backpressure)
does not count: restarting cannot bring Redis back, and the pause has its own metric.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# The exit status of a stalled worker (the supervisor restarts it, as any failed worker).
EXIT_STALLED = 4
# Longer than the longest bounded wait of a healthy batch: a transaction's calls are bounded
# at 30 s each and its commit is retried for up to 120 s.
DEFAULT_STALL_S = 180.0


@dataclass(frozen=True)
class Stall:
    seconds: float
    doing: str


class Progress:
    """What the main thread is busy with, and since when; read by the watchdog thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._busy: list[str] = []  # nested sections: a revoke inside the shutdown
        self._since = 0.0
        self._paused = 0

    @contextmanager
    def busy(self, doing: str) -> Iterator[None]:
        """Mark the main thread busy with `doing` (the outermost section's start counts)."""
        with self._lock:
            if not self._busy:
                self._since = self._clock()
            self._busy.append(doing)
        try:
            yield
        finally:
            with self._lock:
                self._busy.pop()

    def pause(self) -> None:
        """Waiting out a known outage: not a stall, however long."""
        with self._lock:
            self._paused += 1

    def resume(self) -> None:
        """The outage is over: the deadline starts again from now."""
        with self._lock:
            self._paused = max(0, self._paused - 1)
            self._since = self._clock()

    def stalled(self, deadline_s: float) -> Stall | None:
        """A `Stall` if busy, not paused, for longer than `deadline_s`; else None."""
        with self._lock:
            if not self._busy or self._paused:
                return None
            seconds = self._clock() - self._since
            if seconds <= deadline_s:
                return None
            return Stall(seconds, self._busy[-1])


def main_thread_at() -> str:
    """Where the main thread is, as `file:line in function` (its innermost Python frame)."""
    main = threading.main_thread().ident
    frame = sys._current_frames().get(main) if main is not None else None
    if frame is None:
        return "unknown"
    path = Path(frame.f_code.co_filename)
    return f"{path.parent.name}/{path.name}:{frame.f_lineno} in {frame.f_code.co_name}"


def exit_stalled(stall: Stall) -> None:
    """The floor: the stuck main thread cannot be unwound, so the process ends here."""
    logging.shutdown()
    os._exit(EXIT_STALLED)


class Watchdog:
    """A daemon thread checking `progress` every `interval_s`; acts once on a stall."""

    def __init__(
        self,
        progress: Progress,
        deadline_s: float,
        *,
        on_stall: Callable[[Stall], None] | None = None,
        act: Callable[[Stall], None] = exit_stalled,
        interval_s: float = 1.0,
    ) -> None:
        self._progress = progress
        self._deadline_s = deadline_s
        self._on_stall = on_stall
        self._act = act
        self._interval_s = interval_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join(self._interval_s + 1.0)

    def _watch(self) -> None:
        while not self._done.wait(self._interval_s):
            stall = self._progress.stalled(self._deadline_s)
            if stall is None:
                continue
            log.error(
                "no batch finished for %.0f s while %s (main thread at %s): "
                "exiting for the supervisor to restart",
                stall.seconds,
                stall.doing,
                main_thread_at(),
            )
            if self._on_stall is not None:
                self._on_stall(stall)
            self._act(stall)
            return
