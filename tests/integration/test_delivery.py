"""Delivery guarantees on 100,000 events (40,000 on a cluster), a worker SIGKILLed mid-stream
and restarted.

exactly_once: a read_committed consumer sees exactly one prediction per event.
at_least_once: every event has at least one; duplicates are counted and carry the same
feature values as the first time (Redis state is never applied twice).
Both against a single Redis and against a Redis Cluster (feature store, prediction log).
"""

from __future__ import annotations

import signal

import pytest

from tests.integration.harness import (
    assert_features_exact,
    make_spec,
    prediction_counts,
    produce,
    read_json,
    recompute_features,
    synthetic,
    topic_size,
    wait_for,
    worker_process,
    write_spec,
)
from tests.integration.redis_kinds import KINDS, redis_under_test

pytestmark = pytest.mark.integration

N = 100_000
N_CLUSTER = 40_000  # the same checks, fewer events: the cluster runs add less to the suite


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["exactly_once", "at_least_once"])
def test_killed_worker_loses_nothing_and_counts_nothing_twice(
    request, model_file, unique, tmp_path, mode, kind, record_property
):
    conn = redis_under_test(request, kind).conn
    n = N if kind == "single" else N_CLUSTER
    model = {"path": str(model_file)}
    delivery = {"delivery": {"mode": mode}}
    spec = make_spec(unique, model, **delivery)
    spec_file = write_spec(tmp_path / "spec.yaml", unique, model, **delivery)
    events = synthetic(n, seed=21, n_cards=2000)
    produce(conn, spec, events)

    first = worker_process(spec_file, conn)
    wait_for(lambda: topic_size(conn, spec.topics.predictions) > n // 3, 300, "a third scored")
    first.send_signal(signal.SIGKILL)
    assert first.wait(30) == -signal.SIGKILL

    second = worker_process(spec_file, conn, "--idle-exit", "5")
    assert second.wait(600) == 0

    predictions = read_json(conn, spec.topics.predictions, timeout_s=180)
    counts = prediction_counts(predictions)
    assert set(counts) == {e["event_id"] for e in events}, "an event has no prediction"
    duplicates = sum(c - 1 for c in counts.values())
    record_property("duplicates", duplicates)
    print(f"{mode}, {kind} Redis: {len(predictions)} predictions, {duplicates} duplicates")
    if mode == "exactly_once":
        assert duplicates == 0

    served = read_json(conn, spec.topics.features, timeout_s=180)
    assert_features_exact(served, recompute_features(conn, spec), spec.features.names)
