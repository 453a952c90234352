"""publish → shadow → promote → rollback on a running worker: predictions name the new
version after promote and the old one after rollback, every event is scored exactly once,
and shadow scores reach the prediction log, never the predictions topic."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import redis

from inference.onnx_model import OnnxModel
from inference.registry import ModelRegistry
from inference.rollout import ModelRollout
from streams.worker.prediction_log import PredictionLog
from streams.worker.scoring import SHADOW_PREFIX
from streams.workloads.demo_model import export_onnx, train_mlp, training_set
from tests.integration.harness import (
    make_spec,
    prediction_counts,
    produce,
    read_json,
    start_worker,
    synthetic,
    topic_size,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_publish_shadow_promote_rollback_live(conn, model_file, unique, tmp_path):
    root = tmp_path / "models"
    registry = ModelRegistry(root)
    rollout = ModelRollout(registry)
    spec = make_spec(unique, {"registry": str(root), "version": "active", "swap_poll": "200ms"})
    names = spec.features.names
    v1_file = tmp_path / "v1.onnx"
    shutil.copy(model_file, v1_file)
    rollout.promote("card-fraud", rollout.publish("card-fraud", v1_file, spec.model, names).version)
    X, y = training_set(spec, 3000, seed=3, drifted=True)
    v2_file = export_onnx(
        train_mlp(X, y, hidden=8, epochs=150, seed=3),
        tmp_path / "v2.onnx",
        feature_names=list(names),
        model_name="card-fraud",
    )
    v2 = rollout.publish("card-fraud", v2_file, spec.model, names, metrics={"roc_auc": 0.9})

    phases = [synthetic(800, seed=40 + i) for i in range(4)]
    total = sum(len(p) for p in phases)
    running = start_worker(spec, conn, max_events=total, idle_exit_s=60)
    worker = running.worker
    done = 0

    def phase(events: list) -> None:
        nonlocal done
        produce(conn, spec, events)
        done += len(events)
        wait_for(lambda: topic_size(conn, spec.topics.predictions) >= done, 120, "predictions")

    try:
        phase(phases[0])  # v1 alone
        rollout.shadow("card-fraud", v2.version)
        wait_for(lambda: worker.shadow is not None, 60, "the shadow loaded")
        wait_for(lambda: shadow_gauge(worker) == {v2.version}, 30, "the shadow's gauge")
        phase(phases[1])  # v1 served, v2 in shadow
        rollout.promote("card-fraud", v2.version)
        wait_for(lambda: worker.model.version == v2.version, 60, "v2 served")
        phase(phases[2])  # v2 served
        rollout.rollback("card-fraud")
        wait_for(lambda: worker.model.version == "1", 60, "v1 served again")
        phase(phases[3])
        assert shadow_gauge(worker) == set()  # promoting the shadow ended it
    finally:
        running.stop()
    running.join()

    raw = read_json(conn, spec.topics.predictions, expected=total)
    counts = prediction_counts(raw)
    assert set(counts) == {e["event_id"] for p in phases for e in p}
    assert max(counts.values()) == 1  # none skipped, none twice
    version_of = {p["event_id"]: p["model"]["version"] for p in raw}
    expected_versions = ["1", "1", v2.version, "1"]
    for events, want in zip(phases, expected_versions, strict=True):
        assert {version_of[e["event_id"]] for e in events} == {want}
    assert not any("shadow" in str(p) for p in raw)  # shadow scores are never served

    log = PredictionLog(redis.Redis.from_url(conn.redis_url), spec.namespace, names, 3_600_000)
    shadow_name = f"{SHADOW_PREFIX}{v2.version}"
    shadowed = log.read([e["event_id"] for e in phases[1]])
    unshadowed = log.read([e["event_id"] for e in phases[0] + phases[2]])
    assert all(entry is not None and shadow_name in entry.scores for entry in shadowed)
    assert all(entry is not None and shadow_name not in entry.scores for entry in unshadowed)
    candidate = OnnxModel.load(registry.resolve("card-fraud", v2.version), spec.model, names)
    rows = np.array([[entry.features[n] for n in names] for entry in shadowed if entry])
    want = candidate.predict(rows)
    got = [entry.scores[shadow_name] for entry in shadowed if entry]
    assert all(
        math.isclose(g, w, rel_tol=1e-6, abs_tol=1e-7) for g, w in zip(got, want, strict=True)
    )


def shadow_gauge(worker) -> set[str]:
    """The versions `streamfer_shadow_model_info` reports (what the dashboard shows)."""
    return {
        sample.labels["version"]
        for metric in worker.metrics.registry.collect()
        if metric.name == "streamfer_shadow_model_info"
        for sample in metric.samples
        if sample.value == 1
    }
