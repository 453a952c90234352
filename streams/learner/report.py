"""`streamfer report`: prequential metrics over time for the ONNX, River and final outputs.

The numbers come from the learner's Faust table as Kafka keeps it — its changelog topic —
so a report needs no running learner and shows exactly what a restarted learner would
recover. Output: a table on the terminal, a PNG plot, and optionally the rows as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from streams.learner.app import TABLE, totals, window_rows
from streams.spec import Connections, PipelineSpec

_PLOTTED = {
    "classification": ("accuracy", "roc_auc"),
    "regression": ("mae", "rmse"),
}
_SHORT = {"accuracy": "acc", "roc_auc": "auc", "mae": "mae", "rmse": "rmse"}
_COLORS = {"onnx": "#d62728", "river": "#1f77b4", "final": "#2ca02c"}


def changelog_topic(spec: PipelineSpec) -> str:
    """Where Faust keeps the learner's metrics table (`<app id>-<table>-changelog`)."""
    return f"streamfer-learn-{spec.namespace}-{TABLE}-changelog"


def read_table(
    connections: Connections, spec: PipelineSpec, *, timeout_s: float = 60
) -> list[tuple[str, dict[str, Any]]]:
    """The table's current entries: the last record per key of its changelog."""
    from streams.ops.topics import admin_for, read_topic

    topic = changelog_topic(spec)
    if topic not in admin_for(connections).list_topics(timeout=10).topics:
        return []
    latest: dict[str, dict[str, Any] | None] = {}
    for message in read_topic(connections, topic, timeout_s=timeout_s, idle_s=1.0):
        key = orjson.loads(message.key())
        value = message.value()
        latest[str(key)] = orjson.loads(value) if value else None
    return [(k, v) for k, v in latest.items() if v is not None]


def build_report(items: Sequence[tuple[str, Mapping[str, Any]]], task: str) -> dict[str, Any]:
    """Rows per window plus each output's totals (what the table, the PNG and --json show)."""
    return {"task": task, "windows": window_rows(items, task), "total": totals(items, task)}


def print_report(report: Mapping[str, Any], console: Console, title: str) -> None:
    metrics = _PLOTTED[report["task"]]
    table = Table(title=title)
    table.add_column("window (UTC)")
    table.add_column("labels", justify="right")
    for metric in metrics:
        for output in ("onnx", "river", "final"):
            table.add_column(f"{_SHORT[metric]}\n{output}", justify="right")

    def cells(row: Mapping[str, Any]) -> list[str]:
        return [_fmt(row[o].get(m)) for m in metrics for o in ("onnx", "river", "final")]

    for row in report["windows"]:
        start = datetime.fromtimestamp(row["start_ms"] / 1000, UTC).strftime("%m-%d %H:%M:%S")
        table.add_row(start, str(row["labels"]), *cells(row))
    total = report["total"]
    table.add_row("all", str(total["onnx"]["n"]), *cells(total), style="bold")
    console.print(table)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def plot_report(report: Mapping[str, Any], path: Path, title: str) -> Path:
    """One panel per metric, one line per output, x = window start (UTC)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = _PLOTTED[report["task"]]
    rows = report["windows"]
    times = [datetime.fromtimestamp(r["start_ms"] / 1000, UTC) for r in rows]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(10, 3.2 * len(metrics)), sharex=True)
    for ax, metric in zip(axes, metrics, strict=True):
        for output in ("onnx", "river", "final"):
            values = [r[output].get(metric) for r in rows]
            total = report["total"][output].get(metric)
            label = f"{output} ({_fmt(total)} overall)"
            ax.plot(
                times,
                [float("nan") if v is None else v for v in values],
                marker="o",
                markersize=3,
                label=label,
                color=_COLORS[output],
                linestyle="--" if output == "onnx" else "-",
            )
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    axes[0].set_title(title)
    axes[-1].set_xlabel("window start (event time, UTC)")
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
