"""Redis CPU per event and the cluster's balance: the arithmetic, and its rows in the report."""

from __future__ import annotations

from typing import Any

import pytest

from bench import report
from bench.redis_cpu import balance, cpu_per_event, parse_cpu
from bench.systems import SYSTEMS, with_cluster


def _info(user: float, sys: float, main: tuple[float, float] | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"used_cpu_user": user, "used_cpu_sys": sys}
    if main is not None:
        info["used_cpu_user_main_thread"], info["used_cpu_sys_main_thread"] = main
    return info


def test_a_sample_adds_user_and_sys_and_the_main_thread_only_where_redis_reports_it():
    assert parse_cpu(_info(1.5, 0.25)) == {"cpu": 1.75}
    assert parse_cpu(_info(1.5, 0.25, (1.0, 0.125))) == {"cpu": 1.75, "main_thread": 1.125}


def test_one_redis_is_charged_its_cpu_delta_per_event():
    before, after = [parse_cpu(_info(2.0, 1.0, (1.5, 0.5)))], [parse_cpu(_info(4.0, 2.0, (3, 1)))]
    events = 100_000

    cost = cpu_per_event(before, after, events)

    assert cost["redis_cpu_s"] == pytest.approx(3.0)
    assert cost["redis_cpu_us_per_event"] == pytest.approx(3.0 * 1e6 / events)
    assert cost["redis_main_thread_us_per_event"] == pytest.approx(2.0 * 1e6 / events)
    assert "balance" not in cost and "node_cpu_us_per_event" not in cost


def test_a_cluster_sums_its_primaries_and_reports_the_busiest_against_the_mean():
    deltas = [1.0, 2.0, 3.0]
    before = [{"cpu": 10.0 * i} for i in range(3)]
    after = [{"cpu": 10.0 * i + d} for i, d in enumerate(deltas)]
    events = 1_000

    cost = cpu_per_event(before, after, events)

    per_node = [d * 1e6 / events for d in deltas]
    assert cost["node_cpu_us_per_event"] == pytest.approx(per_node)
    assert cost["redis_cpu_us_per_event"] == pytest.approx(sum(per_node))
    assert cost["balance"] == pytest.approx(max(deltas) / (sum(deltas) / len(deltas)))
    assert "redis_main_thread_us_per_event" not in cost  # not every sample has it


def test_no_events_or_mismatched_samples_give_no_figure():
    assert cpu_per_event([{"cpu": 1.0}], [{"cpu": 2.0}], 0) == {}
    with pytest.raises(ValueError):
        cpu_per_event([{"cpu": 1.0}], [{"cpu": 2.0}, {"cpu": 3.0}], 10)
    assert balance([]) is None and balance([0.0, 0.0]) is None
    assert balance([2.0, 2.0]) == 1.0


def test_the_cluster_option_adds_each_streamfer_systems_twin_right_after_it():
    chosen = with_cluster(("passthrough", "streamfer-1w", "streamfer-2w"))

    assert chosen == (
        "passthrough",
        "streamfer-1w",
        "streamfer-1w@cluster",
        "streamfer-2w",
        "streamfer-2w@cluster",
    )
    assert all(SYSTEMS[n].cluster == n.endswith("@cluster") for n in chosen)
    assert SYSTEMS["streamfer-2w@cluster"].workers == SYSTEMS["streamfer-2w"].workers
    assert with_cluster(("streamfer-1w@cluster", "streamfer-1w")) == (
        "streamfer-1w@cluster",
        "streamfer-1w",
    )


def _row(system: str, rate: float, cpu: float, nodes: list[float] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "system": system,
        "round": "r0",
        "workers": 1,
        "events": 1000,
        "complete": True,
        "events_per_s": rate,
        "error": None,
        "redis": "cluster" if nodes else "single",
        "redis_cpu_us_per_event": cpu,
        "reports": [],
    }
    if nodes:
        row["node_cpu_us_per_event"] = nodes
        row["balance"] = balance(nodes)
    return row


def test_the_drain_table_shows_rates_ratios_cpu_and_balance_per_system():
    nodes_a, nodes_b = [3.0, 3.0, 6.0], [4.0, 4.0, 4.0]
    rows = [
        _row("passthrough", 200.0, 0.5),
        _row("streamfer-1w", 100.0, 20.0),
        _row("streamfer-1w@cluster", 80.0, 12.0, nodes_a),
        _row("streamfer-1w@cluster", 120.0, 12.0, nodes_b),
    ]
    result = {"drain": rows, "drain_summary": report.summarize_drain(rows)}

    lines = report.drain_table(result)

    cluster_rate = (80.0 + 120.0) / 2
    cluster_balance = (balance(nodes_a) + balance(nodes_b)) / 2  # type: ignore[operator]
    table = lines[: lines.index("")]  # the drain table; the per-node table follows
    by_system = {line.split(" | ")[0].lstrip("| "): line for line in table[2:]}
    assert by_system["streamfer-1w"].endswith(f"| {100.0 / 200.0:.2f} | 1.00 | 20.0 | – |")
    assert by_system["streamfer-1w@cluster"].endswith(
        f"| {cluster_rate / 200.0:.2f} | {cluster_rate / 100.0:.2f} | 12.0 "
        f"| {cluster_balance:.2f} |"
    )
    assert "| cluster | 1 |" in by_system["streamfer-1w@cluster"]
    medians = [(a + b) / 2 for a, b in zip(nodes_a, nodes_b, strict=True)]
    assert report.node_cpu(rows) == {"streamfer-1w@cluster": medians}
    node_row = "| streamfer-1w@cluster | " + " | ".join(f"{m:.1f}" for m in medians) + " |"
    assert node_row in lines[len(table) :]
