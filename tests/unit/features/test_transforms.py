"""Stateless transforms: one numpy block per batch, never NaN."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from features.spec import Transform
from features.transforms import Transforms, apply_transform


def _t(**fields: Any) -> Transform:
    return Transform.model_validate({"name": "f", "field": "v", **fields})


def _column(transform: Transform, *values: Any) -> list[float]:
    return apply_transform(transform, [{"v": v} for v in values]).ravel().tolist()


def test_raw_passes_numbers_and_fills_missing() -> None:
    assert _column(_t(op="raw", fill=-1), 2, 3.5, None, float("nan")) == [2.0, 3.5, -1.0, -1.0]


def test_log1p_is_sign_symmetric() -> None:
    assert _column(_t(op="log1p"), 0, np.e - 1, -(np.e - 1)) == [0.0, 1.0, -1.0]


def test_bucketize_counts_boundaries_at_or_below_the_value() -> None:
    band = _t(op="bucketize", boundaries=[10, 50])
    assert _column(band, 9.99, 10, 49, 50, 1e9) == [0.0, 1.0, 1.0, 2.0, 2.0]


def test_one_hot_sets_one_column_and_zeros_for_unknown_or_missing() -> None:
    channel = _t(op="one_hot", categories=["web", "pos"])
    block = apply_transform(channel, [{"v": "pos"}, {"v": "atm"}, {}])
    assert block.tolist() == [[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]


def test_hash_sets_the_crc32_bucket_and_treats_ints_as_text() -> None:
    mcc = _t(op="hash", buckets=8)
    block = apply_transform(mcc, [{"v": 5411}, {"v": "5411"}, {"v": None}])
    expected = zlib.crc32(b"5411") % 8
    assert block[0].tolist() == block[1].tolist()
    assert block[0, expected] == 1.0 and block[0].sum() == 1.0
    assert block[2].sum() == 0.0


def test_transforms_concatenate_in_column_order() -> None:
    channel = _t(name="c", field="w", op="one_hot", categories=["a", "b"])
    transforms = Transforms([_t(op="raw"), channel])
    assert transforms.names == ("f", "c=a", "c=b")
    assert transforms.apply([{"v": 7, "w": "b"}]).tolist() == [[7.0, 0.0, 1.0]]


def test_no_transforms_give_an_empty_block() -> None:
    assert Transforms([]).apply([{}, {}]).shape == (2, 0)
