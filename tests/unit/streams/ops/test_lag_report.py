"""Lag arithmetic without a broker: lag, rates over a window, ETA, and the table."""

from __future__ import annotations

import io

from rich.console import Console

from streams.ops.lag import (
    GroupState,
    LagWindow,
    OffsetsSnapshot,
    eta_seconds,
    format_eta,
    lag_report,
    render_report,
)


def snap(t: float, committed: dict, log_end: dict, log_start: dict | None = None):
    return OffsetsSnapshot(
        taken_at=t,
        groups={"g": GroupState("stable", 2)},
        committed={"g": committed},
        log_start=log_start or {tp: 0 for tp in log_end},
        log_end=log_end,
    )


def test_lag_is_log_end_minus_committed_and_everything_retained_without_a_commit():
    report = lag_report(
        snap(
            10,
            {("t", 0): 40, ("t", 1): None},
            {("t", 0): 100, ("t", 1): 70},
            {("t", 0): 0, ("t", 1): 20},
        ),
        None,
    )
    [group] = report.groups
    assert [p.lag for p in group.partitions] == [60, 50]
    assert group.lag == 110 and group.state == "stable" and group.members == 2
    assert group.consume_rate is None and group.eta_s is None and report.rate_window_s is None


def test_rates_and_eta_against_a_baseline():
    before = snap(0, {("t", 0): 100}, {("t", 0): 1000})
    now = snap(10, {("t", 0): 600}, {("t", 0): 1200})
    [group] = lag_report(now, before).groups
    [p] = group.partitions
    assert p.consume_rate == 50.0 and p.produce_rate == 20.0
    assert p.lag == 600 and p.eta_s == 600 / 30
    assert group.eta_s == p.eta_s


def test_eta_is_unknown_when_the_group_does_not_gain_and_zero_without_lag():
    assert eta_seconds(100, 10.0, 10.0) is None
    assert eta_seconds(100, 5.0, 10.0) is None
    assert eta_seconds(0, None, None) == 0.0
    assert eta_seconds(100, None, 1.0) is None
    assert format_eta(None, 5) == "?" and format_eta(0.0, 0) == "0s"
    assert format_eta(75, 1) == "1m15s" and format_eta(7300, 1) == "2h01m"


def test_a_reset_group_has_no_negative_rate():
    before = snap(0, {("t", 0): 500}, {("t", 0): 1000})
    now = snap(5, {("t", 0): 0}, {("t", 0): 1000})
    [p] = lag_report(now, before).groups[0].partitions
    assert p.consume_rate == 0.0


def test_the_window_keeps_readings_spanning_it():
    window = LagWindow(window_s=10)
    reports = [
        window.push(snap(t, {("t", 0): 100 * t}, {("t", 0): 10_000})) for t in range(0, 31, 2)
    ]
    assert reports[0].rate_window_s is None
    assert reports[1].rate_window_s == 2
    assert all(10 <= r.rate_window_s <= 12 for r in reports[6:])
    assert reports[-1].groups[0].consume_rate == 100.0


def test_table_shows_the_numbers_of_the_report():
    report = lag_report(snap(1, {("orders", 3): 1234}, {("orders", 3): 5678}), None)
    console = Console(file=io.StringIO(), width=150)
    console.print(render_report(report))
    text = console.file.getvalue()
    assert "1,234" in text and "5,678" in text and "4,444" in text
    assert "group g (stable, 2 members)" in text
