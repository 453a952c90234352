"""The learner measures a shadow candidate beside the active model on the same events, and
the promotion policy decides from those two."""

from __future__ import annotations

import numpy as np
import pytest

from inference.prequential import WindowMetrics
from inference.promotion import PromotionPolicy
from streams.learner.shadow_metrics import shadow_comparisons
from streams.worker.prediction_log import LoggedPrediction
from tests.unit.streams.learner.test_label_processor import FakeLog, label, make_spec, processor


def test_shadow_metrics_cover_the_events_it_scored_beside_the_active_ones() -> None:
    spec = make_spec()
    log = FakeLog()
    rng = np.random.default_rng(5)
    y = (rng.random(40) > 0.5).astype(float)
    active = np.clip(0.5 + (rng.random(40) - 0.5), 0.01, 0.99)  # noise
    shadow = np.where(y == 1, 0.8, 0.2)  # right every time
    for i in range(40):
        scores = {"onnx": float(active[i])}
        if i >= 10:  # the shadow started with the 11th event
            scores["shadow:2"] = float(shadow[i])
        log.entries[str(i)] = LoggedPrediction(str(i), {"a": 0.0}, scores, "1", None, i * 100)
    p = processor(spec, log)
    p.consume([label(i, float(y[i])) for i in range(40)])

    got = shadow_comparisons(p.table.items(), "classification")["2"]
    expected_shadow, expected_active = (
        WindowMetrics.new("classification"),
        WindowMetrics.new("classification"),
    )
    expected_shadow.update(y[10:], shadow[10:], threshold=spec.model.threshold)
    expected_active.update(y[10:], active[10:], threshold=spec.model.threshold)
    assert got.labels == 30
    assert got.shadow == pytest.approx(expected_shadow.result())
    assert got.active == pytest.approx(expected_active.result())
    # per window too (what the learner exports as gauges): all 40 events are in [0, 10 s)
    assert shadow_comparisons(p.table.items(), "classification", start=0)["2"] == got
    assert shadow_comparisons(p.table.items(), "classification", start=10_000) == {}


@pytest.mark.parametrize(
    ("labels", "candidate", "active", "promote"),
    [
        (1000, 0.95, 0.90, True),
        (1000, 0.905, 0.90, False),  # within the margin
        (100, 0.99, 0.50, False),  # too few labels
        (1000, None, 0.90, False),
    ],
)
def test_promotion_policy(labels, candidate, active, promote) -> None:
    policy = PromotionPolicy("roc_auc", margin=0.01, min_labels=500)
    go, why = policy.decide(labels, {"roc_auc": candidate}, {"roc_auc": active})
    assert go is promote and why


def test_log_loss_is_better_lower() -> None:
    policy = PromotionPolicy("log_loss", margin=0.01, min_labels=1)
    assert policy.decide(10, {"log_loss": 0.2}, {"log_loss": 0.4})[0]
    assert not policy.decide(10, {"log_loss": 0.4}, {"log_loss": 0.2})[0]
