"""Labels in time order across partitions: a k-way merge with a bounded hold.

librdkafka hands out a topic's partitions in chunks (a few hundred records of one partition,
then another's), so a learner that learns in arrival order learns in partition order: with
four label partitions the model sees the stream out of time order, and its accuracy — and
where its drift detectors fire — depends on the partition count. This merge restores the
order: each partition's records queue in their own (offset) order, and the earliest head
among the queues is released only while every other partition could not hold an earlier one —
it has a queued head, or it is caught up (its end was reached and nothing came since).

A partition that is behind and has nothing queued (its next fetch has not arrived) holds the
others back, but never for long: once the oldest queued record has waited `max_hold_ms`, the
merge releases in the best order it has. Records still queued are not yet learned, so they
are not in any snapshot's offsets: a restart reads them again, nothing is lost.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_HOLD_MS = 1000.0  # the longest a label waits for a lagging partition's fetch


@dataclass
class _Partition(Generic[T]):
    queue: deque[tuple[int, float, T]] = field(default_factory=deque)  # (time, arrival, item)
    caught_up: bool = False
    # The latest time seen: the partition's next record is not earlier (times are taken as a
    # running maximum, so a partition's own order is never changed by the merge).
    last_time: int = 0


class TimeOrderedMerge(Generic[T]):
    """Queues per partition; `release()` hands out what can go, earliest time first.

    The watermark is the least `last_time` among the partitions not caught up: nothing
    earlier can arrive any more, so every queued record at or before it goes. `clock`
    returns milliseconds (monotonic); injected so the hold bound is testable.
    """

    def __init__(
        self,
        partitions: Iterable[int],
        *,
        max_hold_ms: float = MAX_HOLD_MS,
        clock: Callable[[], float],
    ) -> None:
        self._parts: dict[int, _Partition[T]] = {p: _Partition() for p in partitions}
        self.max_hold_ms = max_hold_ms
        self._clock = clock

    def add(self, partition: int, time_ms: int | None, item: T) -> None:
        """One record of `partition`, in its offset order; `time_ms` None keeps its place."""
        part = self._parts.setdefault(partition, _Partition())
        if time_ms is not None and time_ms > part.last_time:
            part.last_time = time_ms
        part.queue.append((part.last_time, self._clock(), item))
        part.caught_up = False

    def caught_up(self, partition: int) -> None:
        """The consumer reached the end of `partition`: it cannot hold an earlier record."""
        self._parts.setdefault(partition, _Partition()).caught_up = True

    @property
    def held(self) -> int:
        return sum(len(p.queue) for p in self._parts.values())

    def release(self) -> list[T]:
        """Every record that can go now, in time order (ties: lower partition first)."""
        lagging = [p.last_time for p in self._parts.values() if not p.caught_up]
        cut: float = min(lagging) if lagging else float("inf")
        # A record held past the bound goes anyway, and with it everything not later.
        expired = self._clock() - self.max_hold_ms
        for part in self._parts.values():
            if part.queue and part.queue[0][1] <= expired:
                last_expired = max(t for t, arrival, _ in part.queue if arrival <= expired)
                cut = max(cut, last_expired)
        ready: list[tuple[int, int, int, T]] = []
        for n, part in self._parts.items():
            queue = part.queue
            while queue and queue[0][0] <= cut:
                time_ms, _, item = queue.popleft()
                ready.append((time_ms, n, len(ready), item))
        ready.sort(key=lambda r: r[:3])
        return [r[3] for r in ready]
