"""Stateless per-batch feature columns: raw, log1p, bucketize, one_hot, hash.

Each transform pulls its field out of the records once (the only per-event Python) and does
the rest with numpy on the whole column. Missing values (None, absent, NaN or ±inf) read as the
transform's `fill` (default 0) for raw/log1p/bucketize, and as all-zero columns for
one_hot/hash, so a model never sees NaN.

* `raw`: the value as float64.
* `log1p`: sign(x)·log1p(|x|): log1p for x >= 0, and finite for negative amounts (refunds).
* `bucketize`: the number of boundaries <= x (0 … len(boundaries)), one column.
* `one_hot`: one 0/1 column per category, `name=category`; str(value) is compared.
* `hash`: the hashing trick with 0/1 indicators (not signed): column `name#i` with
  i = crc32(UTF-8 of str(value)) mod buckets is 1. crc32 is stable across processes and
  machines, unlike Python's `hash`.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from features.spec import Transform


def _numbers(records: Sequence[Mapping[str, Any]], field: str, fill: float) -> np.ndarray:
    column = np.array(
        [np.nan if (v := r.get(field)) is None else v for r in records], dtype=np.float64
    )
    return np.where(np.isfinite(column), column, fill)


def _texts(records: Sequence[Mapping[str, Any]], field: str) -> list[str | None]:
    return [
        None if (v := r.get(field)) is None else v if type(v) is str else str(v) for r in records
    ]


def _indicators(codes: Sequence[int], width: int) -> np.ndarray:
    """0/1 matrix with a 1 at (row, code) for every code >= 0."""
    codes_arr = np.asarray(codes, dtype=np.int64).reshape(-1)
    out = np.zeros((codes_arr.size, width), dtype=np.float64)
    rows = np.flatnonzero(codes_arr >= 0)
    out[rows, codes_arr[rows]] = 1.0
    return out


def apply_transform(transform: Transform, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The (n, len(transform.columns)) float64 block of one transform over a batch."""
    op = transform.op
    if op in ("raw", "log1p", "bucketize"):
        x = _numbers(records, transform.field, transform.fill_value)
        if op == "log1p":
            x = np.sign(x) * np.log1p(np.abs(x))
        elif op == "bucketize":
            assert transform.boundaries is not None
            x = np.searchsorted(np.asarray(transform.boundaries), x, side="right").astype(
                np.float64
            )
        return x.reshape(-1, 1)
    texts = _texts(records, transform.field)
    if op == "one_hot":
        assert transform.categories is not None
        position = {c: i for i, c in enumerate(transform.categories)}
        return _indicators(
            [position.get(t, -1) if t is not None else -1 for t in texts], len(position)
        )
    assert transform.buckets is not None
    buckets = transform.buckets
    # Hash each distinct value once per batch: crc32 is cheap, but repeats are common.
    distinct = {t: zlib.crc32(t.encode()) % buckets for t in set(texts) if t is not None}
    return _indicators([distinct[t] if t is not None else -1 for t in texts], buckets)


class Transforms:
    """All transforms of a spec, applied to a batch as one (n, k) float64 matrix."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self._transforms = tuple(transforms)
        self.names: tuple[str, ...] = tuple(c for t in self._transforms for c in t.columns)

    def apply(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The transform columns of a batch, in `names` order."""
        if not self._transforms:
            return np.zeros((len(records), 0), dtype=np.float64)
        return np.hstack([apply_transform(t, records) for t in self._transforms])
