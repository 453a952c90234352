"""Prequential metric maths: window sums against River's metrics and exact formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from river import metrics

from inference.prequential import (
    AUC_BINS,
    RollingComparison,
    Task,
    WindowMetrics,
    binned_auc,
    exact_metric,
    window_start,
)


def _sample(n: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(float)
    p = np.clip(0.35 * y + rng.random(n) * 0.65, 0.0, 1.0)
    return y, p


def test_accuracy_and_log_loss_match_river() -> None:
    y, p = _sample()
    window = WindowMetrics.new("classification")
    window.update(y, p, threshold=0.5)
    acc, ll = metrics.Accuracy(), metrics.LogLoss()
    for yi, pi in zip(y, p, strict=True):
        acc.update(bool(yi), pi >= 0.5)
        ll.update(bool(yi), {True: pi, False: 1 - pi})
    result = window.result()
    assert result["n"] == len(y)
    assert result["accuracy"] == pytest.approx(acc.get(), abs=1e-12)
    assert result["log_loss"] == pytest.approx(ll.get(), rel=1e-9)


def test_threshold_is_the_served_decision_rule() -> None:
    window = WindowMetrics.new("classification")
    window.update(np.array([1.0, 0.0]), np.array([0.35, 0.25]), threshold=0.3)
    assert window.result()["accuracy"] == 1.0


def test_binned_auc_is_exact_without_ties_in_a_bin() -> None:
    y = np.array([1, 1, 0, 1, 0, 0, 1, 0], dtype=float)
    p = (np.array([95, 80, 70, 60, 45, 30, 15, 5]) + 0.5) / 100  # one sample per bin
    window = WindowMetrics.new("classification")
    window.update(y, p)
    assert window.result()["roc_auc"] == pytest.approx(exact_metric("roc_auc", y, p), abs=1e-12)


def test_binned_auc_is_close_to_exact_on_continuous_scores() -> None:
    y, p = _sample(2000, seed=3)
    window = WindowMetrics.new("classification")
    window.update(y, p)
    assert window.result()["roc_auc"] == pytest.approx(exact_metric("roc_auc", y, p), abs=2e-3)


def test_auc_is_undefined_with_one_class() -> None:
    assert binned_auc([1] + [0] * (AUC_BINS - 1), [0] * AUC_BINS) is None
    window = WindowMetrics.new("classification")
    window.update(np.ones(3), np.array([0.2, 0.5, 0.9]))
    assert window.result()["roc_auc"] is None and window.result()["accuracy"] == pytest.approx(
        2 / 3
    )


def test_regression_mae_rmse() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 2.0, 2.0, 6.0])
    window = WindowMetrics.new("regression")
    window.update(y, p)
    result = window.result()
    assert result["mae"] == pytest.approx(np.abs(p - y).mean())
    assert result["rmse"] == pytest.approx(math.sqrt(((p - y) ** 2).mean()))


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_merge_equals_one_window_and_json_round_trips(task: Task) -> None:
    y, p = _sample(300, seed=1)
    whole = WindowMetrics.new(task)
    whole.update(y, p)
    a, b = WindowMetrics.new(task), WindowMetrics.new(task)
    a.update(y[:120], p[:120])
    b.update(y[120:], p[120:])
    merged = WindowMetrics.from_json(task, a.to_json()).merge(
        WindowMetrics.from_json(task, b.to_json())
    )
    for key, value in whole.result().items():
        assert merged.result()[key] == pytest.approx(value, rel=1e-12)


def test_empty_window_has_no_values() -> None:
    assert WindowMetrics.new("classification").result()["accuracy"] is None
    assert WindowMetrics.new("regression").result()["mae"] is None


def test_tumbling_window_start() -> None:
    assert window_start(0, 60_000) == 0
    assert window_start(59_999, 60_000) == 0
    assert window_start(60_000, 60_000) == 60_000
    assert window_start(1_700_000_123_456, 3_600_000) == 1_699_999_200_000


def test_rolling_comparison_waits_for_a_full_window_and_has_hysteresis() -> None:
    rule = RollingComparison("accuracy", window=10, margin=0.15)
    y = np.array([1.0, 0.0] * 5)
    rule.add(y[:5], y[:5], 1 - y[:5])
    assert rule.scores() is None and rule.decide() is False
    wrong_twice = y.copy()
    wrong_twice[:2] = 1 - wrong_twice[:2]
    rule.add(y, wrong_twice, y)  # River 1.0 vs ONNX 0.8: a gain of 0.2 > margin
    assert rule.scores() == (0.8, 1.0) and rule.decide() is True
    rule.add(y, y, wrong_twice)  # ONNX better by 0.2: demoted
    assert rule.decide() is False
    one_wrong = y.copy()
    one_wrong[0] = 1 - one_wrong[0]
    rule.add(y, one_wrong, y)  # River better by 0.1 only: stays demoted
    assert rule.decide() is False


def test_lower_is_better_metrics_compare_the_right_way() -> None:
    rule = RollingComparison("log_loss", window=4, margin=0.0)
    y = np.array([1.0, 0.0, 1.0, 0.0])
    rule.add(y, np.array([0.6, 0.4, 0.6, 0.4]), np.array([0.9, 0.1, 0.9, 0.1]))
    assert rule.decide() is True
