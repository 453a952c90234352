"""`streamfer demo`: the whole slice on the local stack, with a summary a newcomer can read.

Stage 1, throughput: synthetic card payments through one worker (features in Redis, ONNX),
read back and summarized. Stage 2, adaptation, is `streams.workloads.demo_adaptation`.

Each run gets its own topics, consumer group and Redis namespace (suffix = run id), so the
numbers describe this run alone.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from streams.ops.topics import ensure_topics, read_topic
from streams.spec import Connections, PipelineSpec
from streams.worker.pipeline import Worker
from streams.workloads.demo_model import build_demo_model
from streams.workloads.producing import produce_synthetic
from streams.workloads.synthetic import CardPayments


def for_run(spec: PipelineSpec, run_id: str) -> PipelineSpec:
    """The same pipeline on topics, group and Redis keys of its own."""
    t = spec.topics
    topics = t.model_copy(
        update={
            "events": f"{t.events}-{run_id}",
            "predictions": f"{t.predictions}-{run_id}",
            "dead_letter": f"{t.dead_letter}-{run_id}",
            "labels": f"{t.labels}-{run_id}" if t.labels else None,
            "alerts": f"{t.alerts}-{run_id}" if t.alerts else None,
            "features": f"{t.features}-{run_id}" if t.features else None,
        }
    )
    delivery = spec.delivery.model_copy(update={"group": f"{spec.group}-{run_id}"})
    return spec.model_copy(
        update={
            "topics": topics,
            "delivery": delivery,
            "redis_namespace": f"{spec.namespace}-{run_id}",
        }
    )


def run_demo(
    spec: PipelineSpec, connections: Connections, n_events: int, *, log: Console
) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:6]
    spec = for_run(spec, run_id)
    if spec.model.path is not None and not Path(spec.model.path).exists():
        log.print("building the demo model (synthetic payments → features → MLP → ONNX)…")
        build_demo_model(spec)
    ensure_topics(connections, spec)
    log.print(f"producing {n_events:,} synthetic card payments to '{spec.topics.events}'…")
    produced = produce_synthetic(
        connections, spec, CardPayments(n_events, seed=int(time.time()) % 10_000)
    )
    log.print("scoring: consume → features in Redis → ONNX → predictions…")
    worker = Worker(spec, connections, worker_id=0)
    stats = worker.run(max_events=n_events, idle_exit_s=30)
    records = read_topic(
        connections, spec.topics.predictions, expected=stats.predictions, timeout_s=60
    )
    predictions = [orjson.loads(r.value()) for r in records]
    ids = [p["event_id"] for p in predictions]
    unique = set(ids)
    flagged = sum(1 for p in predictions if p["decision"])
    model = predictions[0]["model"] if predictions else {"name": spec.model.name, "version": "?"}
    return {
        "run": run_id,
        "events produced": f"{produced.count:,} ({produced.rate:,.0f}/s)",
        "events consumed": f"{stats.events_in:,} in {stats.batches} micro-batches",
        "predictions": f"{len(predictions):,} ({len(unique):,} distinct events)",
        "events without a prediction": produced.count - stats.dead_letters - len(unique),
        "dead letters": stats.dead_letters,
        "late events (beyond lateness)": stats.late,
        "throughput (1 worker)": f"{stats.events_per_s:,.0f} events/s",
        "flagged as fraud": f"{flagged:,} ({100 * flagged / max(len(predictions), 1):.1f}%)",
        "model": f"{model['name']} v{model['version']} on {worker.model.provider}",
        "features": ", ".join(spec.features.names),
        "predictions topic": spec.topics.predictions,
    }


# -- stage 2: adaptation across a concept drift ---------------------------------------------
# The fraud pattern the ONNX model learned changes halfway through the stream; labels follow
# their payments; the learner (`streamfer learn`, the real faust app, in its own process)
# trains River on them and the worker scores with its signed snapshots.
