"""Artifacts bound to what the operator approved, through a real worker on Kafka and Redis:
a signed snapshot copied under a newer version, and a model file rewritten together with
its manifest, are refused with an alert and a metric while the approved ones keep scoring."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from pydantic import SecretStr

from inference.adaptation import OnlineLearner, SnapshotStore
from inference.model_ref import file_sha256
from inference.registry import ModelRegistry
from streams.ops.topics import ensure_topics
from streams.spec import Connections, PipelineSpec, parse_spec
from tests.integration.harness import (
    produce,
    read_json,
    spec_dict,
    start_worker,
    synthetic,
    topic_size,
    wait_for,
)

pytestmark = pytest.mark.integration

SNAPSHOT_KEY = "s" * 32
MODEL_KEY = "m" * 32


def with_alerts(unique: str, model: dict[str, Any], **top: Any) -> PipelineSpec:
    raw = spec_dict(unique, model, partitions=1, **top)
    raw["topics"]["alerts"] = f"alerts-{unique}"
    return parse_spec(raw)


def counter(metric: Any) -> float:
    return float(metric._value.get())


def test_a_signed_snapshot_copied_to_a_newer_version_is_refused_by_the_worker(
    conn: Connections, model_file: Path, unique: str
) -> None:
    spec = with_alerts(
        unique, {"path": str(model_file)}, adaptation={"mode": "stack", "min_labels": 0}
    )
    ensure_topics(conn, spec)
    client = redis.Redis.from_url(conn.redis_url)
    store = SnapshotStore(client, spec.namespace, SNAPSHOT_KEY.encode())
    learner = OnlineLearner(spec.adaptation, tuple(spec.features.names))
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, len(spec.features.names)))
    learner.learn(X[:100], np.full(100, 0.5), (X[:100, 0] > 0).astype(float))
    v1 = store.publish(learner.model, learner.meta())
    learner.learn(X[100:], np.full(100, 0.5), (X[100:, 0] > 0).astype(float))
    v2 = store.publish(learner.model, learner.meta())

    first, second = synthetic(300, seed=41), synthetic(300, seed=42)
    conn = conn.model_copy(update={"snapshot_key": SecretStr(SNAPSHOT_KEY)})
    worker = start_worker(spec, conn, max_events=len(first) + len(second), idle_exit_s=60)
    produce(conn, spec, first)
    wait_for(lambda: topic_size(conn, spec.topics.predictions) >= len(first), 120, "predictions")

    rolled = v2 + 4  # v1's signed bytes under a version newer than the served v2
    fields = ("meta", "model", "sig", "state", "state_sig")
    copied = client.hmget(store.snapshot_key(v1), fields)
    client.hset(store.snapshot_key(rolled), mapping=dict(zip(fields, copied, strict=True)))  # type: ignore[arg-type]
    client.set(store.version_key, rolled)
    metrics = worker.worker.metrics
    wait_for(lambda: counter(metrics.snapshot_rejections) >= 1, 30, "the snapshot refused")
    produce(conn, spec, second)
    worker.join()

    predictions = read_json(conn, spec.topics.predictions, expected=len(first) + len(second))
    assert {p["adaptation_version"] for p in predictions} == {str(v2)}
    alerts = read_json(conn, str(spec.topics.alerts), expected=1, timeout_s=30)
    assert [(a["kind"], a["version"], a["kept_version"]) for a in alerts] == [
        ("snapshot_rejected", str(rolled), str(v2))
    ]
    assert f"signed as version {v1}" in alerts[0]["reason"]
    assert counter(metrics.snapshot_rejections) == 1
    client.close()


def test_a_model_rewritten_with_its_manifest_is_refused_by_the_worker(
    conn: Connections, model_file: Path, unique: str, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    registry = ModelRegistry(root, key=MODEL_KEY)
    registry.register("card-fraud", model_file)
    spec = with_alerts(unique, {"registry": str(root), "swap_poll": "200ms"})
    ensure_topics(conn, spec)
    first, second = synthetic(300, seed=51), synthetic(300, seed=52)
    conn = conn.model_copy(update={"model_key": SecretStr(MODEL_KEY)})
    worker = start_worker(spec, conn, max_events=len(first) + len(second), idle_exit_s=60)
    produce(conn, spec, first)
    wait_for(lambda: topic_size(conn, spec.topics.predictions) >= len(first), 120, "predictions")

    # Write access to the registry folder: a v2 with another file and a manifest to match.
    v2 = registry.register("card-fraud", model_file, activate=False)
    other = tmp_path / "other.onnx"
    data = bytearray(model_file.read_bytes())
    data[-1] ^= 0xFF  # another file: what the signature, not the sha256, must catch
    other.write_bytes(bytes(data))
    shutil.copy(other, v2.path)
    manifest_path = v2.path.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"] = file_sha256(v2.path)
    manifest_path.write_text(json.dumps(manifest))
    # Renamed into place as `activate` does: the worker polls ACTIVE meanwhile, and a file
    # truncated then written can be read empty in between (refused as "holds ''").
    staged = root / "card-fraud" / "ACTIVE.staged"
    staged.write_text("2\n")
    os.replace(staged, root / "card-fraud" / "ACTIVE")
    metrics = worker.worker.metrics
    wait_for(lambda: counter(metrics.model_swap_failures) >= 1, 30, "the model refused")
    produce(conn, spec, second)
    worker.join()

    predictions = read_json(conn, spec.topics.predictions, expected=len(first) + len(second))
    assert {p["model"]["version"] for p in predictions} == {"1"}
    alerts = read_json(conn, str(spec.topics.alerts), expected=1, timeout_s=30)
    assert [(a["kind"], a["version"], a["kept_version"]) for a in alerts] == [
        ("model_rejected", "2", "1")
    ]
    assert "manifest signature does not match" in alerts[0]["reason"]
    assert counter(metrics.model_swap_failures) == 1
