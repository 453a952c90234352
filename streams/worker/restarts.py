"""How long the supervisor waits before restarting a worker that died.

The wait doubles with each crash in a row (a broken dependency is not a crash loop) and
starts over after a healthy run: a worker that ran `healthy_s` before dying is restarted
after `initial_s` again, not after the 30 s its last crash of yesterday had reached.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RestartBackoff:
    """Per worker slot: `started(slot)` when it starts, `delay(slot)` when it died."""

    def __init__(
        self,
        *,
        initial_s: float = 1.0,
        maximum_s: float = 30.0,
        healthy_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._initial_s = initial_s
        self._maximum_s = maximum_s
        self._healthy_s = healthy_s
        self._clock = clock
        self._started: dict[int, float] = {}
        self._last_delay: dict[int, float] = {}

    def started(self, slot: int) -> None:
        self._started[slot] = self._clock()

    def delay(self, slot: int) -> float:
        """Seconds to wait before restarting `slot`, which has just died."""
        started = self._started.get(slot)
        ran_s = self._clock() - started if started is not None else 0.0
        last = self._last_delay.get(slot)
        if last is None or ran_s >= self._healthy_s:
            delay = self._initial_s
        else:
            delay = min(self._maximum_s, last * 2)
        self._last_delay[slot] = delay
        return delay
