"""Open-loop latency of one system at one input rate (see `bench.loadgen`)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from bench.drain import Bench, prepare, release
from bench.launcher import launch, release_when_assigned
from bench.peers import environment
from bench.systems import SystemDef
from bench.workload import REPO, safe_name


def measure_latency(
    bench: Bench,
    system: SystemDef,
    *,
    label: str,
    rate: float,
    duration_s: float,
    warmup_s: float,
    drain_s: float = 30.0,
) -> dict[str, Any]:
    """Run `system` on an empty topic fed at `rate` events/s; the latency table row."""
    events_topic = f"bench-{bench.token}-{safe_name(label)}-ev"
    bench.footprint.create_topics([events_topic])
    run_dir, raw = prepare(bench, system, label, events_topic)
    running = launch(
        system,
        spec_path=run_dir / "spec.yaml",
        run_dir=run_dir,
        connections=bench.connections_for(system),
        namespace=raw["redis_namespace"],
    )
    out_path = run_dir / "latency.json"
    config = {
        "bootstrap": bench.connections.bootstrap,
        "events_topic": events_topic,
        "predictions_topic": raw["topics"]["predictions"],
        "rate": rate,
        "warmup_s": warmup_s,
        "duration_s": duration_s,
        "drain_s": drain_s,
        "out_path": str(out_path),
    }
    (run_dir / "loadgen.json").write_text(json.dumps(config))
    result: dict[str, Any]
    try:
        release_when_assigned(running, bench.connections_for(system), raw["name"])
        with open(run_dir / "loadgen.log", "wb") as log:
            subprocess.run(
                [sys.executable, "-m", "bench.loadgen", str(run_dir / "loadgen.json")],
                cwd=REPO,
                env=environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=warmup_s + duration_s + drain_s + 240,
                check=True,
            )
        result = json.loads(out_path.read_text())
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        failure = running.failure()
        reports = running.stop()
        release(bench, raw)
        bench.footprint.release_topics([events_topic])
    if failure and "error" not in result:
        result["error"] = failure
    result.setdefault("rate", rate)
    result |= {"system": system.name, "label": label, "workers": system.workers}
    result["reports"] = reports
    return result
