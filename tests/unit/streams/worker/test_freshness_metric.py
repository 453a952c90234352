"""The freshness histogram observed in bulk (once per batch) counts exactly what one
`observe` per label would."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import generate_latest

from streams.worker.metrics import WorkerMetrics


def test_bulk_freshness_equals_one_observe_per_label() -> None:
    ages = np.random.default_rng(4).exponential(0.05, size=500)
    ages[:3] = [0.0, 0.02, 1e4]  # a bucket bound itself and one past the last bound
    bulk, single = WorkerMetrics(), WorkerMetrics()
    bulk.observe_freshness(ages[:200], 7)
    bulk.observe_freshness(ages[200:], 3)
    for age in ages:
        single.freshness.observe(float(age))
    single.labels_behind.set(3)

    def lines(m: WorkerMetrics) -> list[str]:
        text = generate_latest(m.registry).decode().splitlines()
        return [
            line
            for line in text
            if line.startswith("streamfer_adaptation_") and "_created" not in line
        ]

    exact = [[x for x in lines(m) if "_sum " not in x] for m in (bulk, single)]
    assert exact[0] == exact[1] and any("_bucket" in x for x in exact[0])
    sums = [float(next(x for x in lines(m) if "_sum " in x).split()[-1]) for m in (bulk, single)]
    assert sums[0] == pytest.approx(sums[1], rel=1e-12)
