"""Replay records across a spec change: a replay never reads a record of another layout.

A record holds one entity's columns of an event, in the spec's column order. After a spec
change that reorders (or changes) an entity's aggregations, a replay of an offset scored
before must not read the old record in the new order (it would serve one aggregation's value
as another's, silently); it is recomputed read-only from the state instead, which the same
aggregations (same ids) still hold.
"""

from __future__ import annotations

from typing import Any

import pytest

from features.redis_connect import connect
from features.redis_store import RedisFeatureStore
from features.spec import FeatureSpec
from features.store import FeatureBatch

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000
COUNT = {"name": "n", "entity": "card", "agg": "count", "window": "1h", "bucket": "1m"}
TOTAL = {
    "name": "total",
    "entity": "card",
    "agg": "sum",
    "field": "amount",
    "window": "1h",
    "bucket": "1m",
}


def spec(*aggregations: dict[str, Any]) -> FeatureSpec:
    return FeatureSpec.model_validate({"aggregations": list(aggregations)})


def test_a_replay_after_a_reorder_reads_no_record_of_the_old_layout(
    redis_url: str, unique: str
) -> None:
    records = [{"card": "c1", "amount": a} for a in (10.0, 20.0, 30.0)]
    batch = FeatureBatch(records, [T0, T0 + 1000, T0 + 2000], [("events", 0, o) for o in range(3)])
    client = connect(redis_url)
    try:
        before = RedisFeatureStore(spec(COUNT, TOTAL), client, unique).update_and_read(batch)
        after = RedisFeatureStore(spec(TOTAL, COUNT), client, unique).update_and_read(batch)
    finally:
        client.close()

    assert before.values.tolist() == [[1.0, 10.0], [2.0, 30.0], [3.0, 60.0]]
    assert after.replayed.all()  # nothing applied twice
    # Recomputed read-only from the state every event has been applied to: the totals and
    # counts of the whole window, in the new column order (never [n, total] read as
    # [total, n], which the old record would give).
    assert after.values.tolist() == [[60.0, 3.0], [60.0, 3.0], [60.0, 3.0]]
