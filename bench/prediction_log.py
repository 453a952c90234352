"""`python -m bench.prediction_log`: two versions of the prediction log, same batches, same Redis.

The worker writes one prediction-log batch per micro-batch, beside the feature script. This
isolates it: batches of random feature rows and scores (the demo spec's 15 features, two
scores) written through `PredictionLog.write` once per version per round, each run in a
fresh namespace, versions alternating which goes first, then read back through the same
version's `read`. Per run: events/s of `write`, Redis CPU per event (`INFO cpu`, the whole
server, summed over the primaries of a Redis Cluster) and EVALSHA µs per event (`INFO
commandstats`). The base version is
`streams/worker/prediction_log.py` of a git revision, imported from a temporary copy, so the
whole class (encoding included) is compared. Both versions must read back identical entries;
the read back (right after the writes, as a label join with a short delay) is measured too.

Needs only Redis: STREAMFER_REDIS_URL (default redis://127.0.0.1:6379/0; a single Redis or a
Redis Cluster's seed node), a user allowed INFO.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from redis.cluster import RedisCluster

from bench.feature_store import release_namespace
from bench.workload import REPO
from features.redis_connect import RedisClient, connect, is_cluster

MODULE_PATH = "streams/worker/prediction_log.py"
NAMES = tuple(f"feature_{j}" for j in range(15))


def load_module(ref: str, label: str) -> ModuleType:
    """`ref` is a file path, or a git revision whose prediction_log.py is imported."""
    path = Path(ref)
    if not path.is_file():
        shown = subprocess.run(
            ["git", "show", f"{ref}:{MODULE_PATH}"], cwd=REPO, capture_output=True, text=True
        )
        if shown.returncode != 0:
            raise SystemExit(f"{ref!r} is neither a file nor a git revision: {shown.stderr}")
        path = Path(tempfile.mkdtemp(prefix="bench-pl-")) / f"{label}.py"
        path.write_text(shown.stdout)
    spec = importlib.util.spec_from_file_location(f"bench_pl_{label}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


def make_batches(n_events: int, batch: int, seed: int) -> list[dict[str, Any]]:
    """Random batches in the shape the worker logs (ids, features, scores, event times)."""
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, n_events, batch):
        n = min(batch, n_events - start)
        out.append(
            {
                "event_ids": [f"e-{seed}-{start + i}" for i in range(n)],
                "features": rng.normal(size=(n, len(NAMES))),
                "scores": {"score": rng.random(n), "final": rng.random(n)},
                "model_version": "3",
                "adaptation_version": "17",
                "event_time_ms": 1_795_000_000_000 + np.arange(start, start + n),
            }
        )
    return out


def _primaries_info(client: RedisClient, section: str) -> list[dict[str, Any]]:
    """`INFO section` of the one server, or of every primary of a cluster."""
    if is_cluster(client):
        assert isinstance(client, RedisCluster)
        return list(client.info(section, target_nodes=RedisCluster.PRIMARIES).values())
    return [client.info(section)]


def _cpu_s(client: RedisClient) -> np.ndarray:
    """CPU seconds of each primary (the one server of a single Redis)."""
    infos = _primaries_info(client, "cpu")
    return np.array([float(i["used_cpu_user"]) + float(i["used_cpu_sys"]) for i in infos])


def _evalsha_usec(client: RedisClient) -> int:
    stats = _primaries_info(client, "commandstats")
    return sum(int(i.get("cmdstat_evalsha", {}).get("usec", 0)) for i in stats)


def run_once(
    client: RedisClient, module: ModuleType, batches: list[dict[str, Any]], horizon_ms: int
) -> tuple[dict[str, float], list[Any]]:
    namespace = f"bench-pl-{uuid.uuid4().hex[:8]}"
    log = module.PredictionLog(client, namespace, NAMES, horizon_ms)
    log.write([], np.zeros((0, len(NAMES))), {}, "0", None, [])  # names and script, not timed
    n = sum(len(b["event_ids"]) for b in batches)
    cpu0, usec0 = _cpu_s(client), _evalsha_usec(client)
    wall = 0.0
    for batch in batches:
        start = time.perf_counter()
        log.write(**batch)
        wall += time.perf_counter() - start
    cpu1, usec1 = _cpu_s(client), _evalsha_usec(client)
    read_wall = time.perf_counter()
    read = [entry for batch in batches for entry in log.read(batch["event_ids"])]
    read_wall = time.perf_counter() - read_wall
    cpu2 = _cpu_s(client)
    # Both layouts: namespace-tagged keys (earlier versions) and per-shard tags.
    patterns = (f"sf:{{{namespace}}}:*", f"sf:{namespace}:*")
    keys = sum(1 for p in patterns for _ in client.scan_iter(match=p, count=10_000))
    release_namespace(client, "{" + namespace + "}")
    release_namespace(client, namespace)
    per_node = cpu1 - cpu0
    return {
        "events_per_s": n / wall,
        "redis_cpu_us_per_event": per_node.sum() * 1e6 / n,
        # The busiest node's share of the write CPU against the mean: 1 is even.
        "node_balance": float(per_node.max() / per_node.mean()) if per_node.sum() else 1.0,
        "evalsha_us_per_event": (usec1 - usec0) / n,
        "read_redis_cpu_us_per_event": (cpu2 - cpu1).sum() * 1e6 / n,
        "reads_per_s": n / read_wall,
        "keys": keys,
    }, read


def _same(a: list[Any], b: list[Any]) -> bool:
    def fields(entry: Any) -> tuple[Any, ...] | None:
        if entry is None:
            return None
        return (
            entry.event_id,
            entry.features,
            entry.scores,
            entry.model_version,
            entry.adaptation_version,
            entry.event_time_ms,
        )

    return len(a) == len(b) and all(fields(x) == fields(y) for x, y in zip(a, b, strict=True))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.prediction_log", description=__doc__)
    p.add_argument("--base", default="HEAD", help="git revision or file (default: HEAD)")
    p.add_argument("--candidate", default=MODULE_PATH, help=f"default: {MODULE_PATH}")
    p.add_argument("--events", type=int, default=50_000, help="events per run")
    p.add_argument("--batch", type=int, default=1_000, help="events per write")
    p.add_argument("--rounds", type=int, default=5, help="rounds, versions alternating")
    p.add_argument("--horizon-ms", type=int, default=3_600_000, help="label horizon")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    url = os.environ.get("STREAMFER_REDIS_URL", "redis://127.0.0.1:6379/0")
    client = connect(url)
    versions = {
        "base": (args.base, load_module(args.base, "base")),
        "candidate": (args.candidate, load_module(args.candidate, "candidate")),
    }
    batches = make_batches(args.events, args.batch, seed=11)
    load = os.getloadavg()
    runs: dict[str, list[dict[str, float]]] = {"base": [], "candidate": []}
    identical = True
    for r in range(args.rounds):
        order = ["base", "candidate"] if r % 2 == 0 else ["candidate", "base"]
        reads = {}
        for name in order:
            figures, reads[name] = run_once(client, versions[name][1], batches, args.horizon_ms)
            runs[name].append(figures)
            print(f"round {r + 1} {name:9} {versions[name][0]}: {figures}", flush=True)
        identical = identical and _same(reads["base"], reads["candidate"])
    for name, (label, _) in versions.items():
        med = {m: statistics.median(run[m] for run in runs[name]) for m in runs[name][0]}
        print(
            f"{name:9} {label:34} events/s {med['events_per_s']:9,.0f}  redis CPU "
            f"{med['redis_cpu_us_per_event']:5.2f} us/event  EVALSHA "
            f"{med['evalsha_us_per_event']:5.2f} us/event  read: redis CPU "
            f"{med['read_redis_cpu_us_per_event']:5.2f} us/event, {med['reads_per_s']:9,.0f}/s  "
            f"keys {med['keys']:,.0f}  busiest node / mean {med['node_balance']:.2f}"
        )
    cpu_ratio = statistics.median(
        b["redis_cpu_us_per_event"] / c["redis_cpu_us_per_event"]
        for b, c in zip(runs["base"], runs["candidate"], strict=True)
    )
    print(
        f"redis CPU base/candidate (median of per-round ratios) {cpu_ratio:.2f}; identical "
        f"entries read back: {identical}; load average {load[0]:.2f} -> {os.getloadavg()[0]:.2f}"
    )
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
