"""One benchmark run: pre-fill, drains (rounds, systems interleaved), latency, profile, report."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report
from bench.drain import Bench, measure_drain
from bench.latency import measure_latency
from bench.redis_cpu import primaries
from bench.redis_targets import DEFAULT_CLUSTER_PORT, RedisTarget, cluster_target
from bench.systems import SYSTEMS, SystemDef, with_cluster
from bench.workload import PARTITIONS, REPO, Footprint, demo_spec_dict, ensure_model, prefill
from features.redis_connect import connect
from streams.spec import Connections

log = logging.getLogger(__name__)

DEFAULT_SYSTEMS = ("passthrough", "streamfer-1w", "streamfer-2w", "quix", "faust")


@dataclass
class Options:
    """What `python -m bench` was asked to do (see its --help)."""

    events: int = 1_000_000
    peer_events: int | None = 100_000  # peers drain the first N events (None: all)
    systems: tuple[str, ...] = DEFAULT_SYSTEMS
    repeat: int = 1
    loads: tuple[float, ...] = (0.25, 0.5, 0.75)
    latency_systems: tuple[str, ...] | None = None  # default: all systems, at 50% load
    latency_seconds: float = 15.0
    latency_warmup_s: float = 3.0
    latency_base_rate: float | None = None  # default: streamfer-1w's median drain rate
    profile: bool = True
    patches: tuple[tuple[str, str], ...] = ()
    max_size: int | None = None
    max_wait_ms: int | None = None
    out: Path | None = None
    keep_runs: bool = False
    redis_cluster: bool = False  # add the `@cluster` twin of each streamfer system
    cluster_port: int = DEFAULT_CLUSTER_PORT  # first base port tried for a local cluster
    command: str = "python -m bench"

    def resolve_systems(self) -> list[SystemDef]:
        names = with_cluster(self.systems) if self.redis_cluster else self.systems
        unknown = [s for s in names if s not in SYSTEMS]
        if unknown:
            raise ValueError(f"unknown systems {unknown}; choose from {sorted(SYSTEMS)}")
        chosen = [SYSTEMS[s] for s in names]
        for label, path in self.patches:
            chosen.append(SYSTEMS[report.BASELINE].patched(label, str(Path(path).resolve())))
        return chosen


def run_suite(options: Options, connections: Connections | None = None) -> dict[str, Any]:
    """Run the benchmark and write results.json, results.md and the plots; the result.

    With a `@cluster` system among those chosen, the cluster is taken or started first
    (`bench.redis_targets.cluster_target`) and stopped at the end, whatever happens.
    """
    connections = connections or Connections.from_env()
    systems = options.resolve_systems()
    with contextlib.ExitStack() as stack:
        cluster = None
        if any(s.cluster for s in systems):
            cluster = stack.enter_context(cluster_target(options.cluster_port))
        return _run(options, connections, systems, cluster)


def _run(
    options: Options,
    connections: Connections,
    systems: list[SystemDef],
    cluster: RedisTarget | None,
) -> dict[str, Any]:
    date = dt.datetime.now(dt.UTC)
    out = options.out or REPO / "bench" / "results" / date.strftime("%Y-%m-%d")
    out.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:6]
    run_root = REPO / "bench" / "results" / "tmp" / f"run-{token}"
    run_root.mkdir(parents=True, exist_ok=True)
    footprint = Footprint(connections)
    demo = demo_spec_dict()
    bench = Bench(
        connections,
        footprint,
        token,
        ensure_model(run_root / "model"),
        run_root,
        max_size=options.max_size,
        max_wait_ms=options.max_wait_ms,
        cluster=cluster,
    )
    result: dict[str, Any] = {
        "date": date.isoformat(timespec="seconds"),
        "command": options.command,
        "machine": report.machine(),
        "config": {
            "events": options.events,
            "systems": [s.name for s in systems],
            "repeat": options.repeat,
            "partitions": PARTITIONS,
            "max_size": options.max_size or demo["batching"]["max_size"],
            "max_wait_ms": options.max_wait_ms or _ms(demo["batching"]["max_wait"]),
            "loads": list(options.loads),
            "latency_seconds": options.latency_seconds,
            "latency_warmup_s": options.latency_warmup_s,
            "kafka_version": _kafka_version(),
            "redis_version": _redis_version(connections.redis_url),
            "redis_cluster": _cluster_config(cluster),
            "token": token,
        },
    }
    try:
        events_topic = f"bench-{token}-events"
        footprint.create_topics([events_topic])
        log.info("pre-filling %s with %d events", events_topic, options.events)
        result["prefill"] = {
            "events": options.events,
            "rate": prefill(connections, events_topic, options.events, run_id=token),
        }
        peer_events = min(options.peer_events or options.events, options.events)
        peer_topic = events_topic
        if peer_events < options.events and (options.profile or any(s.peer for s in systems)):
            # The same generator and seed: the first `peer_events` events of the workload.
            peer_topic = f"bench-{token}-events-prefix"
            footprint.create_topics([peer_topic])
            prefill(connections, peer_topic, peer_events, run_id=token)
        result["config"]["peer_events"] = peer_events
        drains: list[dict[str, Any]] = []
        for round_ in range(options.repeat):
            for system in systems:
                label = f"drain-{system.name}-r{round_}"
                log.info("drain %s", label)
                row = measure_drain(
                    bench,
                    system,
                    label=label,
                    events_topic=peer_topic if system.peer else events_topic,
                    n_events=peer_events if system.peer else options.events,
                )
                row["round"] = f"r{round_}"
                log.info(
                    "  %s: %s events/s%s",
                    system.name,
                    f"{row['events_per_s']:,.0f}" if row["events_per_s"] else "–",
                    f" ({row['error'][:200]})" if row["error"] else "",
                )
                drains.append(row)
                _save(out, result | {"drain": drains})
        result["drain"] = drains
        result["drain_summary"] = report.summarize_drain(drains)
        if options.profile:
            log.info("profiled drain of %s (pyinstrument; not in the table)", report.BASELINE)
            row = measure_drain(  # the first `peer_events` events are enough to sample
                bench,
                SYSTEMS[report.BASELINE],
                label="profile-streamfer-1w",
                events_topic=peer_topic,
                n_events=peer_events,
                profile=True,
            )
            result["profile"] = _keep_profile(row, run_root / "profile-streamfer-1w", out)
        footprint.release_topics([events_topic, peer_topic])
        result["latency"] = _latency(options, bench, systems, result)
    finally:
        footprint.release()
        if not options.keep_runs:
            shutil.rmtree(run_root, ignore_errors=True)
    return finish(result, out)


def finish(result: dict[str, Any], out: Path) -> dict[str, Any]:
    """Summaries, ratios and target checks from the raw rows; results.json/.md and plots."""
    result["drain_summary"] = report.summarize_drain(result["drain"])
    result["ratios"] = report.ratios(result["drain"])
    result["stages"] = report.stage_profile(result["drain"])
    result["targets"] = report.target_check(result)
    _save(out, result)
    (out / "results.md").write_text(report.markdown(result))
    result["plots"] = report.plots(result, out)
    result["out"] = str(out)
    _save(out, result)
    return result


def _latency(
    options: Options, bench: Bench, systems: list[SystemDef], result: dict[str, Any]
) -> list[dict[str, Any]]:
    if not options.loads:
        return []
    base = options.latency_base_rate
    if base is None:
        base = result["drain_summary"].get(report.BASELINE, {}).get("median")
    if not base:
        log.warning("no %s drain rate to base the latency loads on: skipped", report.BASELINE)
        return []
    names = options.latency_systems or tuple(s.name for s in systems)
    rows: list[dict[str, Any]] = []
    for system in systems:
        if system.name not in names:
            continue
        loads = options.loads if system.name == report.BASELINE else (0.5,)
        for load in loads:
            rate = base * load
            label = f"lat-{system.name}-{int(load * 100)}"
            log.info("latency %s at %.0f events/s", label, rate)
            try:
                row = measure_latency(
                    bench,
                    system,
                    label=label,
                    rate=rate,
                    duration_s=options.latency_seconds,
                    warmup_s=options.latency_warmup_s,
                )
            except Exception as exc:  # one failed setting must not lose the run
                row = {"system": system.name, "label": label, "rate": rate, "error": repr(exc)}
            row["load"] = load
            log.info(
                "  p50 %s ms, p99 %s ms%s",
                _r(row.get("p50_ms")),
                _r(row.get("p99_ms")),
                f" ({row['error'][:200]})" if row.get("error") else "",
            )
            rows.append(row)
    return rows


def _keep_profile(row: dict[str, Any], run_dir: Path, out: Path) -> dict[str, Any]:
    """Copy the pyinstrument text next to the results (the HTML, ~4 MB, stays in the run
    folder: keep it with --keep-runs); the profiled run's numbers."""
    kept: dict[str, Any] = {"events_per_s": row["events_per_s"], "files": []}
    for suffix in (".txt",):
        source = run_dir / f"profile-0{suffix}"
        if source.exists():
            shutil.copy(source, out / f"profile-streamfer-1w{suffix}")
            kept["files"].append(f"profile-streamfer-1w{suffix}")
    if row["reports"]:
        kept["stages"] = row["reports"][0].get("stages")
    return kept


def _save(out: Path, result: dict[str, Any]) -> None:
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))


def _ms(text: str | int) -> int:
    from features.duration import parse_duration_ms

    return parse_duration_ms(text)


def _r(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _kafka_version() -> str:
    from streams.stack.local import StackConfig

    return StackConfig.from_env().kafka_version


def _redis_version(url: str) -> str:
    client = connect(url)
    try:
        return str(primaries(client)[0].info("server").get("redis_version"))
    finally:
        client.close()


def _cluster_config(cluster: RedisTarget | None) -> dict[str, Any] | None:
    """The cluster's primaries and version (never its URL: it holds a password)."""
    if cluster is None:
        return None
    client = connect(cluster.info_url)
    try:
        nodes = primaries(client)
        return {
            "primaries": len(nodes),
            "redis_version": str(nodes[0].info("server").get("redis_version")),
        }
    finally:
        client.close()
