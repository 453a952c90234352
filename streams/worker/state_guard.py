"""Never score on lost feature state: what the worker knows the state holds, and the alarm.

The store checks (inside its script call per batch and node, see `features.epoch`) that
every feature shard's epoch is still there and that each shard's high-water of each
partition is not below what the worker knows was applied. `AppliedOffsets` supplies that
knowledge as the batch's `floors`: per partition the highest offset of a batch this worker
delivered, or -1 for a partition its group committed before (history, no offset known).
`StateLossAlarm` is what the worker does about `StateLost`: one log line naming the fix,
one alert, a gauge; cleared when a batch goes through again (the state was rebuilt).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from features.store import Source, StateLost

log = logging.getLogger(__name__)

Partition = tuple[str, int]
CommittedLookup = Callable[[list[Partition]], Mapping[Partition, int | None]]
"""Committed offsets of partitions (None: nothing committed); may raise on a broker error."""


class AppliedOffsets:
    """Per source partition, the highest offset the feature state is known to hold."""

    def __init__(self, committed: CommittedLookup) -> None:
        self._committed = committed
        self._floors: dict[Partition, int] = {}
        self._fresh: set[Partition] = set()  # nothing committed when first seen

    def floors(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        """The floors of `partitions`; a partition seen for the first time costs one lookup
        of its committed offset (once, not per batch)."""
        wanted = set(partitions)
        unknown = sorted(wanted - self._floors.keys() - self._fresh)
        if unknown:
            try:
                committed = self._committed(unknown)
            except Exception as exc:  # the broker is unreachable: ask again next batch
                log.debug("committed offsets of %s unknown (%s)", unknown, exc)
            else:
                for tp in unknown:
                    offset = committed.get(tp)
                    if offset is not None and offset > 0:
                        self._floors[tp] = -1
                    else:
                        self._fresh.add(tp)
        return {tp: self._floors[tp] for tp in wanted if tp in self._floors}

    def delivered(self, sources: Iterable[Source]) -> None:
        """A batch whose events were applied is delivered: its offsets are held for good."""
        for topic, partition, offset in sources:
            tp = (topic, partition)
            if offset > self._floors.get(tp, -1):
                self._floors[tp] = offset
            self._fresh.discard(tp)


class StateLossAlarm:
    """Says once that the feature state is lost (log line, alert, gauge), and when it is back."""

    def __init__(
        self,
        *,
        pipeline: str,
        namespace: str,
        send: Callable[[dict[str, Any]], None],
        gauge: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pipeline = pipeline
        self._namespace = namespace
        self._send = send
        self._gauge = gauge
        self._clock = clock
        self.active = False

    def raised(self, exc: StateLost) -> None:
        """The batch was not scored; the first time, tell the operator what to run."""
        if self.active:
            return
        self.active = True
        self._gauge.set(1)
        log.error(
            "feature state lost (%s): not scoring, partitions paused. Fix: run "
            "`streamfer rebuild -s SPEC` with the spec of pipeline %r; the workers resume on "
            "their own once it finishes",
            exc.reason,
            self._pipeline,
        )
        self._send(
            {
                "kind": "feature_state_lost",
                "pipeline": self._pipeline,
                "namespace": self._namespace,
                "reason": exc.reason,
                "fix": "streamfer rebuild -s SPEC",
                "time_ms": int(self._clock() * 1000),
            }
        )

    def cleared(self) -> None:
        """A batch went through: the state is whole again."""
        if not self.active:
            return
        self.active = False
        self._gauge.set(0)
        log.warning("feature state is back (rebuilt): scoring resumed")
