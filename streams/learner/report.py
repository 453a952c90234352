"""`streamfer report`: prequential metrics over time, served beside the learner's own.

Two sources, one set of event-time windows:
- served: what the workers published (the predictions topic) joined by event id with the
  labels topic, both read to their end offsets at the call: ONNX, River (when the worker had
  a snapshot) and final, as users received them;
- the learner's own predict-then-learn, from its Faust table's changelog: its River predicts
  each label with its newest model just before learning it (no serving lag), so it reads
  better than what was served; its final is the logged served score where the log has one.
Neither needs a running learner. Output: a table, a PNG plot, and the report as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

from inference.prequential import OUTPUTS, WindowMetrics
from streams.learner.bounded_reader import read_to_end
from streams.learner.labels import LabelRecord, parse_label
from streams.learner.served import (
    ServedMetrics,
    ServedPrediction,
    parse_prediction,
    served_freshness,
    served_metrics,
)
from streams.learner.tables import TABLE, merged_windows
from streams.spec import Connections, PipelineSpec

_PLOTTED = {
    "classification": ("accuracy", "roc_auc"),
    "regression": ("mae", "rmse"),
}
_SHORT = {"accuracy": "acc", "roc_auc": "auc", "mae": "mae", "rmse": "rmse"}
_COLORS = {"onnx": "#d62728", "river": "#1f77b4", "final": "#2ca02c"}
_NAMES = {"onnx": "ONNX", "river": "River", "final": "final"}
# What each column is: the predictions as served, or the learner's predict-then-learn.
_SOURCES = {"served": "served", "learner": "learner p→l"}
LEARNER_NOTE = (
    "learner = the learner's own predict-then-learn: River predicts each label with its newest "
    "model just before learning it (no serving lag), not what the workers served; its final "
    "is the served final score as the prediction log kept it"
)
SERVED_NOTE = "served = the predictions the workers published, joined with the labels by event id"


def changelog_topic(spec: PipelineSpec) -> str:
    """Where Faust keeps the learner's metrics table (`<app id>-<table>-changelog`)."""
    return f"streamfer-learn-{spec.namespace}-{TABLE}-changelog"


def read_table(
    connections: Connections, spec: PipelineSpec, *, timeout_s: float = 60
) -> list[tuple[str, dict[str, Any]]]:
    """The table's current entries: the last record per key of its changelog."""
    latest: dict[str, dict[str, Any] | None] = {}
    for record in read_to_end(connections, changelog_topic(spec), timeout_s=timeout_s):
        latest[str(orjson.loads(record.key or b'""'))] = (
            orjson.loads(record.value) if record.value else None
        )
    return [(k, v) for k, v in latest.items() if v is not None]


def read_served(
    connections: Connections, spec: PipelineSpec, *, timeout_s: float = 60
) -> ServedMetrics:
    """The served outputs' metrics, from the predictions and labels topics as they are now."""
    labels: list[LabelRecord] = []
    if spec.topics.labels:
        for r in read_to_end(connections, spec.topics.labels, timeout_s=timeout_s):
            label = parse_label(r.value, r.partition, r.offset)
            if label is not None:
                labels.append(label)
    parsed = (
        parse_prediction(r.value)
        for r in (
            read_to_end(connections, spec.topics.predictions, timeout_s=timeout_s) if labels else []
        )
    )
    predictions = [p for p in parsed if p is not None]
    served = served_metrics(
        labels,
        predictions,
        task=spec.adaptation.task.value,
        window_ms=spec.adaptation.metrics_window,
        threshold=spec.model.threshold,
    )
    if spec.topics.examples:
        examples = read_to_end(connections, spec.topics.examples, timeout_s=timeout_s)
        served.freshness_ms = freshness(examples, predictions)
    return served


def freshness(records: Sequence[Any], predictions: Sequence[ServedPrediction]) -> np.ndarray:
    """Per example of the log (by learn sequence): its label's production (the example's
    `lt`) → the first prediction scored by a replica that had learned it."""
    produced: dict[int, float] = {}
    for r in records:
        try:
            e = orjson.loads(r.value or b"")
            produced.setdefault(int(e["seq"]), float(e.get("lt") or np.nan))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    by_seq = np.array([produced.get(s, np.nan) for s in range(max(produced, default=-1) + 1)])
    scored = [(p.scored_at_ms, p.learned) for p in predictions if p.learned is not None]
    if not scored:
        return np.empty(0)
    at, learned = (np.array(c) for c in zip(*scored, strict=True))
    return served_freshness(by_seq, at, learned)


