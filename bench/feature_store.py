"""`python -m bench.feature_store`: two versions of `features.lua`, same batches, same Redis.

The feature script is the pipeline's limiting stage, and a drain mixes it with Kafka, the
model and the prediction log. This isolates it: the demo spec's features, card payments
from `streams.workloads.synthetic.CardPayments` (sources as the drain sees them: keyed by card over
4 partitions), cut into fixed batches and fed through `RedisFeatureStore` once per version
per round, each run in a fresh namespace, versions alternating which goes first. Per run:
events/s of `update_and_read` (Python encode + EVALSHA + decode), Redis CPU per event
(`INFO cpu`, the whole server: Lua, commands, protocol) and EVALSHA µs per event
(`INFO commandstats`). Ratios are taken within each round, so drift on a shared machine
cancels; medians are reported. Both versions must return identical rows and flags.

Needs only Redis: STREAMFER_REDIS_URL (default redis://127.0.0.1:6379/0), a single Redis or
a Redis Cluster (`features.redis_connect.connect`); on a cluster the CPU and EVALSHA figures
are summed over the primaries, and each run also reports per-node Redis CPU per event and
the busiest node's share against the mean (`balance`, 1.0 = even). Both scripts read the
configuration and batch documents of the checked-out `features/redis_store.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.redis_cpu import balance, node_cpu_s, primaries
from bench.workload import DEMO_SPEC, PARTITIONS, REPO
from features.redis_connect import RedisClient, connect
from features.redis_store import RedisFeatureStore
from features.spec import FeatureSpec
from features.store import FeatureBatch, FeatureResult, Source
from streams.security.redaction import redact_url
from streams.spec import load_spec
from streams.workloads.synthetic import CardPayments

SCRIPT_PATH = "features/features.lua"


@dataclass(frozen=True)
class Version:
    """One script text under a label (a git revision or a file)."""

    label: str
    script: str


def load_version(ref: str) -> Version:
    """`ref` is a file path, or a git revision whose features/features.lua is used."""
    path = Path(ref)
    if path.is_file():
        return Version(ref, path.read_text())
    shown = subprocess.run(
        ["git", "show", f"{ref}:{SCRIPT_PATH}"], cwd=REPO, capture_output=True, text=True
    )
    if shown.returncode != 0:
        raise SystemExit(
            f"{ref!r} is neither a file nor a git revision with {SCRIPT_PATH}: "
            f"{shown.stderr.strip()}"
        )
    return Version(ref, shown.stdout)


def make_batches(
    n_events: int, batch_size: int, seed: int, end_ms: int, rate: float = 1000.0
) -> list[FeatureBatch]:
    """The workload as the worker sees it: per-partition offsets, partition by card key."""
    events = CardPayments(n_events, seed=seed, end_ms=end_ms, rate=rate, run_id="fs").events()
    return _batches(events, batch_size)


def warm_batches(
    n_events: int, batch_size: int, seed: int, end_ms: int, span_ms: int
) -> list[FeatureBatch]:
    """History before the measured events: `n_events` spread over `span_ms` up to `end_ms`,
    so the entities' windows hold many buckets, as in steady streaming."""
    if n_events == 0:
        return []
    rate = n_events / (span_ms / 1000)
    events = CardPayments(n_events, seed=seed, end_ms=end_ms, rate=rate, run_id="warm").events()
    return _batches(events, batch_size, topic="history")


def _batches(
    events: Iterable[dict[str, Any]], batch_size: int, topic: str = "payments"
) -> list[FeatureBatch]:
    offsets = [0] * PARTITIONS
    batches: list[FeatureBatch] = []
    records: list[dict[str, Any]] = []
    sources: list[Source] = []
    for event in events:
        # Any stable hash spreads cards over partitions as Kafka's key hash does.
        partition = zlib.crc32(event["card_id"].encode()) % PARTITIONS
        records.append(event)
        sources.append((topic, partition, offsets[partition]))
        offsets[partition] += 1
        if len(records) == batch_size:
            batches.append(FeatureBatch(records, [r["event_time"] for r in records], sources))
            records, sources = [], []
    if records:
        batches.append(FeatureBatch(records, [r["event_time"] for r in records], sources))
    return batches


def evalsha_usec(client: RedisClient) -> int:
    return sum(
        int(node.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0))
        for node in primaries(client)
    )


def release_namespace(client: RedisClient, namespace: str) -> None:
    keys = list(client.scan_iter(match=f"sf:{namespace}:*", count=10_000))
    for i in range(0, len(keys), 5_000):
        client.unlink(*keys[i : i + 5_000])


def run_once(
    client: RedisClient,
    spec: FeatureSpec,
    version: Version,
    batches: list[FeatureBatch],
    warm: Sequence[FeatureBatch] = (),
) -> tuple[dict[str, float], list[FeatureResult]]:
    """Feed `warm` (not measured), then every batch through `version` in a fresh
    namespace; timings and results of the measured batches."""
    store_class = type("Store", (RedisFeatureStore,), {"SCRIPT": version.script})
    namespace = f"bench-fs-{uuid.uuid4().hex[:8]}"
    store = store_class(spec, client, namespace)
    for batch in warm:
        store.update_and_read(batch)
    n = sum(len(b.records) for b in batches)
    results: list[FeatureResult] = []
    cpu0, usec0 = node_cpu_s(client), evalsha_usec(client)
    wall = 0.0
    for batch in batches:
        start = time.perf_counter()
        results.append(store.update_and_read(batch))
        wall += time.perf_counter() - start
    cpu1, usec1 = node_cpu_s(client), evalsha_usec(client)
    store.close()
    keys = sum(1 for _ in client.scan_iter(match=f"sf:{namespace}:*", count=10_000))
    release_namespace(client, namespace)
    per_node = [(b - a) * 1e6 / n for a, b in zip(cpu0, cpu1, strict=True)]
    figures: dict[str, Any] = {
        "events_per_s": n / wall,
        "redis_cpu_us_per_event": sum(per_node),
        "evalsha_us_per_event": (usec1 - usec0) / n,
        "keys": keys,
    }
    if len(per_node) > 1:
        figures["node_cpu_us_per_event"] = per_node
        figures["balance"] = balance(per_node)
    return figures, results


