"""The thin vertical slice: synthetic events → Kafka → features in Redis → ONNX → predictions."""

from __future__ import annotations

import re
from urllib.request import urlopen

import pytest
import redis

from inference.onnx_model import ModelRef
from streams.worker.prediction_log import PredictionLog
from tests.integration.harness import (
    assert_features_exact,
    make_spec,
    prediction_counts,
    produce,
    read_json,
    recompute_features,
    start_worker,
    synthetic,
)

pytestmark = pytest.mark.integration


def test_ten_thousand_events_get_one_prediction_each_with_exact_features(conn, model_file, unique):
    spec = make_spec(unique, {"path": str(model_file)})
    events = synthetic(10_000)
    assert produce(conn, spec, events) == len(events)

    running = start_worker(spec, conn, max_events=len(events), idle_exit_s=60)
    port = running.worker.metrics.serve("127.0.0.1", 0)
    stats = running.join()

    assert stats.events_in == len(events) and stats.dead_letters == 0
    predictions = read_json(conn, spec.topics.predictions, expected=len(events))
    counts = prediction_counts(predictions)
    assert set(counts) == {e["event_id"] for e in events}
    assert max(counts.values()) == 1
    version = ModelRef.for_file("card-fraud", model_file).version
    for p in predictions:
        assert 0.0 <= p["score"] <= 1.0
        assert p["model"] == {"name": "card-fraud", "version": version}
        assert p["decision"] == (p["score"] >= spec.model.threshold)

    metrics = urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert "streamfer_events_in_total 10000.0" in metrics
    assert "streamfer_predictions_out_total 10000.0" in metrics
    model_line = re.search(r"^streamfer_model_info\{(.*)\} 1\.0$", metrics, re.MULTILINE)
    assert model_line and f'version="{version}"' in model_line.group(1)
    for stage in ("decode", "features", "inference", "prediction_log", "encode", "produce"):
        assert f'streamfer_stage_seconds_count{{stage="{stage}"}}' in metrics

    served = read_json(conn, spec.topics.features, expected=len(events))
    assert_features_exact(served, recompute_features(conn, spec), spec.features.names)

    # The prediction log holds, per event id, the features and score it was served with.
    log = PredictionLog(
        redis.Redis.from_url(conn.redis_url), spec.namespace, spec.features.names, 3_600_000
    )
    sample = predictions[::97]
    logged = log.read([p["event_id"] for p in sample])
    by_id = {r["event_id"]: r for r in served}
    for p, entry in zip(sample, logged, strict=True):
        assert entry is not None, p["event_id"]
        assert entry.scores["onnx"] == p["score"]
        assert entry.model_version == version
        assert entry.features == by_id[p["event_id"]]["features"]