def build_report(
    items: Sequence[tuple[str, Mapping[str, Any]]],
    served: ServedMetrics,
    *,
    window_ms: int,
    river_served: bool = True,
) -> dict[str, Any]:
    """Per window (the union of both sources), the served and the learner's metrics, plus
    totals and the join's counts: what the table, the PNG and --json show."""
    task = served.task
    learner = merged_windows(items, task)
    sizes = {int(v["start"]): int(v["size"]) for k, v in items if k.startswith("w|") and v}

    def side(outputs: Mapping[str, WindowMetrics], names: Sequence[str]) -> dict[str, Any]:
        return {"labels": outputs["onnx"].n, **{o: outputs[o].result() for o in names}}

    served_names = OUTPUTS if river_served else ("onnx", "final")
    empty = {o: WindowMetrics.new(task) for o in OUTPUTS}
    rows = [
        {
            "start_ms": start,
            "end_ms": start + sizes.get(start, window_ms),
            "served": side(served.window(start), served_names),
            "learner": side(learner.get(start, empty), OUTPUTS),
        }
        for start in sorted(set(learner) | set(served.windows))
    ]
    learner_total = dict(empty)
    for outputs in learner.values():
        learner_total = {o: learner_total[o].merge(outputs[o]) for o in OUTPUTS}
    return {
        "task": task,
        "window_ms": window_ms,
        "windows": rows,
        "total": {
            "served": side(served.total(), served_names),
            "learner": side(learner_total, OUTPUTS),
        },
        "served_join": served.join_counts(),
        "freshness": freshness_summary(served.freshness_ms),
        "notes": {"served": SERVED_NOTE, "learner": LEARNER_NOTE},
    }


def freshness_summary(ages_ms: np.ndarray | None) -> dict[str, Any] | None:
    """p50/p99 of label → first prediction reflecting it; None without replica serving."""
    if ages_ms is None or not len(ages_ms):
        return None
    reflected = ages_ms[~np.isnan(ages_ms)]
    return {
        "labels": len(ages_ms),
        "reflected": len(reflected),
        "p50_ms": float(np.percentile(reflected, 50)) if len(reflected) else None,
        "p99_ms": float(np.percentile(reflected, 99)) if len(reflected) else None,
    }


def _columns(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(source, output) pairs shown: the served outputs, then the learner's River and final."""
    served = [("served", o) for o in OUTPUTS if o in report["total"]["served"]]
    return [*served, ("learner", "river"), ("learner", "final")]


def print_report(report: Mapping[str, Any], console: Console, title: str) -> None:
    """The table, then what its two sources are (one line each, never wrapped)."""
    metrics = _PLOTTED[report["task"]]
    columns = _columns(report)
    table = Table(title=title)
    table.add_column("window (UTC)", no_wrap=True)
    table.add_column("labels\nserved", justify="right", no_wrap=True)
    table.add_column("labels\nlearner", justify="right", no_wrap=True)
    for metric in metrics:
        for source, output in columns:
            header = f"{_SHORT[metric]}\n{_NAMES[output]}\n{_SOURCES[source]}"
            table.add_column(header, justify="right", no_wrap=True)

    def cells(row: Mapping[str, Any]) -> list[str]:
        served, learner = row["served"], row["learner"]
        counts = [str(served["labels"]), str(learner["labels"])]
        return counts + [_fmt(row[s][o].get(m)) for m in metrics for s, o in columns]

    for row in report["windows"]:
        start = datetime.fromtimestamp(row["start_ms"] / 1000, UTC).strftime("%m-%d %H:%M:%S")
        table.add_row(start, *cells(row))
    table.add_row("all", *cells(report["total"]), style="bold")
    console.print(table)
    join = report["served_join"]
    console.print(
        f"{SERVED_NOTE} ({join['joined']} of {join['labels']} labels found a prediction)",
        highlight=False,
    )
    console.print(LEARNER_NOTE, highlight=False)
    fresh = report.get("freshness")
    if fresh:
        console.print(
            f"freshness (label produced → first prediction by a replica that learned it): "
            f"p50 {_fmt_ms(fresh['p50_ms'])}, p99 {_fmt_ms(fresh['p99_ms'])} over "
            f"{fresh['reflected']} of {fresh['labels']} labels",
            highlight=False,
        )


def _fmt_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} ms"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def plot_report(report: Mapping[str, Any], path: Path, title: str) -> Path:
    """One panel per metric; served outputs solid (ONNX dashed), the learner's dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = _PLOTTED[report["task"]]
    rows = report["windows"]
    times = [datetime.fromtimestamp(r["start_ms"] / 1000, UTC) for r in rows]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(10, 3.2 * len(metrics)), sharex=True)
    for ax, metric in zip(axes, metrics, strict=True):
        for source, output in _columns(report):
            values = [r[source][output].get(metric) for r in rows]
            total = report["total"][source][output].get(metric)
            who = (
                "served"
                if source == "served"
                else "learner's own predict-then-learn"
                if output == "river"
                else "learner's table, the logged served score"
            )
            ax.plot(
                times,
                [float("nan") if v is None else v for v in values],
                marker="o" if source == "served" else None,
                markersize=3,
                label=f"{_NAMES[output]} ({who}; {_fmt(total)} overall)",
                color=_COLORS[output],
                linestyle=":" if source == "learner" else "--" if output == "onnx" else "-",
                alpha=1.0 if source == "served" else 0.7,
            )
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7)
    axes[0].set_title(title)
    axes[-1].set_xlabel("window start (event time, UTC)")
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