def _same(a: list[FeatureResult], b: list[FeatureResult]) -> bool:
    return all(
        np.array_equal(x.values, y.values)
        and np.array_equal(x.late, y.late)
        and np.array_equal(x.replayed, y.replayed)
        for x, y in zip(a, b, strict=True)
    )


def compare(
    client: RedisClient,
    spec: FeatureSpec,
    base: Version,
    candidate: Version,
    batches: list[FeatureBatch],
    rounds: int,
    warm: Sequence[FeatureBatch] = (),
) -> dict[str, Any]:
    """Alternate the two versions for `rounds` rounds; per-run figures and medians."""
    runs: dict[str, list[dict[str, float]]] = {"base": [], "candidate": []}
    identical = True
    for r in range(rounds):
        order = [("base", base), ("candidate", candidate)]
        if r % 2:
            order.reverse()
        outputs = {}
        for name, version in order:
            figures, outputs[name] = run_once(client, spec, version, batches, warm)
            runs[name].append(figures)
            print(f"round {r + 1} {name:9} {version.label}: {json.dumps(figures)}", flush=True)
        identical = identical and _same(outputs["base"], outputs["candidate"])
    metrics = ("events_per_s", "redis_cpu_us_per_event", "evalsha_us_per_event")
    summary: dict[str, Any] = {
        name: {m: statistics.median(run[m] for run in runs[name]) for m in metrics} for name in runs
    }
    summary["ratio"] = {
        # Each ratio is "how many times better the candidate is", taken within one round.
        "events_per_s": statistics.median(
            c["events_per_s"] / b["events_per_s"]
            for b, c in zip(runs["base"], runs["candidate"], strict=True)
        ),
        "redis_cpu": statistics.median(
            b["redis_cpu_us_per_event"] / c["redis_cpu_us_per_event"]
            for b, c in zip(runs["base"], runs["candidate"], strict=True)
        ),
        "evalsha": statistics.median(
            b["evalsha_us_per_event"] / c["evalsha_us_per_event"]
            for b, c in zip(runs["base"], runs["candidate"], strict=True)
        ),
    }
    summary["identical"] = identical
    return {"runs": runs, "summary": summary}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.feature_store", description=__doc__)
    p.add_argument("--base", default="HEAD", help="git revision or file (default: HEAD)")
    p.add_argument(
        "--candidate", default=SCRIPT_PATH, help=f"git revision or file (default: {SCRIPT_PATH})"
    )
    p.add_argument("--events", type=int, default=50_000, help="events per run")
    p.add_argument("--batch", type=int, default=1_000, help="events per EVALSHA")
    p.add_argument("--rounds", type=int, default=5, help="rounds, versions alternating")
    p.add_argument(
        "--rate",
        type=float,
        default=1000.0,
        help="events per second of event time (default 1000, as the drain: windows barely "
        "fill; e.g. 0.5 spreads 50,000 events over 28 h, so 24 h windows are full)",
    )
    p.add_argument(
        "--history",
        type=int,
        default=0,
        help="feed N events spread over the 24 h before the measured ones first (not "
        "measured), so windows hold many buckets, as in steady streaming (default 0)",
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    url = os.environ.get("STREAMFER_REDIS_URL", "redis://127.0.0.1:6379/0")
    client = connect(url)
    spec = load_spec(DEMO_SPEC).features
    base, candidate = load_version(args.base), load_version(args.candidate)
    # One fixed "now": every run sees the same event times, so results must be identical.
    now_ms = int(time.time() * 1000)
    batches = make_batches(args.events, args.batch, args.seed, now_ms, args.rate)
    first_ms = min(min(b.event_time_ms) for b in batches)
    warm = warm_batches(args.history, args.batch, args.seed + 1, first_ms - 1, 86_400_000)
    load = os.getloadavg()
    print(
        f"{args.events} events at {args.rate:g}/s of event time in batches of {args.batch} "
        f"after {args.history} events of history, {args.rounds} rounds, {redact_url(url)}"
    )
    result = compare(client, spec, base, candidate, batches, args.rounds, warm)
    result["options"] = {**vars(args), "out": str(args.out), "redis": redact_url(url)}
    result["loadavg_before"] = load
    result["loadavg_after"] = os.getloadavg()
    summary = result["summary"]
    for name, version in (("base", base), ("candidate", candidate)):
        s = summary[name]
        print(
            f"{name:9} {version.label:24} events/s {s['events_per_s']:9,.0f}  "
            f"redis CPU {s['redis_cpu_us_per_event']:6.2f} us/event  "
            f"EVALSHA {s['evalsha_us_per_event']:6.2f} us/event"
        )
    ratio = summary["ratio"]
    print(
        f"candidate/base (median of per-round ratios): events/s x{ratio['events_per_s']:.2f}, "
        f"redis CPU /{ratio['redis_cpu']:.2f}, EVALSHA /{ratio['evalsha']:.2f}; "
        f"identical results: {summary['identical']}; load average "
        f"{load[0]:.2f} -> {result['loadavg_after'][0]:.2f}"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0 if summary["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
