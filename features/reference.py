"""`ReferenceFeatureStore`: the feature semantics in plain, in-memory Python.

This is the source of truth the Redis store is tested against: it follows
docs/architecture.md ("Feature semantics") through the rules in `features.semantics`,
one event at a time, with no cleverness. It computes the aggregation columns only;
`Featurizer` adds the transforms.

Input conventions (shared with `RedisFeatureStore`):
* Entity values are keyed by their text: 123 and "123" are the same entity. An event with
  no value (None) for an entity field changes no state of that entity and reads its
  aggregations as empty.
* A numeric field that is None, NaN or ±inf is missing: sum/mean/min/max/last/decayed skip
  the event; count and seconds_since_last still count it. A None count_distinct field adds
  nothing; other values are hashed as the UTF-8 of str(value).
* `late` is set when the event was late for at least one of its entities.
* Lost state (`StateLost`) follows `semantics.lost_epoch` and `semantics.behind`, as the
  Redis store's guard does; `drop_state()` is this store's FLUSHALL, for the contract tests.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from features import semantics
from features.hll import HyperLogLog, count_union, member_bytes
from features.semantics import RECORD_CHUNK
from features.spec import Aggregation, FeatureSpec
from features.store import FeatureBatch, FeatureResult, Source, StateLost

"""Offsets per replay-record chunk; a chunk expires replay_ttl after its last write."""


@dataclass
class _Bucket:
    """What one bucket of one windowed aggregation knows about its applied events."""

    events: int = 0
    valued: int = 0  # events with a value (mean's denominator)
    total: float = 0.0
    low: float | None = None
    high: float | None = None
    last: tuple[int, float] | None = None  # (event time, value) of the newest valued event
    newest: int | None = None  # greatest event time of any event
    hll: HyperLogLog | None = None


@dataclass
class _Entity:
    """State of one entity: its watermark and, per aggregation, buckets or a decay state."""

    watermark: int | None = None
    buckets: dict[int, dict[int, _Bucket]] = field(default_factory=dict)
    decay: dict[int, tuple[float, float, int]] = field(default_factory=dict)


_Recorded = tuple[tuple[float, ...], bool]


def _number(value: Any) -> float | None:
    if value is None:
        return None
    x = float(value)
    return x if math.isfinite(x) else None


class ReferenceFeatureStore:
    """In-memory feature state; aggregation columns only (see `Featurizer`).

    `clock` (seconds, monotonic) only decides when replay records expire. `guard=False`
    neither checks for lost state nor writes the epoch (as a rebuild's Redis store).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        clock: Callable[[], float] = time.monotonic,
        *,
        guard: bool = True,
    ) -> None:
        self.spec = spec
        self._guard = guard
        self._epoch: str | None = None  # the state's ("server side")
        self._known_epoch: str | None = None  # the one last seen ("client side")
        self.names: tuple[str, ...] = spec.aggregation_names
        self._clock = clock
        self._entities: dict[tuple[str, str], _Entity] = {}
        self._high_water: dict[tuple[str, int], int] = {}
        # (topic, partition, offset // RECORD_CHUNK) → (expiry, offset → (row, late))
        self._chunks: dict[tuple[str, int, int], tuple[float, dict[int, _Recorded]]] = {}
        self._by_entity = [
            (entity, [(j, a) for j, a in enumerate(spec.aggregations) if a.entity == entity])
            for entity in spec.entities
        ]

    def update_and_read(self, batch: FeatureBatch) -> FeatureResult:
        """Process events one by one, in batch order; read each right after its update."""
        n = len(batch.records)
        if n and self._guard:
            self._check(batch)
        values = np.zeros((n, len(self.names)), dtype=np.float64)
        late = np.zeros(n, dtype=bool)
        replayed = np.zeros(n, dtype=bool)
        for i, (record, t) in enumerate(zip(batch.records, batch.event_time_ms, strict=True)):
            source = None if batch.sources is None else batch.sources[i]
            if source is not None and self._is_replay(source):
                replayed[i] = True
                recorded = self._recorded(source)
                if recorded is None:  # expired: read the state as it is, change nothing
                    row, _ = self._event(record, int(t), apply=False)
                else:
                    row, late[i] = recorded
                values[i] = row
                continue
            row, late[i] = self._event(record, int(t), apply=True)
            values[i] = row
            if source is not None:
                self._remember(source, row, bool(late[i]))
        return FeatureResult(values=values, late=late, replayed=replayed)

    def close(self) -> None:
        """Nothing to release."""

    def drop_state(self) -> None:
        """Lose every bit of state, epoch included, as a Redis restart without data would."""
        self._entities.clear()
        self._high_water.clear()
        self._chunks.clear()
        self._epoch = None

    def _check(self, batch: FeatureBatch) -> None:
        """Raise `StateLost` (changing nothing) or adopt the state's epoch, writing it first
        on a fresh pipeline."""
        floors = batch.floors or {}
        reason = semantics.lost_epoch(self._epoch, self._known_epoch, floors, self._high_water.get)
        if reason is None:
            reason = semantics.behind(floors, self._high_water.get)
            if reason is not None:
                self._epoch = semantics.LOST_EPOCH
        if reason is not None:
            raise StateLost(f"feature state: {reason}")
        if self._epoch is None:
            self._epoch = uuid.uuid4().hex
        self._known_epoch = self._epoch

    # -- one event ---------------------------------------------------------------------

    def _event(
        self, record: Mapping[str, Any], t: int, apply: bool
    ) -> tuple[tuple[float, ...], bool]:
        """Apply (unless `apply` is False or the event is late) and read one event."""
        row = [0.0] * len(self.names)
        any_late = False
        for entity_field, indexed in self._by_entity:
            key = record.get(entity_field)
            if key is None:
                for j, agg in indexed:
                    row[j] = self._read(agg, {}, None, t, None)
                continue
            entity = self._entities.setdefault((entity_field, str(key)), _Entity())
            late = apply and semantics.is_late(t, entity.watermark, self.spec.lateness)
            any_late |= late
            applies = apply and not late
            if applies:
                entity.watermark = t if entity.watermark is None else max(entity.watermark, t)
            for j, agg in indexed:
                row[j] = self._update_and_read(j, agg, entity, record, t, applies)
        return tuple(row), any_late

    def _update_and_read(
        self,
        j: int,
        agg: Aggregation,
        entity: _Entity,
        record: Mapping[str, Any],
        t: int,
        applies: bool,
    ) -> float:
        if not agg.windowed:
            x = _number(record.get(agg.field)) if agg.field else None
            state = entity.decay.get(j)
            if applies and x is not None:
                assert agg.half_life is not None
                state = semantics.decay_update(state, x, t, agg.half_life)
                entity.decay[j] = state
            if state is None:
                return 0.0
            s, w, _ = state
            return s if agg.agg == "decayed_sum" else (s / w if w > 0 else 0.0)

        assert agg.bucket is not None
        buckets = entity.buckets.setdefault(j, {})
        # seconds_since_last looks at events applied before this one: read it first.
        newest_before = self._newest(agg, buckets, entity.watermark, t)
        if applies:
            self._apply(agg, buckets, record, t)
            assert entity.watermark is not None
            floor = semantics.retention_floor(
                entity.watermark, agg.bucket, agg.n_buckets, self.spec.lateness
            )
            for b in [b for b in buckets if b < floor]:
                del buckets[b]
        return self._read(agg, buckets, entity.watermark, t, newest_before)

    def _apply(
        self, agg: Aggregation, buckets: dict[int, _Bucket], record: Mapping[str, Any], t: int
    ) -> None:
        assert agg.bucket is not None
        bucket = buckets.setdefault(semantics.bucket_of(t, agg.bucket), _Bucket())
        bucket.events += 1
        bucket.newest = t if bucket.newest is None else max(bucket.newest, t)
        raw = record.get(agg.field) if agg.field else None
        if agg.agg == "count_distinct":
            if raw is not None:
                bucket.hll = bucket.hll or HyperLogLog()
                bucket.hll.add(member_bytes(raw))
            return
        x = _number(raw)
        if x is None:
            return
        bucket.valued += 1
        bucket.total += x
        bucket.low = x if bucket.low is None else min(bucket.low, x)
        bucket.high = x if bucket.high is None else max(bucket.high, x)
        if bucket.last is None or t >= bucket.last[0]:  # ties go to the later event
            bucket.last = (t, x)

    def _window(
        self, agg: Aggregation, buckets: dict[int, _Bucket], watermark: int | None, t: int
    ) -> list[_Bucket]:
        """The buckets read for an event at t, in increasing bucket order."""
        assert agg.bucket is not None
        first, last = semantics.window_range(
            t, agg.bucket, agg.n_buckets, watermark, self.spec.lateness
        )
        return [buckets[b] for b in range(first, last + 1) if b in buckets]

    def _newest(
        self, agg: Aggregation, buckets: dict[int, _Bucket], watermark: int | None, t: int
    ) -> int | None:
        if agg.agg != "seconds_since_last":
            return None
        times = [b.newest for b in self._window(agg, buckets, watermark, t) if b.newest is not None]
        return max(times, default=None)

    def _read(
        self,
        agg: Aggregation,
        buckets: dict[int, _Bucket],
        watermark: int | None,
        t: int,
        newest_before: int | None,
    ) -> float:
        if not agg.windowed:
            return 0.0
        window = self._window(agg, buckets, watermark, t)
        kind = agg.agg
        if kind == "count":
            return float(sum(b.events for b in window))
        if kind in ("sum", "mean"):
            total = 0.0
            for b in window:  # increasing bucket order, as the Lua script adds them
                total += b.total
            if kind == "sum":
                return total
            valued = sum(b.valued for b in window)
            return total / valued if valued else 0.0
        if kind == "min":
            lows = [b.low for b in window if b.low is not None]
            return min(lows) if lows else agg.fill_value
        if kind == "max":
            highs = [b.high for b in window if b.high is not None]
            return max(highs) if highs else agg.fill_value
        if kind == "last":
            lasts = [b.last for b in window if b.last is not None]
            return max(lasts)[1] if lasts else agg.fill_value
        if kind == "seconds_since_last":
            if newest_before is None:
                return agg.fill_value
            return semantics.seconds_since(t, newest_before)
        assert kind == "count_distinct"
        return float(count_union(b.hll for b in window if b.hll is not None))

    # -- idempotency ------------------------------------------------------------------

    def _is_replay(self, source: Source) -> bool:
        topic, partition, offset = source
        high = self._high_water.get((topic, partition))
        return high is not None and offset <= high

    def _recorded(self, source: Source) -> tuple[tuple[float, ...], bool] | None:
        topic, partition, offset = source
        expiry, records = self._chunks.get((topic, partition, offset // RECORD_CHUNK), (0.0, {}))
        return records.get(offset) if expiry > self._clock() else None

    def _remember(self, source: Source, row: tuple[float, ...], late: bool) -> None:
        topic, partition, offset = source
        self._high_water[(topic, partition)] = offset
        chunk = (topic, partition, offset // RECORD_CHUNK)
        expiry, records = self._chunks.get(chunk, (0.0, {}))
        if expiry <= self._clock():
            records = {}  # an expired chunk is gone as a whole, as its Redis hash would be
        records[offset] = (row, late)
        self._chunks[chunk] = (self._clock() + self.spec.replay_ttl / 1000, records)
