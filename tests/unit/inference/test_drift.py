"""Drift detector wiring: River detectors on error and feature streams, alerts as JSON."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from inference.adaptation.river_build import RiverSpecError
from inference.drift import DriftMonitor


def _errors_then_drift(
    n: int = 2000, at: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores whose error rate jumps from 5% to 50% at row `at`."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(float)
    wrong = rng.random(n) < np.where(np.arange(n) < at, 0.05, 0.5)
    scores = np.where(wrong, 1 - y, y) * 0.8 + 0.1
    return y, scores


def test_adwin_fires_on_an_output_error_jump_and_only_after_it() -> None:
    y, scores = _errors_then_drift()
    monitor = DriftMonitor({"drift.ADWIN": {}}, outputs=("onnx",))
    times = np.arange(len(y)) * 1000
    alerts = []
    for start in range(0, len(y), 250):  # fed in batches, like the learner does
        part = slice(start, start + 250)
        alerts += monitor.update(
            y[part], {"onnx": scores[part]}, {}, times[part], labels_seen_before=start
        )
    assert alerts, "the jump in the error rate was not detected"
    assert all(a.labels_seen > 1000 for a in alerts)
    first = alerts[0]
    assert (first.detector, first.kind, first.name) == ("ADWIN", "output", "onnx")
    assert first.event_time_ms == (first.labels_seen - 1) * 1000
    body = orjson.loads(orjson.dumps(first.to_json()))
    assert body["type"] == "drift" and {"estimation", "width", "values_seen"} <= set(
        body["statistics"]
    )


def test_stationary_streams_raise_nothing() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(3000) < 0.5).astype(float)
    scores = np.where(rng.random(3000) < 0.1, 1 - y, y)
    monitor = DriftMonitor({"drift.ADWIN": {}}, outputs=("onnx", "river"), features=("f",))
    alerts = monitor.update(
        y, {"onnx": scores, "river": scores}, {"f": rng.normal(size=3000)}, np.zeros(3000)
    )
    assert alerts == []


def test_feature_streams_and_other_detectors() -> None:
    values = np.concatenate([np.zeros(500), np.full(500, 5.0)]) + np.random.default_rng(2).normal(
        0, 0.1, 1000
    )
    monitor = DriftMonitor({"drift.PageHinkley": {}}, outputs=(), features=("amount",))
    alerts = monitor.update(np.zeros(1000), {}, {"amount": values}, np.arange(1000))
    assert alerts and alerts[0].kind == "feature" and alerts[0].name == "amount"
    assert alerts[0].detector == "PageHinkley" and alerts[0].labels_seen > 500


def test_regression_error_stream_is_absolute_error() -> None:
    monitor = DriftMonitor({"drift.ADWIN": {}}, task="regression")
    np.testing.assert_array_equal(
        monitor.errors(np.array([1.0, 2.0]), np.array([1.5, 0.0])), [0.5, 2.0]
    )


@pytest.mark.parametrize(
    ("detector", "says"),
    [
        ({"drift.ADWN": {}}, "did you mean ADWIN"),
        ({"linear_model.LogisticRegression": {}}, "not a River drift detector"),
        ({"drift.ADWIN": {"delta": "x", "nope": 1}}, "nope"),
    ],
)
def test_bad_detector_declarations_are_refused(detector: dict[str, object], says: str) -> None:
    with pytest.raises(RiverSpecError) as caught:
        DriftMonitor(detector)
    assert says in str(caught.value)
