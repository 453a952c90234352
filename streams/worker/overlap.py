"""Overlap: a batch's Redis calls run on one thread while the worker's own thread works.

redis-py releases the GIL while it waits on its socket, so while batch N's feature script
runs on the Redis thread the worker consumes and decodes batch N+1, and while batch N's
prediction-log write runs there it encodes and produces batch N:

    worker:  poll+decode N+1 │ wait N │ model N │ encode+produce N │ poll+decode N+2 │ wait N+1
    redis:     features N    │        │ features N+1, then log N ────────────────►│

One thread, calls in submission order: batch N+1's features are submitted only once batch
N's are applied (the store is order-dependent), and Redis runs one command at a time
anyway. A second thread for the log writes was measured 2-3× slower in a drain (the
threads' hand-offs of the GIL, not Redis, were the cost). A batch's offsets count only
once its log write is durable (`LogWrite.durable`, the delivery's gate). `InFlight` is a
consumed batch not yet delivered; the rebalance callbacks mark its revoked partitions, whose
events are then left to their next owner (who consumes them again from the committed offset;
the store answers the replays from its records).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, field
from typing import Any, TypeVar

from streams.events.codec import DecodedBatch
from streams.worker.consumer import MessageBatch
from streams.worker.scoring import Featurized, ScoredBatch

log = logging.getLogger(__name__)

T = TypeVar("T")

IN_FLIGHT_TIMEOUT_S = 30.0
"""How long a revoke or a shutdown waits for a call running on the Redis thread."""


@dataclass(eq=False)
class InFlight:
    """A consumed, decoded batch; `features` is its store call once submitted."""

    batch: MessageBatch
    decoded: DecodedBatch
    features: Future[Featurized] | None = None
    revoked: set[tuple[str, int]] = field(default_factory=set)
    """Partitions revoked or lost since it was consumed: their events are not ours."""

    @property
    def size(self) -> int:
        return len(self.batch.messages)

    def owned_batch(self) -> MessageBatch:
        """Its messages without those of revoked partitions: their offsets are not ours to
        store or commit, even once the partitions are assigned back (their events were left
        out, and the new assignment starts again from the committed offset)."""
        if not self.revoked:
            return self.batch
        gone = self.revoked
        kept = [m for m in self.batch.messages if (m.topic(), m.partition()) not in gone]
        return MessageBatch(kept, self.batch.wait_s)

    def owned_events(self) -> DecodedBatch:
        """Its events without those of revoked partitions."""
        if not self.revoked:
            return self.decoded
        return self.decoded.keep(~self.decoded.in_partitions(self.revoked))

    def owned(self, featurized: Featurized) -> Featurized:
        """`featurized` without the rows of revoked partitions."""
        if not self.revoked:
            return featurized
        return featurized.keep(~featurized.events.in_partitions(self.revoked))

    def settle(self, timeout_s: float = IN_FLIGHT_TIMEOUT_S) -> None:
        """Wait (bounded) for its store call to end, whatever its outcome."""
        if self.features is not None:
            wait_for([self.features], timeout=timeout_s)


def leave(batches: list[InFlight], partitions: list[Any]) -> None:
    """Batches consumed but not delivered leave the events of these partitions to their
    next owner; a store call still running ends first, so it cannot race the owner's."""
    gone = {(p.topic, p.partition) for p in partitions}
    for batch in batches:
        batch.revoked |= gone
        batch.settle()


class LogWrite:
    """The prediction-log write of one produced batch, running on the Redis thread."""

    def __init__(self, future: Future[None], result: ScoredBatch) -> None:
        self._future = future
        self.result = result

    def durable(self, timeout_s: float | None) -> bool:
        """True once the write succeeded; False if it failed or is still running then."""
        try:
            self._future.result(timeout_s)
        except Exception as exc:  # a failed write, or not done by the timeout
            log.debug("prediction log write not durable: %r", exc)
            return False
        return True

    def written(self) -> None:
        """The write was retried (on the worker's thread) and succeeded."""
        done: Future[None] = Future()
        done.set_result(None)
        self._future = done


class RedisLane:
    """The worker's Redis thread: feature calls and log writes, one at a time, in order."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="streamfer-redis")

    def features(self, call: Callable[[], Featurized]) -> Future[Featurized]:
        return self._thread.submit(call)

    def log(self, call: Callable[[], None], result: ScoredBatch) -> LogWrite:
        return LogWrite(self._thread.submit(call), result)

    def close(self) -> None:
        """Drop what was not started; a running call ends on its own (its socket timeout)."""
        self._thread.shutdown(wait=False, cancel_futures=True)
