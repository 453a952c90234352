"""The learner (`streamfer learn`, a faust-streaming app) against real Kafka and Redis.

SIGKILL mid-stream and restart: no label is lost or learned twice, the metrics continue
where they were, and the model continues from the last snapshot — checked exactly against
the same River pipeline trained offline on the same label sequence; on a single Redis and on
a Redis Cluster (prediction log, snapshots).

Helpers here (a learner process, an adaptation spec, a scoring loop standing in for the
worker) are shared with test_adaptation_drift.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from features.redis_connect import connect
from inference.adaptation import (
    AdaptationTask,
    Adapter,
    OnlineLearner,
    SnapshotStore,
    river_predict,
)
from inference.onnx_model import ModelRef, OnnxModel
from streams.learner.process import LearnerProcess
from streams.spec import Connections, PipelineSpec, parse_spec
from streams.worker.prediction_log import PredictionLog
from streams.workloads.producing import produce_events
from streams.workloads.replay import (
    LabelledRow,
    feature_matrix,
    hyperplane_drift_rows,
    label_record,
    train_prefix_model,
)
from tests.integration.redis_kinds import KINDS, RedisUnderTest, redis_under_test

pytestmark = pytest.mark.integration

SNAPSHOT_KEY = "integration-test-snapshot-key-0123456789"
N_FEATURES = 5
COLUMNS = [f"x{i}" for i in range(N_FEATURES)]


@pytest.fixture(autouse=True)
def snapshot_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """Workers (the scoring loop here) and the learner share the signing key."""
    monkeypatch.setenv("STREAMFER_SNAPSHOT_KEY", SNAPSHOT_KEY)
    return SNAPSHOT_KEY


# -- helpers shared with test_adaptation_drift.py ---------------------------------------
def adaptation_spec(
    unique: str, model_path: Path, *, partitions: int = 2, **adaptation: Any
) -> dict[str, Any]:
    """A raw-feature pipeline (x0…x4 → ONNX) with adaptation on, as a spec dict."""
    settings: dict[str, Any] = {
        "mode": "stack",
        "min_labels": 200,
        "model": [
            {"preprocessing.StandardScaler": {}},
            {"linear_model.LogisticRegression": {"optimizer": {"optim.SGD": {"lr": 0.05}}}},
        ],
        "snapshot": {"every_labels": 100, "every": "1s"},
        "batch": {"max_size": 100, "max_wait": "100ms"},
        "label_retry": {"attempts": 4, "backoff": "200ms"},
        "metrics_window": "20s",
        **adaptation,
    }
    topics: dict[str, Any] = {
        "events": f"ev-{unique}",
        "predictions": f"pred-{unique}",
        "dead_letter": f"dlq-{unique}",
        "labels": f"lab-{unique}",
        "alerts": f"alert-{unique}",
        "partitions": partitions,
    }
    if adaptation.get("serving") == "replica":
        topics["examples"] = f"examples-{unique}"  # replicas tail the learner's examples log
    return {
        "name": f"a-{unique}",
        "topics": topics,
        "event": {
            "id": "event_id",
            "time": {"field": "event_time", "unit": "ms"},
            "entities": ["row"],
            "fields": {c: {"type": "float"} for c in COLUMNS},
        },
        "features": {"transforms": [{"name": c, "field": c, "op": "raw"} for c in COLUMNS]},
        "model": {
            "name": "hyperplane",
            "path": str(model_path),
            "inputs": {"features": COLUMNS},
            "providers": "cpu",
            "threads": 1,
        },
        "adaptation": settings,
    }


def start_learner(spec_file: Path, conn: Connections) -> LearnerProcess:
    """The learner as an OS process (it is killed with SIGKILL), with the tests' key."""
    return LearnerProcess(
        spec_file,
        conn,
        spec_file.parent,
        args=("--session-timeout", "6"),
        env={"STREAMFER_SNAPSHOT_KEY": SNAPSHOT_KEY},
    )


