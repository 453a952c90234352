"""`streamfer demo`: the whole slice on the local stack, with a summary a newcomer can read.

Stage 1, throughput: synthetic card payments through one worker (features in Redis, ONNX),
read back and summarized. Stage 2, adaptation, is `streams.workloads.demo_adaptation`.

Each run gets its own topics, consumer group and Redis namespace (suffix = run id), so the
numbers describe this run alone.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
from rich.console import Console

from streams.ops.topics import ensure_topics, read_topic
from streams.spec import Connections, PipelineSpec
from streams.worker.pipeline import Worker
from streams.workloads.demo_model import build_demo_model, pin_model
from streams.workloads.producing import produce_synthetic
from streams.workloads.synthetic import CardPayments


def for_run(spec: PipelineSpec, run_id: str) -> PipelineSpec:
    """The same pipeline on topics, group and Redis keys of its own."""
    return spec.prefixed(f"demo-{run_id}")


@dataclass(frozen=True)
class DemoSummary:
    """What stage 1 measured; `rows()` is the human table, `asdict` the JSON."""

    run: str
    events_produced: int
    produce_rate: float  # events/s
    events_consumed: int
    batches: int
    predictions: int
    distinct_predicted: int
    missing_predictions: int  # produced events with neither a prediction nor a dead letter
    dead_letters: int
    late: int
    events_per_s: float  # one worker, first consume to last acknowledgement
    flagged: int
    model: str
    model_version: str
    provider: str
    features: list[str]
    predictions_topic: str

    def rows(self) -> list[tuple[str, str]]:
        share = 100 * self.flagged / max(self.predictions, 1)
        return [
            ("run", self.run),
            ("events produced", f"{self.events_produced:,} ({self.produce_rate:,.0f}/s)"),
            ("events consumed", f"{self.events_consumed:,} in {self.batches} micro-batches"),
            ("predictions", f"{self.predictions:,} ({self.distinct_predicted:,} distinct events)"),
            ("events without a prediction", str(self.missing_predictions)),
            ("dead letters", str(self.dead_letters)),
            ("late events (beyond lateness)", str(self.late)),
            ("throughput (1 worker)", f"{self.events_per_s:,.0f} events/s"),
            ("flagged as fraud", f"{self.flagged:,} ({share:.1f}%)"),
            ("model", f"{self.model} v{self.model_version} on {self.provider}"),
            ("features", ", ".join(self.features)),
            ("predictions topic", self.predictions_topic),
        ]


def run_demo(
    spec: PipelineSpec, connections: Connections, n_events: int, *, log: Console
) -> DemoSummary:
    run_id = uuid.uuid4().hex[:6]
    spec = for_run(spec, run_id)
    if spec.model.path is not None and not Path(spec.model.path).exists():
        log.print("building the demo model (synthetic payments → features → MLP → ONNX)…")
        build_demo_model(spec)
    spec = pin_model(spec)  # the worker serves exactly the file built (or found) above
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
    return DemoSummary(
        run=run_id,
        events_produced=produced.count,
        produce_rate=produced.rate,
        events_consumed=stats.events_in,
        batches=stats.batches,
        predictions=len(predictions),
        distinct_predicted=len(unique),
        missing_predictions=produced.count - stats.dead_letters - len(unique),
        dead_letters=stats.dead_letters,
        late=stats.late,
        events_per_s=stats.events_per_s,
        flagged=flagged,
        model=str(model["name"]),
        model_version=str(model["version"]),
        provider=worker.model.provider,
        features=list(spec.features.names),
        predictions_topic=spec.topics.predictions,
    )


# -- stage 2: adaptation across a concept drift ---------------------------------------------
# The fraud pattern the ONNX model learned changes halfway through the stream; labels follow
# their payments; the learner (`streamfer learn`, the real faust app, in its own process)
# trains River on them and the worker scores with its signed snapshots.
