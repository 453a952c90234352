"""Hot swap: a new model version activated mid-stream takes over between batches; every
prediction's score is the score of the version it names."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from inference.onnx_model import OnnxModel
from inference.registry import ModelRegistry
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


def test_scores_follow_the_version_they_name(conn, model_file, unique, tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    v1_file = tmp_path / "v1.onnx"
    shutil.copy(model_file, v1_file)
    registry.register("card-fraud", v1_file)
    spec = make_spec(
        unique, {"registry": str(tmp_path / "models"), "version": "active", "swap_poll": "200ms"}
    )
    # v2: the same architecture trained on drifted labels, so its scores differ from v1's.
    X, y = training_set(spec, 3000, seed=3, drifted=True)
    v2_file = export_onnx(
        train_mlp(X, y, hidden=8, epochs=150, seed=3),
        tmp_path / "v2.onnx",
        feature_names=list(spec.model.feature_columns),
        model_name="card-fraud",
    )

    first, second = synthetic(3000, seed=31), synthetic(3000, seed=32)
    total = len(first) + len(second)
    worker = start_worker(spec, conn, max_events=total, idle_exit_s=60)
    produce(conn, spec, first)
    wait_for(lambda: topic_size(conn, spec.topics.predictions) >= len(first), 120, "v1 predictions")
    registry.register("card-fraud", v2_file)  # activates v2
    produce(conn, spec, second)
    stats = worker.join()
    assert stats.model_versions == {"1", "2"}

    predictions = read_json(conn, spec.topics.predictions, expected=total)
    assert max(prediction_counts(predictions).values()) == 1
    features = {r["event_id"]: r for r in read_json(conn, spec.topics.features, expected=total)}
    models = {
        v: OnnxModel.load(registry.resolve("card-fraud", v), spec.model, spec.features.names)
        for v in ("1", "2")
    }
    names = spec.features.names
    by_version: dict[str, int] = {"1": 0, "2": 0}
    for p in predictions:
        version = p["model"]["version"]
        by_version[version] += 1
        row = np.array([[features[p["event_id"]]["features"][n] for n in names]])
        expected = float(models[version].predict(row)[0])
        assert math.isclose(p["score"], expected, rel_tol=1e-6, abs_tol=1e-7), p
    assert by_version["1"] >= len(first) and by_version["2"] > 0
    # The versions really disagree, so matching the named one is a real check.
    rows = np.array([[r["features"][n] for n in names] for r in list(features.values())[:500]])
    assert np.abs(models["1"].predict(rows) - models["2"].predict(rows)).max() > 1e-3
