"""The pure rules of feature state: buckets, windows, retention, lateness, decay.

Both stores follow these rules: `ReferenceFeatureStore` calls them, `features.lua` mirrors
them line for line (same integer arithmetic, same float operation order), so the two read
bit-identical numbers. docs/architecture.md, "Feature semantics", is the prose version.

Time is integer milliseconds of event time. Python's `//` floors toward minus infinity,
as Lua's `math.floor(t / b)` does (exact for |t| < 2^52).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

# Replay records (what each source offset was first scored with) are kept per chunk of
# this many offsets, so one hash per chunk expires as a whole (docs/architecture.md).
RECORD_CHUNK = 1024
# The flag byte after each event's row in a store's reply.
FLAG_LATE = 1
FLAG_REPLAYED = 2
# The epoch a rebuild writes while it runs: lost state to every guarded batch until the
# rebuild writes the real one (docs/architecture.md, "Lost state").
REBUILDING_EPOCH = "rebuilding"
# The epoch a batch writes on finding the state behind what was applied: lost state to
# every guarded batch, of every worker, until a rebuild.
LOST_EPOCH = "lost"


def bucket_of(t_ms: int, bucket_ms: int) -> int:
    """The bucket (tile) holding event time `t_ms`: `floor(t / bucket)`."""
    return t_ms // bucket_ms


def is_late(t_ms: int, watermark_ms: int | None, lateness_ms: int) -> bool:
    """An event older than the entity's watermark minus the allowed lateness is late."""
    return watermark_ms is not None and t_ms < watermark_ms - lateness_ms


def retention_floor(watermark_ms: int, bucket_ms: int, n_buckets: int, lateness_ms: int) -> int:
    """The oldest bucket still kept: buckets below `b(wm) - n - ceil(lateness / bucket)` drop.

    The bound depends only on the watermark, which never goes back, so "dropped" is the
    same as "below the floor now": a store may trim late or early, but must never read a
    bucket under the floor.
    """
    return bucket_of(watermark_ms, bucket_ms) - n_buckets - -(-lateness_ms // bucket_ms)


def window_range(
    t_ms: int, bucket_ms: int, n_buckets: int, watermark_ms: int | None, lateness_ms: int
) -> tuple[int, int]:
    """First and last bucket (inclusive) read for an event at `t_ms`.

    The window is the `n` buckets ending at the event's own bucket, cut at the retention
    floor (which only bites for late events; an applied event's window is always above it).
    """
    last = bucket_of(t_ms, bucket_ms)
    first = last - n_buckets + 1
    if watermark_ms is not None:
        first = max(first, retention_floor(watermark_ms, bucket_ms, n_buckets, lateness_ms))
    return first, last


def seconds_since(t_ms: int, previous_ms: int) -> float:
    """Seconds from the latest earlier event to this one; never negative (out-of-order)."""
    return max(0.0, (t_ms - previous_ms) / 1000)


def decay_update(
    state: tuple[float, float, int] | None, x: float, t_ms: int, half_life_ms: int
) -> tuple[float, float, int]:
    """Add `x` at `t_ms` to an exponentially decayed (sum, weight, time) state.

    In order (t >= T): S ← S·2^(-(t-T)/h) + x, and T ← t. Out of order (t < T): the new
    value is discounted instead, S ← S + x·2^(-(T-t)/h). The weight W is the same sum with
    x = 1, so decayed_mean = S / W. The state is always "as of T = max event time".
    """
    if state is None:
        return x, 1.0, t_ms
    s, w, big_t = state
    if t_ms >= big_t:
        factor = 2.0 ** (-(t_ms - big_t) / half_life_ms)
        return s * factor + x, w * factor + 1.0, t_ms
    factor = 2.0 ** (-(big_t - t_ms) / half_life_ms)
    return s + x * factor, w + factor, big_t


def lost_epoch(
    epoch: str | None,
    known_epoch: str | None,
    floors: Mapping[tuple[str, int], int],
    high_water: Callable[[tuple[str, int]], int | None],
) -> str | None:
    """Why the state's epoch says it is lost, or None (features.lua mirrors it).

    `epoch` is the store's (None: gone or never written), `known_epoch` the one the caller
    saw last, `floors` per partition with history the highest offset known applied (-1:
    none known). Lost, in this order: a rebuild is running or did not finish; an earlier
    batch found the state behind (`behind`); the epoch the caller saw is gone; no epoch
    while partitions have history and none of them has a high-water (state from before
    epochs existed has them, and is adopted; a fresh pipeline has no history, and its
    first batch writes the epoch).
    """
    if epoch == REBUILDING_EPOCH:
        return "a rebuild of the state is running or did not finish"
    if epoch == LOST_EPOCH:
        return "the state was found older than what was applied (see the first alert)"
    if epoch is None and known_epoch is not None:
        return f"the state epoch {known_epoch} is gone"
    if epoch is None and floors and all(high_water(tp) is None for tp in floors):
        return "no state epoch although the partitions were processed before"
    return None


def behind(
    floors: Mapping[tuple[str, int], int], high_water: Callable[[tuple[str, int]], int | None]
) -> str | None:
    """Why the state is older than what was applied, or None: a partition's high-water
    (None = -1) below its floor means recent writes were dropped (a failover). The stores
    then set the epoch to `LOST_EPOCH`, so every worker stops, not only this one: entities
    span partitions."""
    for (topic, partition), floor in sorted(floors.items()):
        hw = high_water((topic, partition))
        if (-1 if hw is None else hw) < floor:
            held = "none" if hw is None else hw
            return f"{topic}/{partition} was applied up to offset {floor}, the state has {held}"
    return None
