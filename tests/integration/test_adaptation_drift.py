"""Adaptation end to end on real Kafka and Redis: abrupt drift, and tampered snapshots.

The drift test runs the whole loop: events → the worker (features, ONNX, River Adapter,
prediction log, predictions) and labels → the learner process → snapshots → the worker.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import redis

from inference.adaptation import (
    Adapter,
    OnlineLearner,
    SnapshotStore,
)
from inference.prequential import WindowMetrics, window_start
from streams.learner.report import read_table
from streams.learner.tables import merged_windows
from streams.ops.topics import ensure_topics
from streams.spec import Connections
from streams.worker.alerts import AlertSink
from streams.workloads.producing import produce_events
from streams.workloads.replay import LabelledRow, feature_matrix
from tests.integration.harness import read_json, start_worker
from tests.integration.test_learner import (
    SNAPSHOT_KEY,
    consumed_to,
    end_offsets,
    produce_labels,
    setup_pipeline,
    start_learner,
)

pytestmark = pytest.mark.integration

TRAIN_ROWS = 1000  # the ONNX model sees rows 0…999 (before the drift) …
DRIFT_AT = 2500  # … the concept changes at row 2500 …
N_ROWS = 4500  # … and the replay scores rows 1000…4499.
CATCH_UP = 500  # labels after the drift within which final must be within 3 points of River


@pytest.fixture(autouse=True)
def snapshot_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("STREAMFER_SNAPSHOT_KEY", SNAPSHOT_KEY)
    return SNAPSHOT_KEY


def accuracy_between(
    windows: dict[int, dict[str, WindowMetrics]], output: str, lo_ms: int, hi_ms: int
) -> float:
    """Accuracy of one output over the windows starting in [lo_ms, hi_ms)."""
    total = WindowMetrics.new("classification")
    for start, outputs in windows.items():
        if lo_ms <= start < hi_ms:
            total = total.merge(outputs[output])
    result = total.result()["accuracy"]
    assert result is not None, "no window in range"
    return result


def streamfer_report(conn: Connections, spec_file: Path, png: Path) -> dict[str, Any]:
    """`streamfer report --json` as a user runs it: the one JSON document on stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "streams", "report", "-s", str(spec_file), "--json", "-o", str(png)],
        env={**os.environ, "STREAMFER_BOOTSTRAP": conn.bootstrap},
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return dict(orjson.loads(done.stdout))


def served_by_window(
    predictions: list[dict[str, Any]], labelled: list[LabelledRow], size_ms: int
) -> dict[int, dict[str, list[float]]]:
    """Per window of the prediction's event time: the labels and each output the workers
    published for them (River only where a worker had a snapshot)."""
    label_of = {str(r.event["event_id"]): r.label for r in labelled}
    out: dict[int, dict[str, list[float]]] = {}
    for p in predictions:
        y = label_of[str(p["event_id"])]
        c = out.setdefault(window_start(int(p["event_time"]), size_ms), {})
        for name, value in (
            ("y", y),
            ("onnx", p["scores"]["onnx"]),
            ("final", p["score"]),
            ("river", p["scores"].get("river")),
        ):
            c.setdefault(name, [])
            c.setdefault(f"{name}_y", [])
            if value is not None:
                c[name].append(value)
                c[f"{name}_y"].append(y)
    return out


