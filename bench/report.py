"""Results of a suite run: summaries, ratios against the targets, markdown and PNG plots."""

from __future__ import annotations

import platform
import re
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TARGETS = {
    "streamfer_over_passthrough": 0.5,
    "streamfer_over_peer": 3.0,
    "p99_ms_at_half_load": 20.0,
}
BASELINE = "streamfer-1w"


def machine() -> dict[str, Any]:
    """CPU, memory and the versions that shape the numbers."""
    import confluent_kafka
    import numpy
    import onnxruntime
    import orjson
    import redis

    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(
            (k.strip(), v.strip())
            for k, v in (line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        )
        info["cpu"] = fields.get("Model name")
        info["cpus"] = fields.get("CPU(s)")
        info["hypervisor"] = fields.get("Hypervisor vendor")
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        meminfo = Path("/proc/meminfo").read_text()
        match = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
        if match:
            info["memory_gib"] = round(int(match.group(1)) / 2**20, 1)
    except OSError:
        pass
    info["versions"] = {
        "confluent-kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "orjson": orjson.__version__,
        "redis-py": redis.__version__,
    }
    try:
        import faust

        info["versions"]["faust-streaming"] = faust.__version__
    except ImportError:
        pass
    return info


def summarize_drain(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per system: median, min and max events/s over its complete runs."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = out.setdefault(
            row["system"], {"rates": [], "incomplete": 0, "errors": [], "cpu": [], "balances": []}
        )
        if row["complete"] and row["events_per_s"]:
            entry["rates"].append(row["events_per_s"])
            if row.get("redis_cpu_us_per_event") is not None:
                entry["cpu"].append(row["redis_cpu_us_per_event"])
            if row.get("balance") is not None:
                entry["balances"].append(row["balance"])
        else:
            entry["incomplete"] += 1
            if row.get("error"):
                entry["errors"].append(str(row["error"])[:300])
    for entry in out.values():
        rates = entry["rates"]
        entry["median"] = statistics.median(rates) if rates else None
        entry["min"] = min(rates) if rates else None
        entry["max"] = max(rates) if rates else None
        entry["runs"] = len(rates)
        entry["spread"] = (max(rates) - min(rates)) / statistics.median(rates) if rates else None
        # Redis CPU µs per event (all primaries) and the cluster's busiest node ÷ mean.
        entry["redis_cpu_us_per_event"] = statistics.median(entry["cpu"]) if entry["cpu"] else None
        entry["balance"] = statistics.median(entry["balances"]) if entry["balances"] else None
    return out


def node_cpu(rows: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Per system on a cluster: each primary's Redis CPU µs per event, median over the
    complete runs (nodes in the order the cluster lists its primaries)."""
    per: dict[str, list[list[float]]] = {}
    for row in rows:
        if row["complete"] and row.get("node_cpu_us_per_event"):
            per.setdefault(row["system"], []).append(row["node_cpu_us_per_event"])
    return {
        system: [statistics.median(values) for values in zip(*runs, strict=True)]
        for system, runs in per.items()
        if len({len(r) for r in runs}) == 1
    }


def paired_ratios(rows: Sequence[dict[str, Any]], num: str, den: str) -> list[float]:
    """num/den within each repetition (same round, minutes apart): noise mostly cancels."""
    by_round: dict[str, dict[str, float]] = {}
    for row in rows:
        if row["complete"] and row["events_per_s"]:
            by_round.setdefault(row["round"], {})[row["system"]] = row["events_per_s"]
    return [r[num] / r[den] for r in by_round.values() if num in r and den in r]


def ratios(drain_rows: Sequence[dict[str, Any]], baseline: str = BASELINE) -> dict[str, Any]:
    """Each streamfer system / each other system at drain: median of the per-round ratios.

    Variants of the baseline (`streamfer-1w[patch]`, `streamfer-2w`) are also given
    against the baseline itself.
    """
    present = {r["system"] for r in drain_rows}
    ours = sorted(s for s in present if s.startswith("streamfer"))
    others = sorted(present - set(ours))
    pairs = [(num, den) for num in ours for den in others]
    pairs += [(variant, baseline) for variant in ours if variant != baseline]
    out: dict[str, Any] = {}
    for num, den in pairs:
        values = paired_ratios(drain_rows, num, den)
        if values:
            out[f"{num}/{den}"] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "rounds": len(values),
            }
    return out


def target_check(result: dict[str, Any], baseline: str = BASELINE) -> dict[str, Any]:
    """Each target of issue 6: the value measured and whether it is met."""
    got = result.get("ratios", {})
    checks: dict[str, Any] = {}
    if f"{baseline}/passthrough" in got:
        value = got[f"{baseline}/passthrough"]["median"]
        checks["one worker ≥ 0.5× passthrough"] = {
            "value": value,
            "met": value >= TARGETS["streamfer_over_passthrough"],
        }
    for peer in ("quix", "faust"):
        if f"{baseline}/{peer}" in got:
            value = got[f"{baseline}/{peer}"]["median"]
            checks[f"one worker ≥ 3× {peer}"] = {
                "value": value,
                "met": value >= TARGETS["streamfer_over_peer"],
            }
    for row in result.get("latency", []):
        if row.get("system") == baseline and row.get("load") == 0.5 and "p99_ms" in row:
            checks["p99 < 20 ms at 50% load"] = {
                "value": row["p99_ms"],
                "met": row["p99_ms"] < TARGETS["p99_ms_at_half_load"],
            }
    return checks


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    """The results as the tables of docs/benchmarks.md."""
    lines: list[str] = []
    m = result["machine"]
    cfg = result["config"]
    lines += [
        f"# streamfer benchmark, {result['date']}",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {m.get('cpu')} ({m.get('cpus')} vCPUs, {m.get('hypervisor') or 'bare metal'}),"
        f" {m.get('memory_gib')} GiB; {m.get('platform')}; Python {m.get('python')}. "
        f"Kafka {cfg.get('kafka_version')} (one broker) and Redis {cfg.get('redis_version')} "
        "on the same machine."
        + (
            f" The `@cluster` systems run against a Redis Cluster of "
            f"{cfg['redis_cluster']['primaries']} primaries (Redis "
            f"{cfg['redis_cluster']['redis_version']})."
            if cfg.get("redis_cluster")
            else ""
        ),
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()),
        "",
        f"Workload: {cfg['events']:,} demo card payments pre-filled into a "
        f"{cfg['partitions']}-partition topic ({result['prefill']['rate']:,.0f} events/s "
        f"to pre-fill); batches of {cfg['max_size']} within {cfg['max_wait_ms']} ms; "
        f"{cfg['repeat']} round(s) of drains, systems interleaved within each round. "
        f"Quix Streams and Faust drain the first {cfg.get('peer_events', cfg['events']):,} "
        "events of the same workload (same generator and seed).",
        "",
        "## Drain throughput",
        "",
        "Redis CPU: `INFO cpu` (user + sys) of the Redis serving the run, summed over a "
        "cluster's primaries, from before the runners start to after they stop, per event "
        "drained; balance: the busiest primary's CPU ÷ the mean (1.00 = even).",
        "",
    ]
    lines += drain_table(result)
    lines += ["", "## Ratios at drain (median of per-round ratios)", ""]
    lines += ["| ratio | median | min | max | rounds |", "|---|---:|---:|---:|---:|"]
    for name, r in result["ratios"].items():
        lines.append(
            f"| {name} | {r['median']:.2f} | {r['min']:.2f} | {r['max']:.2f} | {r['rounds']} |"
        )
    if result.get("latency"):
        lines += [
            "",
            "## Open-loop latency (event time → prediction readable)",
            "",
            f"Paced producer at a fixed rate (fractions of {BASELINE}'s median drain rate), "
            f"{cfg['latency_warmup_s']:g} s warm-up excluded, {cfg['latency_seconds']:g} s "
            "measured.",
            "",
            "| system | load | input events/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms "
            "| answered | note |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for row in result["latency"]:
            note = (
                row.get("error", "")[:80]
                if row.get("error")
                else ("saturated" if row.get("saturated") else "")
            )
            answered = f"{row.get('answered', 0):,}/{row.get('measured', 0):,}"
            lines.append(
                f"| {row['system']} | {row['load']:.0%} | {_fmt(row.get('rate'))} | "
                f"{_fmt(row.get('p50_ms'), 1)} | {_fmt(row.get('p90_ms'), 1)} | "
                f"{_fmt(row.get('p99_ms'), 1)} | {_fmt(row.get('p99.9_ms'), 1)} | "
                f"{_fmt(row.get('max_ms'), 1)} | {answered} | {note} |"
            )
    if result.get("stages"):
        lines += [
            "",
            f"## Where a {BASELINE} drain spends its time (Worker.metrics.stage)",
            "",
            "| stage | µs per event | share of batch time |",
            "|---|---:|---:|",
        ]
        stages = result["stages"]
        total = sum(stages.values())
        for stage, us in stages.items():
            lines.append(f"| {stage} | {us:.1f} | {us / total:.0%} |")
        lines.append(f"| **total** | {total:.1f} | 100% |")
    checks = result.get("targets", {})
    if checks:
        lines += ["", "## Targets", "", "| target | measured | met |", "|---|---:|---|"]
        for name, check in checks.items():
            lines.append(f"| {name} | {check['value']:.2f} | {'yes' if check['met'] else 'no'} |")
    lines.append("")
    return "\n".join(lines)


def drain_table(result: dict[str, Any]) -> list[str]:
    """The drain table: events/s, × passthrough and × streamfer-1w (medians), Redis CPU µs
    per event and, on a cluster, the balance."""
    lines = [
        "| system | Redis | workers | events | median events/s | min | max | runs "
        "| × passthrough | × streamfer-1w | Redis CPU µs/event | balance |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    summary = result["drain_summary"]
    base = summary.get(BASELINE, {}).get("median")
    floor = summary.get("passthrough", {}).get("median")
    for system, entry in summary.items():
        median = entry["median"]
        first = next(r for r in result["drain"] if r["system"] == system)
        failed = f" ({entry['incomplete']} incomplete)" if entry["incomplete"] else ""
        lines.append(
            f"| {system} | {first.get('redis', 'single')} | {first['workers']} | "
            f"{first['events']:,} | {_fmt(median)} | {_fmt(entry['min'])} | "
            f"{_fmt(entry['max'])} | {entry['runs']}{failed} | "
            f"{_fmt(median / floor if floor and median else None, 2)} | "
            f"{_fmt(median / base if base and median else None, 2)} | "
            f"{_fmt(entry.get('redis_cpu_us_per_event'), 1)} | "
            f"{_fmt(entry.get('balance'), 2)} |"
        )
    nodes = node_cpu(result["drain"])
    if nodes:
        width = max(len(v) for v in nodes.values())
        lines += [
            "",
            "Redis CPU µs per event on each cluster primary (median over runs):",
            "",
            "| system | " + " | ".join(f"node {i + 1}" for i in range(width)) + " |",
            "|---|" + "---:|" * width,
        ]
        for system, values in nodes.items():
            lines.append(f"| {system} | " + " | ".join(f"{v:.1f}" for v in values) + " |")
    return lines


def stage_profile(rows: Sequence[dict[str, Any]], system: str = BASELINE) -> dict[str, float]:
    """µs per event per stage, over the complete drains of `system` (from its reports)."""
    totals: dict[str, float] = {}
    events = 0
    for row in rows:
        if row["system"] != system or not row["complete"]:
            continue
        for report in row["reports"]:
            events += int(report.get("events", 0))
            consume = report.get("consume_seconds")
            if consume is not None:
                totals["consume (wait + fetch)"] = (
                    totals.get("consume (wait + fetch)", 0.0) + consume
                )
            for stage, value in report.get("stages", {}).items():
                totals[stage] = totals.get(stage, 0.0) + value["seconds"]
    if not events:
        return {}
    return {stage: seconds / events * 1e6 for stage, seconds in totals.items()}


def plots(result: dict[str, Any], out_dir: Path) -> list[str]:
    """drain.png, latency.png, latency_vs_load.png, stages.png; the files written.

    Nothing without matplotlib (the `bench` extra): the JSON and markdown are still written.
    """
    try:
        import matplotlib
    except ImportError:
        return []

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []
    summary = result["drain_summary"]
    names = [s for s, e in summary.items() if e["median"]]
    if names:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        med = [summary[s]["median"] for s in names]
        err = [
            [m - summary[s]["min"] for s, m in zip(names, med, strict=True)],
            [summary[s]["max"] - m for s, m in zip(names, med, strict=True)],
        ]
        colors = ["#d62728" if s.startswith("streamfer") else "#7f7f7f" for s in names]
        ax.bar(names, med, yerr=err, color=colors, capsize=4)
        ax.set_ylabel("events/s (median, min–max)")
        ax.set_title(f"Drain throughput, {result['config']['events']:,} events")
        ax.tick_params(axis="x", rotation=20)
        fig.tight_layout()
        fig.savefig(out_dir / "drain.png", dpi=120)
        plt.close(fig)
        written.append("drain.png")
    half = [r for r in result.get("latency", []) if r.get("load") == 0.5 and "p50_ms" in r]
    if half:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        width = 0.25
        xs = range(len(half))
        for k, p in enumerate(("p50_ms", "p99_ms", "p99.9_ms")):
            ax.bar([x + (k - 1) * width for x in xs], [r[p] for r in half], width, label=p[:-3])
        ax.set_xticks(list(xs), [r["system"] for r in half], rotation=20)
        ax.set_yscale("log")
        ax.set_ylabel("ms (log)")
        ax.axhline(TARGETS["p99_ms_at_half_load"], color="k", ls=":", lw=1, label="20 ms")
        ax.set_title(f"Latency at 50% of {BASELINE} drain rate ({half[0]['rate']:,.0f} ev/s)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "latency.png", dpi=120)
        plt.close(fig)
        written.append("latency.png")
    curve = sorted(
        (r for r in result.get("latency", []) if r["system"] == BASELINE and "p50_ms" in r),
        key=lambda r: r["rate"],
    )
    if len(curve) > 1:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        for p in ("p50_ms", "p99_ms", "p99.9_ms"):
            ax.plot([r["rate"] for r in curve], [r[p] for r in curve], marker="o", label=p[:-3])
        ax.set_yscale("log")
        ax.set_xlabel("input events/s")
        ax.set_ylabel("ms (log)")
        ax.set_title(f"{BASELINE}: latency against input rate")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "latency_vs_load.png", dpi=120)
        plt.close(fig)
        written.append("latency_vs_load.png")
    stages = result.get("stages")
    if stages:
        fig, ax = plt.subplots(figsize=(7, 2.4))
        left = 0.0
        for stage, us in stages.items():
            ax.barh([BASELINE], [us], left=left, label=stage)
            left += us
        ax.set_xlabel("µs per event")
        ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.35))
        ax.set_title("Where the time goes (drain)")
        fig.tight_layout()
        fig.savefig(out_dir / "stages.png", dpi=120)
        plt.close(fig)
        written.append("stages.png")
    return written
