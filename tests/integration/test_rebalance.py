"""Scale-out: a second worker joins and then leaves mid-stream; nothing is lost and no
feature is counted twice (replays after the rebalance carry their first values)."""

from __future__ import annotations

import pytest

from tests.integration.harness import (
    assert_features_exact,
    group_lag,
    make_spec,
    prediction_counts,
    produce,
    read_json,
    recompute_features,
    start_worker,
    synthetic,
    topic_size,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_worker_joining_and_leaving_loses_nothing(conn, model_file, unique):
    spec = make_spec(unique, {"path": str(model_file)}, partitions=4)
    waves = [synthetic(8000, seed=s, n_cards=1000) for s in (41, 42, 43)]
    everything = [e for wave in waves for e in wave]

    a = start_worker(spec, conn, worker_id=0)
    produce(conn, spec, waves[0])
    half = len(waves[0]) // 2
    wait_for(lambda: topic_size(conn, spec.topics.predictions) >= half, 120, "worker A progress")

    b = start_worker(spec, conn, worker_id=1)
    wait_for(lambda: b.worker.metrics.rebalances.labels("assign")._value.get() > 0, 60, "B joins")
    produce(conn, spec, waves[1])
    wait_for(lambda: b.worker.stats.events_in > 0, 120, "worker B scoring")

    b.stop()
    b.join()
    produce(conn, spec, waves[2])
    wait_for(lambda: group_lag(conn, spec.group, spec.topics.events) == 0, 180, "all committed")
    a.stop()
    a.join()

    predictions = read_json(conn, spec.topics.predictions, timeout_s=120)
    counts = prediction_counts(predictions)
    assert set(counts) == {e["event_id"] for e in everything}
    assert b.stats is not None and b.stats.events_in > 0 and a.stats is not None
    served = read_json(conn, spec.topics.features, timeout_s=120)
    assert_features_exact(served, recompute_features(conn, spec), spec.features.names)
