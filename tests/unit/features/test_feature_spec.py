"""FeatureSpec: the YAML shape, durations, derived names, and errors that say the fix."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from features.duration import format_duration, parse_duration_ms
from features.spec import FeatureSpec

DEMO = """
lateness: 10m
replay_ttl: 24h
aggregations:
  - {name: card_count_1h, entity: card_id, agg: count, window: 1h, bucket: 5m}
  - {name: card_amount_sum_1h, entity: card_id, agg: sum, field: amount, window: 1h, bucket: 5m}
  - {name: card_amount_max_24h, entity: card_id, agg: max, field: amount, window: 24h,
     bucket: 1h, fill: 0}
  - {name: card_since_last, entity: card_id, agg: seconds_since_last, window: 24h, bucket: 1h,
     fill: -1}
  - {name: card_merchants_24h, entity: card_id, agg: count_distinct, field: merchant_id,
     window: 24h, bucket: 1h}
  - {name: merchant_amount_ewm, entity: merchant_id, agg: decayed_mean, field: amount,
     half_life: 30m}
transforms:
  - {name: amount_log, field: amount, op: log1p}
  - {name: amount_band, field: amount, op: bucketize, boundaries: [10, 50, 200, 1000]}
  - {name: channel, field: channel, op: one_hot, categories: [web, pos, atm]}
  - {name: mcc, field: mcc, op: hash, buckets: 3}
"""


def _spec(**changes: Any) -> FeatureSpec:
    raw = yaml.safe_load(DEMO)
    raw.update(changes)
    return FeatureSpec.model_validate(raw)


def _agg(**fields: Any) -> dict[str, Any]:
    return {"name": "x", "entity": "card_id", **fields}


def _error(**changes: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        _spec(**changes)
    return str(caught.value)


def test_demo_spec_names_aggregations_then_transform_columns() -> None:
    assert _spec().names == (
        "card_count_1h",
        "card_amount_sum_1h",
        "card_amount_max_24h",
        "card_since_last",
        "card_merchants_24h",
        "merchant_amount_ewm",
        "amount_log",
        "amount_band",
        "channel=web",
        "channel=pos",
        "channel=atm",
        "mcc#0",
        "mcc#1",
        "mcc#2",
    )


def test_entities_and_fields_used_in_order_of_first_use() -> None:
    spec = _spec()
    assert spec.entities == ("card_id", "merchant_id")
    assert spec.fields_used == ("card_id", "merchant_id", "amount", "channel", "mcc")


def test_durations_are_integer_milliseconds() -> None:
    spec = _spec()
    assert (spec.lateness, spec.replay_ttl) == (600_000, 86_400_000)
    assert spec.aggregations[0].window == 3_600_000
    assert spec.aggregations[0].n_buckets == 12


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("500ms", 500),
        ("30s", 30_000),
        ("10m", 600_000),
        ("1h", 3_600_000),
        ("7d", 604_800_000),
        (90, 90_000),
        (0.25, 250),
        ("1.5s", 1500),
    ],
)
def test_duration_accepts_units_or_seconds(text: str | float, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("bad", ["10 minutes", "-1s", "0.5ms", True])
def test_bad_duration_is_explained(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_ms(bad)


def test_format_duration_picks_the_largest_exact_unit() -> None:
    assert [format_duration(ms) for ms in (420_000, 90_000, 1500, 0)] == [
        "7m",
        "90s",
        "1500ms",
        "0ms",
    ]


def test_window_not_a_multiple_of_bucket_names_both() -> None:
    message = _error(aggregations=[_agg(agg="count", window="7m", bucket="5m")])
    assert "aggregations.0" in message
    assert "window (7m) must be a whole multiple of bucket (5m)" in message


def test_value_aggregation_without_field_is_rejected() -> None:
    assert "agg 'sum' needs 'field'" in _error(
        aggregations=[_agg(agg="sum", window="1h", bucket="5m")]
    )


def test_count_takes_no_field() -> None:
    assert "takes no 'field'" in _error(
        aggregations=[_agg(agg="count", field="amount", window="1h", bucket="5m")]
    )


def test_windowed_aggregation_needs_window_and_bucket() -> None:
    assert "needs positive 'window' and 'bucket'" in _error(
        aggregations=[_agg(agg="max", field="amount", window="1h")]
    )


def test_decayed_aggregation_forbids_window_and_needs_half_life() -> None:
    assert "has no window or bucket" in _error(
        aggregations=[_agg(agg="decayed_sum", field="amount", window="1h", bucket="5m")]
    )
    assert "needs a positive 'half_life'" in _error(
        aggregations=[_agg(agg="decayed_sum", field="amount")]
    )


def test_half_life_is_only_for_decayed() -> None:
    assert "half_life is only for decayed" in _error(
        aggregations=[_agg(agg="sum", field="amount", window="1h", bucket="5m", half_life="1m")]
    )


def test_fill_is_only_for_aggregations_that_can_be_empty() -> None:
    assert "takes no 'fill'" in _error(
        aggregations=[_agg(agg="mean", field="amount", window="1h", bucket="5m", fill=1)]
    )


def test_duplicate_names_are_rejected_across_aggregations_and_columns() -> None:
    twice = [_agg(agg="count", window="1h", bucket="5m")] * 2
    assert "feature name 'x' is already used by aggregations[0]" in _error(aggregations=twice)
    clash = [
        {"name": "channel=web", "field": "amount", "op": "raw"},
        {"name": "channel", "field": "channel", "op": "one_hot", "categories": ["web"]},
    ]
    assert "'channel=web' is already used by transforms[0]" in _error(transforms=clash)


def test_unknown_keys_are_rejected() -> None:
    assert "windw" in _error(aggregations=[_agg(agg="count", windw="1h", bucket="5m")])
    assert "Extra inputs are not permitted" in _error(latenes="1m")


def test_transform_parameters_belong_to_their_op() -> None:
    assert "op 'bucketize' needs 'boundaries'" in _error(
        transforms=[{"name": "b", "field": "amount", "op": "bucketize"}]
    )
    assert "op 'raw' takes no 'buckets'" in _error(
        transforms=[{"name": "b", "field": "amount", "op": "raw", "buckets": 3}]
    )
    assert "strictly increasing" in _error(
        transforms=[{"name": "b", "field": "amount", "op": "bucketize", "boundaries": [5, 1]}]
    )


def test_one_hot_categories_are_compared_as_text() -> None:
    spec = _spec(
        transforms=[{"name": "m", "field": "mcc", "op": "one_hot", "categories": [5411, "x"]}]
    )
    assert spec.transform_names == ("m=5411", "m=x")


def test_spec_is_frozen() -> None:
    with pytest.raises(ValidationError):
        _spec().lateness = 5  # type: ignore[misc]


def test_dumped_spec_validates_back_to_the_same_spec() -> None:
    spec = _spec()
    assert FeatureSpec.model_validate(spec.model_dump()) == spec
    assert spec.model_dump()["lateness"] == "10m"