class ScoringLoop:
    """What a worker does per batch, minus Kafka: ONNX, the Adapter, the prediction log."""

    def __init__(
        self, spec: PipelineSpec, conn: Connections, alert: Callable[[dict[str, Any]], None]
    ) -> None:
        client = connect(conn.redis_url)
        self.spec = spec
        self.model = OnnxModel.load(
            ModelRef.for_file(spec.model.name, str(spec.model.path)),
            spec.model,
            spec.features.names,
        )
        self.adapter = Adapter.open(
            spec.adaptation,
            client,
            spec.namespace,
            spec.features.names,
            alert,
            key=SNAPSHOT_KEY,
        )
        self.log = PredictionLog(
            client, spec.namespace, spec.features.names, spec.prediction_log.horizon
        )
        self.versions: list[str | None] = []

    def score(self, rows: Sequence[LabelledRow]) -> None:
        self.adapter.poll()
        X = feature_matrix(rows, self.spec.features.names)
        onnx = self.model.predict(X)
        adapted = self.adapter.score(X, onnx)
        scores = {"onnx": onnx, "final": adapted.final}
        if adapted.river is not None:
            scores["river"] = adapted.river
        self.log.write(
            [str(r.event["event_id"]) for r in rows],
            X,
            scores,
            self.model.version,
            adapted.version,
            [r.event_time_ms for r in rows],
        )
        self.versions.append(adapted.version)


def produce_labels(conn: Connections, spec: PipelineSpec, rows: Sequence[LabelledRow]) -> None:
    assert spec.topics.labels
    labels = [label_record(r, "event_id", r.event_time_ms) for r in rows]
    produce_events(conn, spec.topics.labels, labels, key_field="event_id")


def end_offsets(conn: Connections, topic: str) -> dict[int, int]:
    """Each partition's high watermark: where a learner that consumed everything stands."""
    consumer = Consumer(conn.kafka_config(**{"group.id": "end-offsets"}))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def consumed_to(ends: dict[int, int]) -> Callable[[dict[str, Any]], bool]:
    """A status predicate: every label up to `ends` consumed and none waiting in retry, so
    nothing more can be learned (anything learned twice would already be counted)."""

    def done(status: dict[str, Any]) -> bool:
        partitions = status["offsets"]["partitions"]
        return status["pending"] == 0 and all(
            str(p) in partitions
            and partitions[str(p)]["next"] >= end
            and not partitions[str(p)]["pending"]
            for p, end in ends.items()
            if end > 0
        )

    return done


def create_topic(conn: Connections, name: str, partitions: int) -> None:
    admin = AdminClient(conn.kafka_config())
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result()


def setup_pipeline(
    tmp_path: Path, unique: str, n_rows: int, drift_at: int, train_rows: int, **kw: Any
) -> tuple[PipelineSpec, Path, list[LabelledRow]]:
    """Spec file, hyperplane rows, and the ONNX model trained on the first `train_rows`."""
    raw = adaptation_spec(unique, tmp_path / "model.onnx", **kw)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(raw))
    spec = parse_spec(raw)
    rows = hyperplane_drift_rows(n_rows, drift_at, spec=spec, rate=10.0)
    train_prefix_model(rows, spec, fraction=train_rows / n_rows)
    return spec, spec_file, rows


def accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(((p >= 0.5) == (y >= 0.5)).mean())


# -- the test ------------------------------------------------------------------------------
@pytest.fixture(params=KINDS)
def target(request: pytest.FixtureRequest) -> RedisUnderTest:
    return redis_under_test(request, request.param)


