"""The pure feature rules (features.semantics) and the reference store built on them."""

from __future__ import annotations

import pytest

from features import semantics
from features.reference import ReferenceFeatureStore
from features.spec import FeatureSpec
from features.store import FeatureBatch

MIN = 60_000


def test_bucket_of_floors_toward_minus_infinity() -> None:
    assert [semantics.bucket_of(t, MIN) for t in (0, MIN - 1, MIN, -1)] == [0, 0, 1, -1]


def test_event_within_lateness_is_not_late() -> None:
    assert not semantics.is_late(t_ms=1000, watermark_ms=None, lateness_ms=0)
    assert not semantics.is_late(t_ms=400, watermark_ms=1000, lateness_ms=600)
    assert semantics.is_late(t_ms=399, watermark_ms=1000, lateness_ms=600)


def test_retention_floor_keeps_window_plus_lateness_rounded_up_to_buckets() -> None:
    # wm in bucket 10, 3-bucket window, 90 s lateness = 2 buckets: keep bucket 5 and up.
    assert semantics.retention_floor(10 * MIN + 5, MIN, 3, 90_000) == 5


def test_window_of_an_applied_event_is_its_last_n_buckets() -> None:
    assert semantics.window_range(10 * MIN, MIN, 3, 10 * MIN, 0) == (8, 10)


def test_window_of_a_late_event_is_cut_at_the_retention_floor() -> None:
    assert semantics.window_range(2 * MIN, MIN, 3, 10 * MIN, 0) == (7, 2)  # empty


def test_seconds_since_is_never_negative() -> None:
    assert semantics.seconds_since(5_500, 1_000) == 4.5
    assert semantics.seconds_since(1_000, 5_500) == 0.0


def test_decay_in_order_halves_the_old_sum_per_half_life() -> None:
    state = semantics.decay_update(None, 8.0, 0, MIN)
    assert semantics.decay_update(state, 1.0, MIN, MIN) == (5.0, 1.5, MIN)


def test_decay_out_of_order_discounts_the_new_value_and_keeps_time() -> None:
    state = semantics.decay_update(None, 8.0, MIN, MIN)
    assert semantics.decay_update(state, 4.0, 0, MIN) == (10.0, 1.5, MIN)


SPEC = FeatureSpec.model_validate(
    {
        "replay_ttl": "10s",
        "aggregations": [
            {"name": "n", "entity": "card", "agg": "count", "window": "5m", "bucket": "1m"}
        ],
    }
)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _one(store: ReferenceFeatureStore, t: int, offset: int) -> tuple[float, bool]:
    result = store.update_and_read(FeatureBatch([{"card": "a"}], [t], [("ev", 0, offset)]))
    return float(result.values[0, 0]), bool(result.replayed[0])


def test_replay_record_lives_replay_ttl_after_its_last_write() -> None:
    clock = _Clock()
    store = ReferenceFeatureStore(SPEC, clock=clock)
    assert _one(store, 0, offset=0) == (1.0, False)
    assert _one(store, 1, offset=1) == (2.0, False)
    clock.now = 9.0
    assert _one(store, 0, offset=0) == (1.0, True)  # the recorded value


def test_expired_replay_record_reads_state_without_applying() -> None:
    clock = _Clock()
    store = ReferenceFeatureStore(SPEC, clock=clock)
    _one(store, 0, offset=0)
    _one(store, 1, offset=1)
    clock.now = 11.0
    assert _one(store, 0, offset=0) == (2.0, True)  # state as it is, not incremented
    assert _one(store, 2, offset=2) == (3.0, False)


@pytest.mark.parametrize("bad", [([{}], [1, 2], None), ([{}], [1], [])])
def test_batch_needs_one_time_and_source_per_record(bad: tuple) -> None:
    with pytest.raises(ValueError, match="one event time and one source per record"):
        FeatureBatch(*bad)
