"""The feature store contract: a batch of events in, one float64 matrix (plus flags) out.

Implementations: `ReferenceFeatureStore` (pure Python, `features/reference.py`) and
`RedisFeatureStore` (`features/redis_store.py`); `features.backends.open_store` picks one
by URL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

Source = tuple[str, int, int]
"""(topic, partition, offset) of one event: the key of idempotent replay."""


@dataclass(frozen=True)
class FeatureBatch:
    """One micro-batch: validated records, their event times (ms) and their sources.

    `sources=None` turns idempotency off (every event is applied).

    `floors` guards against lost state (see `StateLost`): per source partition processed
    before (by this worker, or committed by its group), the highest offset the state is
    known to have applied, -1 when none is known. A store whose epoch is gone (see
    `features.semantics.lost_epoch`), or whose high-water of a partition is below its floor
    (`behind`), applies nothing and raises `StateLost`. None: no history is known.
    """

    records: Sequence[Mapping[str, Any]]
    event_time_ms: Sequence[int]
    sources: Sequence[Source] | None = None
    floors: Mapping[tuple[str, int], int] | None = None

    def __post_init__(self) -> None:
        n = len(self.records)
        if len(self.event_time_ms) != n or (self.sources is not None and len(self.sources) != n):
            raise ValueError(
                f"FeatureBatch needs one event time and one source per record: {n} records, "
                f"{len(self.event_time_ms)} times, "
                f"{'no' if self.sources is None else len(self.sources)} sources"
            )


@dataclass(frozen=True)
class FeatureResult:
    """Per event: feature values (n, k) in the store's `names` order, and two flags.

    `late`: the event was too old for at least one of its entities and was not applied
    there. `replayed`: the event's (topic, partition, offset) was at or below the highest
    offset already applied for that partition, so it changed nothing.
    """

    values: np.ndarray
    late: np.ndarray
    replayed: np.ndarray


class StoreRefused(Exception):
    """The store's server refused a command for good: its user lacks a permission the store
    needs (a Redis ACL). Retrying cannot help and the events are not at fault (they are not
    dead-lettered): the caller stops, saying this."""


class StateLost(Exception):
    """The store's state is gone (restart without data, FLUSHALL, eviction) or behind what
    was already delivered (a failover that dropped recent writes); nothing was applied.

    Scoring on it would serve wrong features silently: the caller stops scoring until the
    state is rebuilt (`streamfer rebuild`, which writes a new epoch).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FeatureStore(Protocol):
    """Update state with a batch and read every event's features right after its update."""

    names: tuple[str, ...]

    def update_and_read(self, batch: FeatureBatch) -> FeatureResult:
        """Apply the batch in order; row i is read right after event i is applied."""
        ...

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...