def test_abrupt_drift_final_catches_up_with_river_and_alerts(
    tmp_path: Path, conn: Connections, unique: str
) -> None:
    spec, spec_file, rows = setup_pipeline(tmp_path, unique, N_ROWS, DRIFT_AT, TRAIN_ROWS)
    ensure_topics(conn, spec)
    replayed = rows[TRAIN_ROWS:]
    learner = start_learner(spec_file, conn)
    worker = start_worker(spec, conn)
    try:
        learner.wait(lambda s: True, 60, "the learner's web view")
        for start in range(0, len(replayed), 100):
            chunk = replayed[start : start + 100]
            produce_events(conn, spec.topics.events, [r.event for r in chunk], key_field="row")
            produce_labels(conn, spec, chunk)  # may overtake the scoring: the learner retries
            sent = start + len(chunk)

            # a steady state: the learner keeps within a few snapshots of the producer
            def caught_up(status: dict[str, Any], sent: int = sent) -> bool:
                return bool(status["labels_seen"] >= sent - 200)

            learner.wait(caught_up, 60, "the learner")
        assert spec.topics.labels
        status = learner.wait(consumed_to(end_offsets(conn, spec.topics.labels)), 60, "labels")
    finally:
        worker.stop()
        learner.stop()
    assert worker.join().predictions == len(replayed)
    assert status["expired"] == 0, "a label found no logged prediction"
    assert status["labels_seen"] == len(replayed)

    # every prediction names its adaptation version once River snapshots exist
    predictions = read_json(conn, spec.topics.predictions, expected=len(replayed))
    last = max(predictions, key=lambda p: int(p["event_id"]))
    assert last["adaptation_version"] is not None and "river" in last["scores"]

    # `streamfer report --json`: the served outputs, recomputed here from the two topics …
    png = tmp_path / "report.png"
    report = streamfer_report(conn, spec_file, png)
    expected = served_by_window(predictions, replayed, spec.adaptation.metrics_window)
    assert report["served_join"] == {
        "labels": len(replayed),
        "joined": len(replayed),
        "unmatched": 0,
    }
    assert {w["start_ms"] for w in report["windows"]} == set(expected)
    threshold = spec.model.threshold
    for window in report["windows"]:
        outputs = expected[window["start_ms"]]
        assert window["served"]["labels"] == len(outputs["y"])
        for name in ("onnx", "river", "final"):
            y, p = np.array(outputs[f"{name}_y"]), np.array(outputs[name])
            served = window["served"][name]
            assert served["n"] == len(y), (window["start_ms"], name)
            if len(y):
                hits = ((p >= threshold) == (y >= 0.5)).mean()
                assert served["accuracy"] == pytest.approx(hits, abs=1e-12)
    # … beside the learner's own predict-then-learn, which counted every label once
    assert sum(w["learner"]["labels"] for w in report["windows"]) == len(replayed)
    assert png.stat().st_size > 10_000

    # prequential metrics, as `streamfer report` reads them back from the table's changelog
    items = read_table(conn, spec)
    windows = merged_windows(items, "classification")
    t = [r.event_time_ms for r in rows]
    before = accuracy_between(windows, "onnx", t[TRAIN_ROWS], t[DRIFT_AT])
    after = accuracy_between(windows, "onnx", t[DRIFT_AT], t[-1] + 1)
    river = accuracy_between(windows, "river", t[DRIFT_AT + CATCH_UP], t[-1] + 1)
    final = accuracy_between(windows, "final", t[DRIFT_AT + CATCH_UP], t[-1] + 1)
    print(f"onnx before {before:.3f} after {after:.3f}; river {river:.3f} final {final:.3f}")
    assert before - after >= 0.10, "the offline model must degrade after the drift"
    assert abs(final - river) <= 0.03, f"final {final:.3f} vs River-only {river:.3f}"
    assert final >= after + 0.08, "adaptation must beat the stale model after the drift"

    # the drift was detected on the ONNX model's error stream and published
    assert spec.topics.alerts
    published = read_json(conn, spec.topics.alerts, timeout_s=30)
    onnx_drift = [
        a
        for a in published
        if a.get("type") == "drift" and a["kind"] == "output" and a["name"] == "onnx"
    ]
    assert onnx_drift, f"no drift alert on the ONNX error stream among {len(published)} alerts"
    assert any(a["event_time_ms"] >= t[DRIFT_AT] for a in onnx_drift)
    assert {"detector", "statistics", "labels_seen", "detected_at_ms"} <= set(onnx_drift[0])


class Boom:
    """A payload that would run a command when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_tampered_snapshot_is_refused_previous_kept_and_alert_published(
    tmp_path: Path, conn: Connections, unique: str
) -> None:
    spec, _spec_file, rows = setup_pipeline(tmp_path, unique, 600, 600, 100)
    ensure_topics(conn, spec)
    client = redis.Redis.from_url(conn.redis_url)
    store = SnapshotStore(client, spec.namespace, SNAPSHOT_KEY.encode())
    names = spec.features.names
    X = feature_matrix(rows, names)
    onnx = np.full(len(rows), 0.5)
    y = np.array([r.label for r in rows])
    learner = OnlineLearner(spec.adaptation, names)
    learner.learn(X[:300], onnx[:300], y[:300])
    v1 = store.publish(learner.model, learner.meta())

    assert spec.topics.alerts
    alerts = AlertSink(conn, spec.topics.alerts, "test-worker")
    # Every poll checks Redis (no throttle): this test is about what a check does.
    adapter = Adapter.open(
        spec.adaptation,
        client,
        spec.namespace,
        names,
        alerts.send,
        key=SNAPSHOT_KEY,
        poll_interval_s=0.0,
    )
    assert adapter.version == str(v1)
    before = adapter.score(X[300:], onnx[300:])

    # a newer version whose pickle was replaced: it would run a command if unpickled
    learner.learn(X[300:], onnx[300:], y[300:])
    v2 = store.publish(learner.model, learner.meta())
    marker = tmp_path / "pwned"
    client.hset(store.snapshot_key(v2), "model", pickle.dumps(Boom(marker)))
    event = adapter.poll()
    assert event is not None and not event.ok and event.version == str(v2)
    assert not marker.exists(), "a tampered snapshot was unpickled"
    assert adapter.version == str(v1)
    after = adapter.score(X[300:], onnx[300:])
    assert after.version == str(v1)
    np.testing.assert_array_equal(after.final, before.final)
    assert adapter.poll() is None  # refused once, not re-fetched every batch

    # signed metadata too: promoting River by editing the flag is refused
    v3 = store.publish(learner.model, learner.meta())
    meta = orjson.loads(client.hmget(store.snapshot_key(v3), ["meta"])[0] or b"{}")
    client.hset(store.snapshot_key(v3), "meta", orjson.dumps({**meta, "promoted": True}))
    refused = adapter.poll()
    assert refused is not None and not refused.ok and adapter.version == str(v1)

    # a correctly signed newer version is taken
    v4 = store.publish(learner.model, learner.meta())
    taken = adapter.poll()
    assert taken is not None and taken.ok and adapter.version == str(v4)

    alerts.close()
    published = read_json(conn, spec.topics.alerts, expected=2, timeout_s=30)
    rejected = [a for a in published if a["kind"] == "snapshot_rejected"]
    assert [a["version"] for a in rejected] == [str(v2), str(v3)]
    assert all(a["kept_version"] == str(v1) for a in rejected)
    assert "signature" in rejected[0]["reason"]
