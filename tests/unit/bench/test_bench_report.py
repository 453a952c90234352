"""The benchmark's arithmetic: medians, per-round ratios, targets, the markdown table."""

from __future__ import annotations

from typing import Any

from bench import report


def _row(system: str, rate: float, round_: str, *, complete: bool = True) -> dict[str, Any]:
    return {
        "system": system,
        "round": round_,
        "workers": 1,
        "events": 1000,
        "complete": complete,
        "events_per_s": rate,
        "error": None if complete else "stalled",
        "reports": [],
    }


ROWS = [
    _row("passthrough", 100.0, "r0"),
    _row("streamfer-1w", 60.0, "r0"),
    _row("quix", 10.0, "r0"),
    _row("passthrough", 200.0, "r1"),
    _row("streamfer-1w", 80.0, "r1"),
    _row("quix", 40.0, "r1", complete=False),
]


def test_summary_takes_the_median_of_complete_runs_and_counts_the_rest():
    summary = report.summarize_drain(ROWS)
    assert summary["passthrough"]["median"] == 150.0
    assert summary["streamfer-1w"]["min"] == 60.0 and summary["streamfer-1w"]["max"] == 80.0
    assert summary["quix"]["runs"] == 1 and summary["quix"]["incomplete"] == 1


def test_ratios_pair_systems_within_a_round():
    ratios = report.ratios(ROWS)
    assert ratios["streamfer-1w/passthrough"]["median"] == (0.6 + 0.4) / 2
    assert ratios["streamfer-1w/quix"] == {"median": 6.0, "min": 6.0, "max": 6.0, "rounds": 1}


def test_targets_are_checked_against_the_issue_thresholds():
    result = {
        "ratios": report.ratios(ROWS),
        "latency": [{"system": "streamfer-1w", "load": 0.5, "p99_ms": 12.0}],
    }
    checks = report.target_check(result)
    assert checks["one worker ≥ 0.5× passthrough"] == {"value": 0.5, "met": True}
    assert checks["one worker ≥ 3× quix"]["met"] is True
    assert checks["p99 < 20 ms at 50% load"] == {"value": 12.0, "met": True}
