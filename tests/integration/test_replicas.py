"""River replicas against real Kafka and Redis: two workers' adapters tail the learner's
examples log and end with the same model as the learner, bit for bit, across a learner
SIGKILL and a worker that starts mid-stream from a checkpoint; the log holds every example
exactly once (no loss, no double publication), so no replica applies one twice."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import redis

from inference.adaptation import AdaptationTask, Adapter, OnlineLearner, river_predict
from streams.spec import Connections, PipelineSpec
from streams.worker.examples_log import ExamplesTail, read_since
from streams.workloads.replay import (
    LabelledRow,
    feature_matrix,
)
from tests.integration.test_learner import (
    SNAPSHOT_KEY,
    ScoringLoop,
    consumed_to,
    create_topic,
    end_offsets,
    produce_labels,
    setup_pipeline,
    start_learner,
)

# the fixture that gives workers and the learner the signing key
from tests.integration.test_learner import snapshot_key as snapshot_key

pytestmark = pytest.mark.integration


def replica_pipeline(
    tmp_path: Path, unique: str, n_rows: int, train_rows: int
) -> tuple[PipelineSpec, Path, list[LabelledRow]]:
    """test_learner's pipeline with replica serving and its examples topic."""
    # No periodic snapshot: the checkpoints are the learner's first one and the one it
    # publishes after adopting, on restart, what it learned past its last snapshot.
    return setup_pipeline(
        tmp_path,
        unique,
        n_rows,
        n_rows,  # no drift: the replicas are compared with the learner, not across a change
        train_rows,
        serving="replica",
        snapshot={"every_labels": 100_000, "every": "10m"},
    )


def replica_adapter(spec: PipelineSpec, conn: Connections) -> Adapter:
    """A worker's adapter in replica serving: a checkpoint, then the examples log."""
    topic = spec.topics.examples
    assert topic
    return Adapter.open(
        spec.adaptation,
        redis.Redis.from_url(conn.redis_url),
        spec.namespace,
        spec.features.names,
        lambda alert: None,
        key=SNAPSHOT_KEY,
        poll_interval_s=0.1,
        examples=lambda offset: ExamplesTail(conn, topic, offset),
    )


def caught_up(adapter: Adapter, n: int, timeout_s: float) -> int:
    """Poll (as a worker does between batches) until the replica has applied `n` examples."""
    deadline = time.monotonic() + timeout_s
    while True:
        adapter.poll()
        applied = adapter.replica.applied if adapter.replica is not None else -1
        if applied >= n or time.monotonic() > deadline:
            return applied
        time.sleep(0.05)


def test_replicas_equal_the_learner_across_a_learner_kill_and_a_late_worker(
    tmp_path: Path, conn: Connections, unique: str
) -> None:
    n, before_kill = 1500, 1000
    spec, spec_file, all_rows = replica_pipeline(tmp_path, unique, n + 300, train_rows=300)
    rows = all_rows[300:]
    assert spec.topics.labels and spec.topics.examples
    # One label partition: the learn order is fixed, so the offline model is comparable.
    create_topic(conn, spec.topics.labels, 1)
    ScoringLoop(spec, conn, alert=lambda a: None).score(rows)  # predictions logged first

    first = learner = start_learner(spec_file, conn)
    early: Adapter | None = None
    late: Adapter | None = None
    try:
        learner.wait(lambda s: True, 60, "the learner's web view")
        early = replica_adapter(spec, conn)  # a worker from the learner's first checkpoint
        produce_labels(conn, spec, rows[:before_kill])
        killed = learner.wait(lambda s: s["labels_seen"] >= n // 3, 60, "a third learned")
        learner.kill()  # mid-stream, long after its last snapshot (the first one, at 0)
        produce_labels(conn, spec, rows[before_kill:])
        learner = start_learner(spec_file, conn)
        learner.wait(lambda s: True, 60, "the restarted learner's web view")
        late = replica_adapter(spec, conn)  # a worker (re)started mid-stream
        learner.wait(consumed_to(end_offsets(conn, spec.topics.labels)), 120, "all labels")
        applied = [caught_up(a, n, 60) for a in (early, late)]
    finally:
        first.stop()
        learner.stop()
        for adapter in (early, late):
            if adapter is not None:
                adapter.close()

    # the late worker started from the checkpoint of what the killed learner had published
    assert late is not None
    checkpoint_seq = late.checkpoint_seq
    # (examples the killed learner had learned but not yet stored are learned again: so the
    # checkpoint may stand a little before what its status last said)
    assert 0 < checkpoint_seq < n and killed["labels_seen"] > 0
    assert applied == [n, n]
    # the log holds each example once, in learn order: none lost, none published twice
    values, end = read_since(conn, spec.topics.examples, None)
    seqs = [orjson.loads(v)["seq"] for v in values]
    assert seqs == list(range(n)) and end == n
    # and every replica is the learner's model trained offline on the same label sequence
    offline = OnlineLearner(spec.adaptation, spec.features.names)
    model = ScoringLoop(spec, conn, alert=lambda a: None).model
    X = feature_matrix(rows, spec.features.names)
    onnx = model.predict(X)
    offline.learn(X, onnx, np.array([r.label for r in rows]))
    columns = (*spec.features.names, "onnx_score")
    probe = np.column_stack([X[:300], onnx[:300]])
    task = AdaptationTask.CLASSIFICATION
    expected = river_predict(offline.model, task, columns, probe)
    for adapter in (early, late):
        assert adapter is not None and adapter.replica is not None
        np.testing.assert_array_equal(
            river_predict(adapter.replica.model, task, columns, probe), expected
        )
