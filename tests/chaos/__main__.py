"""`python -m tests.chaos`: a long chaos run on a stack of its own, printing its summary.

    python -m tests.chaos --events 1000000 --minutes 30 --mode exactly_once --seed 7

`--minutes` is how long events flow; the fault counts scale with it (FaultCounts.for_minutes).
Exit status 1 when a check failed (the summary names it, with the seed and the replay).
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
from pathlib import Path

from tests.chaos.runner import ChaosConfig, ChaosRun
from tests.chaos.schedule import FaultCounts
from tests.integration.harness import own_stack

MODES = ("exactly_once", "at_least_once")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="events per mode")
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes events flow")
    parser.add_argument(
        "--mode", action="append", choices=MODES, help="delivery mode (repeatable; default: both)"
    )
    parser.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=None, help="logs and state (default: temp)")
    args = parser.parse_args(argv)
    # SIGTERM (a `timeout`, a CI cancel) unwinds like Ctrl-C: the processes the run started
    # and its stack are stopped by their `finally`s, not left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seed = args.seed if args.seed is not None else random.randrange(1, 1 << 31)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"chaos-{seed}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"seed {seed}; logs in {workdir}", flush=True)
    model = build_model(workdir)
    config = ChaosConfig(
        events=args.events,
        flow_s=args.minutes * 60,
        modes=tuple(args.mode or MODES),
        seed=seed,
        workdir=workdir,
        model=model,
        counts=FaultCounts.for_minutes(args.minutes),
        partitions=args.partitions,
    )
    with own_stack(workdir / "stack") as stack:
        report = ChaosRun(config, stack).run()
    print(report.summary(), flush=True)
    return 1 if report.failures else 0


def build_model(workdir: Path) -> Path:
    """The demo network for the test spec's card features (as tests/conftest.py trains it)."""
    from streams.workloads.demo_model import build_demo_model
    from tests.integration.harness import make_spec

    path = workdir / "card-fraud.onnx"
    return Path(build_demo_model(make_spec("model", {"path": str(path)}), n_events=4000))


if __name__ == "__main__":
    sys.exit(main())
