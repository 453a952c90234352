"""`python -m bench`: streamfer against passthrough, Quix Streams and Faust; see --help.

Needs the broker and Redis of STREAMFER_BOOTSTRAP / STREAMFER_REDIS_URL (the local stack:
`streamfer up`). Results go to bench/results/<date>/: results.json, results.md and PNGs.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from bench.redis_targets import DEFAULT_CLUSTER_PORT
from bench.suite import DEFAULT_SYSTEMS, Options, run_suite
from bench.systems import SYSTEMS


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _names(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown systems {unknown}; known: {sorted(SYSTEMS)}")
    return names


def _patch(text: str) -> tuple[str, str]:
    label, _, path = text.partition("=")
    if not path or not Path(path).is_file():
        raise argparse.ArgumentTypeError("--patch takes LABEL=FILE.py with an existing file")
    return label, path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--events", type=int, default=1_000_000, help="events pre-filled and drained")
    p.add_argument(
        "--peer-events",
        type=int,
        default=100_000,
        help="Quix Streams and Faust drain only the first N events of the same workload "
        "(they are slow; 0: all events)",
    )
    p.add_argument(
        "--systems",
        type=_names,
        default=DEFAULT_SYSTEMS,
        help=f"comma-separated, from {','.join(SYSTEMS)} (default: all)",
    )
    p.add_argument("--repeat", type=int, default=1, help="drain rounds (systems interleaved)")
    p.add_argument(
        "--loads",
        type=_floats,
        default=(0.25, 0.5, 0.75),
        help="latency input rates for streamfer-1w, as fractions of its drain rate "
        "(other systems run at 0.5); empty string: no latency runs",
    )
    p.add_argument(
        "--latency-systems", type=_names, default=None, help="systems with a latency run"
    )
    p.add_argument("--latency-rate", type=float, default=None, help="base rate (default: drain)")
    p.add_argument("--latency-seconds", type=float, default=15.0, help="measured seconds")
    p.add_argument("--latency-warmup", type=float, default=3.0, help="warm-up seconds")
    p.add_argument("--no-profile", action="store_true", help="skip the pyinstrument drain")
    p.add_argument(
        "--patch",
        type=_patch,
        action="append",
        default=[],
        help="LABEL=FILE.py: also run streamfer-1w with FILE exec'd first (A/B a change)",
    )
    p.add_argument(
        "--redis-cluster",
        action="store_true",
        help="also run each chosen streamfer system against a 3-primary Redis Cluster "
        "(`<name>@cluster`, same rounds): STREAMFER_BENCH_CLUSTER_URL, else a local one "
        "started for the run",
    )
    p.add_argument(
        "--cluster-port",
        type=int,
        default=DEFAULT_CLUSTER_PORT,
        help="first base port tried for the local cluster (9 ports, below 32768)",
    )
    p.add_argument("--max-size", type=int, default=None, help="override batching.max_size")
    p.add_argument("--max-wait-ms", type=int, default=None, help="override batching.max_wait")
    p.add_argument("--out", type=Path, default=None, help="default bench/results/<date>")
    p.add_argument("--keep-runs", action="store_true", help="keep per-run logs and reports")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("inference").setLevel(logging.WARNING)
    options = Options(
        events=args.events,
        peer_events=args.peer_events or None,
        systems=args.systems,
        repeat=args.repeat,
        loads=args.loads,
        latency_systems=args.latency_systems,
        latency_seconds=args.latency_seconds,
        latency_warmup_s=args.latency_warmup,
        latency_base_rate=args.latency_rate,
        profile=not args.no_profile,
        patches=tuple(args.patch),
        max_size=args.max_size,
        max_wait_ms=args.max_wait_ms,
        out=args.out,
        keep_runs=args.keep_runs,
        redis_cluster=args.redis_cluster,
        cluster_port=args.cluster_port,
        command=" ".join(["python -m bench", *map(shlex.quote, argv)]),
    )
    result = run_suite(options)
    print((Path(result["out"]) / "results.md").read_text())
    return 0 if result.get("drain") else 1


if __name__ == "__main__":
    sys.exit(main())