def test_learner_sigkill_restart_loses_no_label_and_continues_from_snapshot(
    tmp_path: Path, target: RedisUnderTest, unique: str
) -> None:
    conn = target.conn
    n = 3000
    before_kill = 2000  # labels published before the kill …
    kill_after = before_kill // 2  # … of which at least this many are learned first
    spec, spec_file, all_rows = setup_pipeline(tmp_path, unique, n + 300, n + 300, 300)
    rows = all_rows[300:]
    assert spec.topics.labels
    # One label partition: the label order is then fixed, so the model after the restart can
    # be compared bit for bit with an offline model trained on the same sequence.
    create_topic(conn, spec.topics.labels, 1)
    scoring = ScoringLoop(spec, conn, alert=lambda a: None)
    scoring.score(rows)  # every prediction is logged before its label arrives
    client = connect(conn.redis_url)
    store = SnapshotStore(client, spec.namespace, SNAPSHOT_KEY.encode())

    learner = start_learner(spec_file, conn)
    try:
        learner.wait(lambda s: True, 60, "the learner's web view")
        produce_labels(conn, spec, rows[:before_kill])
        learner.wait(lambda s: s["labels_seen"] >= kill_after, 60, f"{kill_after} labels learned")
        learner.kill()
        killed_at = store.latest_version()
        assert killed_at is not None
        last = store.load(killed_at)
        assert last is not None and 0 < last.meta["labels_seen"] < n
    finally:
        learner.stop()

    produce_labels(conn, spec, rows[before_kill:])  # arrive while no learner runs
    ends = end_offsets(conn, spec.topics.labels)
    assert sum(ends.values()) == n
    learner = start_learner(spec_file, conn)
    try:
        status = learner.wait(consumed_to(ends), 120, "every label consumed")
    finally:
        learner.stop()

    # the model continued from the snapshot taken before the kill …
    assert status["resumed_from"] == {
        "version": killed_at,
        "labels_seen": last.meta["labels_seen"],
    }
    # … every label was learned exactly once, and counted once in the metrics
    assert status["labels_seen"] == n
    assert status["expired"] == 0
    total = status["total"]
    assert total["onnx"]["n"] == total["river"]["n"] == total["final"]["n"] == n

    # the served model equals River trained offline on the same labels, in the same order
    final = store.load(store.latest_version() or 0)
    assert final is not None and final.meta["labels_seen"] == n
    offline = OnlineLearner(spec.adaptation, spec.features.names)
    X = feature_matrix(rows, spec.features.names)
    onnx = scoring.model.predict(X)
    y = np.array([r.label for r in rows])
    outcome = offline.learn(X, onnx, y)
    columns = (*spec.features.names, "onnx_score")
    probe = np.column_stack([X[:500], onnx[:500]])
    task = AdaptationTask.CLASSIFICATION
    np.testing.assert_allclose(
        river_predict(final.model, task, columns, probe),
        river_predict(offline.model, task, columns, probe),
        rtol=1e-12,
    )
    # and the metrics continued: identical to the offline prequential evaluation
    assert total["river"]["accuracy"] == pytest.approx(accuracy(y, outcome.river), abs=1e-12)
    assert total["onnx"]["accuracy"] == pytest.approx(accuracy(y, onnx), abs=1e-12)


def test_learner_started_before_its_topics_exist_co_partitions_the_changelog(
    tmp_path: Path, conn: Connections, unique: str
) -> None:
    """A first start on a fresh cluster: the labels topic gets the spec's partition count
    (not the broker's auto-create default), the metrics changelog the same count, and labels
    on the last partition are learned (a smaller changelog crashed Faust's producer)."""
    spec, spec_file, rows = setup_pipeline(tmp_path, unique, 400, 400, 100)
    assert spec.topics.labels and spec.topics.partitions == 2
    ScoringLoop(spec, conn, alert=lambda a: None).score(rows)
    learner = start_learner(spec_file, conn)
    try:
        learner.wait(lambda s: True, 60, "the learner's web view")
        produce_labels(conn, spec, rows)
        status = learner.wait(consumed_to(end_offsets(conn, spec.topics.labels)), 60, "labels")
    finally:
        learner.stop()
    topics = AdminClient(conn.kafka_config()).list_topics(timeout=10).topics
    changelogs = [n for n in topics if n.startswith(f"streamfer-learn-{spec.namespace}-")]
    changelogs = [n for n in changelogs if n.endswith("-changelog")]
    assert changelogs, sorted(n for n in topics if unique in n)
    assert len(topics[spec.topics.labels].partitions) == 2
    assert all(len(topics[n].partitions) == 2 for n in changelogs)
    assert status["labels_seen"] == len(rows)
