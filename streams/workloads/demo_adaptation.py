"""`streamfer demo`, stage 2: adaptation happening, before and after a concept drift.

Payments whose fraud pattern changes halfway, each label published once the payment's
prediction has been read (`streams.workloads.feedback`), the learner (`streamfer learn`, in
its own process) training River on them and the worker serving a River replica kept current
from the learner's examples log; the summary compares ONNX-only, River-only and final
accuracy before and after the drift, and served River with the learner's own
predict-then-learn. Stage 1 (throughput) is `streams.workloads.demo`.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml
from pydantic import SecretStr
from rich.console import Console

from inference.adaptation import AdaptationMode, AdaptationTask, Serving
from streams.learner.process import LearnerProcess
from streams.ops.topics import ensure_topics, read_topic
from streams.spec import SNAPSHOT_KEY_ENV, Connections, PipelineSpec
from streams.worker.pipeline import RunStats, Worker
from streams.workloads.demo import for_run
from streams.workloads.demo_model import build_demo_model, pin_model
from streams.workloads.feedback import publish_with_feedback
from streams.workloads.replay import card_payment_rows
from streams.workloads.synthetic import CardPayments

LABEL_DELAY_ROWS = 100  # the retraining stage's labels: 100 payments after their payment
STEP = 500  # payments published before waiting for the learner to keep up (retraining)
# The adaptation stage publishes payments in blocks; a block's labels follow once its
# predictions are read, and the next block waits until the served model learned them: a
# payment is scored by a model at most one block (0–19 labels) behind the learner's.
LABEL_BLOCK = 20
# The stage's batch waits (worker and learner): a block's labels reach the served model in
# tens of milliseconds, so the loop takes about as long as the throughput stage.
FEEDBACK_WAIT_MS = 5
SEED = 3  # the stage's numbers are reproducible; ids carry the run id, so runs never mix
OUTPUTS = ("onnx", "river", "final")


class DemoError(Exception):
    """The demo cannot run as asked; the message says what to change."""


@dataclass(frozen=True)
class Accuracy:
    """One output's accuracy before and after the drift, over the same payments for all."""

    before: float
    after: float


@dataclass(frozen=True)
class AdaptationSummary:
    run: str
    payments: int
    drift_at: int
    drift_time_ms: int  # event time of payment `drift_at`: alerts are placed by event time
    before_from: int  # first payment of "before": the first one River scored
    river_final_from: int | None  # first payment whose served score was River's
    accuracy: dict[str, Accuracy]  # per output: onnx, river, final
    labels_learned: int
    labels_expired: int
    snapshots_published: int
    versions_loaded: list[int]  # the snapshot versions that scored at least one payment
    alerts: list[dict[str, Any]]  # drift alerts as the learner published them
    rejected_snapshots: int
    random_key: bool  # STREAMFER_SNAPSHOT_KEY was set by the demo for its own processes
    label_block: int  # payments per block: a block's labels follow its predictions
    final_rule: str  # how the spec's adaptation mode chooses the final score
    seconds: float
    # River's accuracy in the learner's own predict-then-learn (its metrics table), over
    # every label: what served River would reach with no serving lag at all
    learner_river: float | None = None
    served_river: float | None = None  # the same labels, as the worker's River served them
    serving: str = "snapshot"

    def rows(self) -> list[tuple[str, str]]:
        """The summary as (what, value) lines, as `streamfer demo` prints them."""
        acc = self.accuracy
        loaded = self.versions_loaded
        return [
            ("run", f"{self.run} ({self.seconds:.0f} s)"),
            (
                "payments",
                f"{self.payments:,}, the fraud pattern changes at payment {self.drift_at:,}; "
                f"published {self.label_block} at a time, each block's labels once its "
                "predictions are read",
            ),
            (
                "accuracy before → after",
                f"payments {self.before_from:,}–{self.drift_at - 1:,} (from the first one River "
                f"scored) → {self.drift_at:,}–{self.payments - 1:,}",
            ),
            ("  ONNX only (offline model)", f"{acc['onnx'].before:.3f} → {acc['onnx'].after:.3f}"),
            (
                "  River only (learns online)",
                f"{acc['river'].before:.3f} → {acc['river'].after:.3f}",
            ),
            (
                "  final (what was served)",
                f"{acc['final'].before:.3f} → {acc['final'].after:.3f}",
            ),
            (
                "  River served vs the learner's own",
                f"{_acc(self.served_river)} served ({self.serving}: every label of the "
                f"earlier blocks learned, 0–{self.label_block - 1} payments behind) vs "
                f"{_acc(self.learner_river)} predict-then-learn (each label predicted just "
                "before it is learned: none behind)",
            ),
            (
                "final = River from",
                f"payment {self.river_final_from:,} ({self.final_rule})"
                if self.river_final_from is not None
                else f"never: ONNX served every payment ({self.final_rule})",
            ),
            ("labels learned", f"{self.labels_learned:,} ({self.labels_expired:,} expired)"),
            (
                "snapshots",
                f"{self.snapshots_published} published by the learner; the worker scored with "
                f"{len(loaded)}"
                + (f" (v{loaded[0]}…v{loaded[-1]})" if loaded else "")
                + (f", refused {self.rejected_snapshots}" if self.rejected_snapshots else ""),
            ),
            ("drift alerts", describe_alerts(self.alerts, self.drift_time_ms)),
            (
                "snapshot key",
                "random, for this demo's worker and learner only (STREAMFER_SNAPSHOT_KEY "
                "is not set)"
                if self.random_key
                else "from STREAMFER_SNAPSHOT_KEY",
            ),
        ]


def _acc(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def with_replicas(spec: PipelineSpec) -> PipelineSpec:
    """Replica serving unless the spec chose: the worker keeps its own River replica current
    from the learner's examples log (a topic of the run's own)."""
    if "serving" in spec.adaptation.model_fields_set:
        return spec
    topics = spec.topics.model_copy(
        update={"examples": spec.topics.examples or f"{spec.topics.labels}.examples"}
    )
    adaptation = spec.adaptation.model_copy(update={"serving": Serving.REPLICA})
    return spec.model_copy(update={"topics": topics, "adaptation": adaptation})


def with_short_waits(spec: PipelineSpec) -> PipelineSpec:
    """The worker's and the learner's batch waits at `FEEDBACK_WAIT_MS`: each block waits for
    its predictions and then for its labels to be learned, so a long batch wait is paid
    twice per block (the spec's 50 ms / 200 ms would make the stage several times slower)."""
    wait_ms = FEEDBACK_WAIT_MS
    batching = spec.batching.model_copy(update={"max_wait": wait_ms})
    batch = spec.adaptation.batch.model_copy(update={"max_wait": wait_ms})
    adaptation = spec.adaptation.model_copy(update={"batch": batch})
    return spec.model_copy(update={"batching": batching, "adaptation": adaptation})


def served_river_accuracy(
    predictions: Sequence[dict[str, Any]], labels: dict[str, tuple[int, float]], threshold: float
) -> float | None:
    """River's served accuracy over every labelled prediction that carried a River score."""
    pairs = [
        (p["scores"]["river"] >= threshold, labels[str(p["event_id"])][1] >= 0.5)
        for p in predictions
        if p.get("scores", {}).get("river") is not None and str(p["event_id"]) in labels
    ]
    return sum(a == b for a, b in pairs) / len(pairs) if pairs else None


def describe_alerts(alerts: Sequence[dict[str, Any]], drift_time_ms: int) -> str:
    """How many drift alerts came after the drift and which stream fired at which label
    count first; alerts before it (River's own learning curve, say) are counted apart.

    An alert is placed by the event time of the label that raised it, not by the labels
    count: labels are learned in label-time order, but a label whose prediction was not yet
    in the log is retried and learned later, so counts and positions can differ a little."""
    if not alerts:
        return "none"

    def first_per_stream(chosen: Sequence[dict[str, Any]]) -> str:
        first: dict[str, int] = {}
        for alert in sorted(chosen, key=lambda a: int(a["labels_seen"])):
            stream = f"{alert['name']} error" if alert["kind"] == "output" else str(alert["name"])
            first.setdefault(stream, int(alert["labels_seen"]))
        return ", ".join(f"{stream} at label {n:,}" for stream, n in first.items())

    after = [a for a in alerts if int(a["event_time_ms"]) >= drift_time_ms]
    before = [a for a in alerts if int(a["event_time_ms"]) < drift_time_ms]
    detectors = "/".join(sorted({str(a["detector"]) for a in alerts}))
    text = f"{len(after)} after the drift ({detectors})"
    if after:
        text += f", first: {first_per_stream(after)}"
    if before:
        text += f"; {len(before)} before it: {first_per_stream(before)}"
    return text


def accuracy_across_drift(
    predictions: Sequence[dict[str, Any]],
    labels: dict[str, tuple[int, float]],
    drift_at: int,
    *,
    threshold: float = 0.5,
) -> tuple[int, dict[str, Accuracy]]:
    """Accuracy of ONNX-only, River-only and final scores before and after the drift.

    `labels`: event id → (position in the stream, label). "Before" starts at the first
    payment that a River snapshot scored, so the three outputs are measured on the same
    payments; each output's decision is its score ≥ `threshold` (the spec's, as served).
    """
    rows = []
    for p in predictions:
        if p["event_id"] not in labels or "river" not in p["scores"]:
            continue
        position, label = labels[p["event_id"]]
        rows.append((position, label, p["scores"]["onnx"], p["scores"]["river"], p["score"]))
    if not rows:
        raise DemoError(
            "no prediction was scored with a River snapshot: the learner never caught up"
        )
    table = np.asarray(rows, dtype=np.float64)
    position, y = table[:, 0], table[:, 1]
    before_from = int(position[position < drift_at].min(initial=drift_at))
    out: dict[str, Accuracy] = {}
    for column, name in enumerate(OUTPUTS, start=2):
        correct = (table[:, column] >= threshold) == (y >= 0.5)
        before = correct[position < drift_at]
        after = correct[position >= drift_at]
        out[name] = Accuracy(
            float(before.mean()) if before.size else float("nan"),
            float(after.mean()) if after.size else float("nan"),
        )
    return before_from, out


def final_rule(spec: PipelineSpec) -> str:
    adaptation = spec.adaptation
    if adaptation.mode is AdaptationMode.CHALLENGER:
        c = adaptation.challenger
        return (
            f"challenger: River serves while its {c.metric or 'accuracy'} on the last "
            f"{c.window} labels beats ONNX's by more than {c.margin}"
        )
    return f"stack: River serves once its snapshot has learned {adaptation.min_labels} labels"


def river_final_from(
    predictions: Sequence[dict[str, Any]], labels: dict[str, tuple[int, float]]
) -> int | None:
    """Position of the first payment whose served score was River's (not ONNX's)."""
    served = [
        labels[p["event_id"]][0]
        for p in predictions
        if p["event_id"] in labels
        and "river" in p["scores"]
        and p["score"] == p["scores"]["river"] != p["scores"]["onnx"]
    ]
    return min(served, default=None)


@contextmanager
def snapshot_key(connections: Connections) -> Iterator[tuple[Connections, bool]]:
    """The snapshot key for the demo's worker and the learner it starts: the one set, or a
    random one for the demo's own processes (then True), in the worker's connections and in
    STREAMFER_SNAPSHOT_KEY for the learner's process, removed afterwards."""
    if connections.snapshot_secret:
        yield connections, False
        return
    key = secrets.token_hex(32)
    os.environ[SNAPSHOT_KEY_ENV] = key
    try:
        yield connections.model_copy(update={"snapshot_key": SecretStr(key)}), True
    finally:
        os.environ.pop(SNAPSHOT_KEY_ENV, None)


def check_adaptive(spec: PipelineSpec, source: str, n_events: int) -> None:
    """The adaptation stage needs labels, adaptation on, the features the fraud rule reads,
    and enough payments for a before and an after."""
    if n_events < 2 * STEP:
        raise DemoError(
            f"--drift-events {n_events}: give at least {2 * STEP:,} (half of them after the "
            "drift), or 0 to skip the adaptation stage"
        )
    problems = []
    if spec.adaptation.mode is AdaptationMode.OFF:
        problems.append("adaptation.mode is off: set stack or challenger")
    if not spec.topics.labels:
        problems.append("topics.labels is not set")
    if spec.adaptation.task is not AdaptationTask.CLASSIFICATION:
        problems.append("adaptation.task must be classification (fraud or not)")
    missing = [n for n in ("card_count_1h", "card_amount_mean_1h") if n not in spec.features.names]
    if missing:
        problems.append(f"the fraud labels need the features {missing}")
    if problems:
        raise DemoError(
            f"{source} cannot run the adaptation stage: {'; '.join(problems)} "
            "(examples/card-payments-adaptive.yaml can)"
        )


def run_adaptation_demo(
    spec: PipelineSpec, connections: Connections, n_events: int, *, log: Console
) -> AdaptationSummary:
    """Stage 2: card payments whose fraud pattern changes halfway, scored by a worker while
    the learner trains River on their delayed labels; accuracy before and after the drift."""
    check_adaptive(spec, spec.name, n_events)
    started = time.perf_counter()
    run_id = uuid.uuid4().hex[:6]
    spec = with_short_waits(with_replicas(for_run(spec, run_id)))
    drift_at = n_events // 2
    if spec.model.path is not None and not Path(spec.model.path).exists():
        log.print("building the demo model (synthetic payments → features → MLP → ONNX)…")
        build_demo_model(spec)
    spec = pin_model(spec)  # the worker serves exactly the file built (or found) above
    log.print(
        f"labelling {n_events:,} payments; the fraud pattern changes at payment {drift_at:,}…"
    )
    rows = card_payment_rows(
        spec, CardPayments(n_events, seed=SEED, drift_at=drift_at, run_id=f"d{run_id}")
    )
    labels = {str(r.event[spec.event.id]): (i, r.label) for i, r in enumerate(rows)}
    ensure_topics(connections, spec)
    with (
        snapshot_key(connections) as (connections, random_key),
        tempfile.TemporaryDirectory(prefix="streamfer-demo-") as tmp,
    ):
        if random_key:
            log.print(
                f"{SNAPSHOT_KEY_ENV} is not set: the worker and learner of this demo sign and "
                "check snapshots with a random key of their own"
            )
        workdir = Path(tmp)
        spec_file = workdir / "spec.yaml"
        spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_unset=True)))
        log.print("starting the learner (`streamfer learn`, a faust-streaming app)…")
        # --idle-exit: a learner orphaned by a killed demo stops on its own.
        learner = LearnerProcess(spec_file, connections, workdir, args=("--idle-exit", "120"))
        worker_thread: WorkerThread | None = None
        try:
            learner.wait(lambda s: True, 120, "the learner's web view")
            running = worker_thread = WorkerThread(Worker(spec, connections, worker_id=0))
            replica_mode = spec.adaptation.serving is Serving.REPLICA

            def learned(published_labels: int) -> None:
                # every label out so far learned by the model that serves the next block
                if replica_mode:
                    running.wait_replica(published_labels, learner, 120)
                else:
                    learner.wait(
                        lambda s: int(s["labels_seen"]) + int(s["expired"]) >= published_labels,
                        120,
                        f"the learner to learn {published_labels:,} labels",
                    )
                running.check()

            log.print(
                f"streaming: payments → worker (ONNX + River), {LABEL_BLOCK} at a time; their "
                "labels once their predictions are read → learner → examples log → the "
                "worker's River replica…"
            )
            fed = publish_with_feedback(
                spec, connections, rows, block=LABEL_BLOCK, wait_learned=learned
            )
            status = learner.wait(
                lambda s: (
                    int(s["labels_seen"]) + int(s["expired"]) >= n_events and int(s["pending"]) == 0
                ),
                120,
                "the learner to take every label",
            )
        finally:
            if worker_thread is not None:
                worker_thread.stop()
            learner.stop()
        running.join()  # re-raises what stopped the worker, if anything did
    predictions = fed.predictions
    before_from, accuracy = accuracy_across_drift(
        predictions, labels, drift_at, threshold=spec.model.threshold
    )
    versions = sorted(
        {
            int(str(p["adaptation_version"]).split("@")[0])  # a replica's is `checkpoint@seq`
            for p in predictions
            if p["adaptation_version"] is not None
        }
    )
    assert spec.topics.alerts is not None
    alerts = [
        orjson.loads(r.value())
        for r in read_topic(connections, spec.topics.alerts, timeout_s=15, idle_s=1.0)
    ]
    return AdaptationSummary(
        run=run_id,
        payments=n_events,
        drift_at=drift_at,
        drift_time_ms=int(rows[drift_at].event[spec.event.time.field]),
        before_from=before_from,
        accuracy=accuracy,
        labels_learned=int(status["labels_seen"]),
        labels_expired=int(status["expired"]),
        snapshots_published=int(status["snapshot_version"] or 0),
        versions_loaded=versions,
        alerts=[a for a in alerts if a.get("type") == "drift"],
        rejected_snapshots=sum(1 for a in alerts if a.get("kind") == "snapshot_rejected"),
        random_key=random_key,
        label_block=LABEL_BLOCK,
        final_rule=final_rule(spec),
        river_final_from=river_final_from(predictions, labels),
        seconds=time.perf_counter() - started,
        learner_river=(status.get("total") or {}).get("river", {}).get("accuracy"),
        served_river=served_river_accuracy(predictions, labels, spec.model.threshold),
        serving=spec.adaptation.serving.value,
    )


class WorkerThread:
    """A Worker scoring in a thread of the demo while the main thread publishes."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.stats: RunStats | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="demo-worker", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.stats = self.worker.run()
        except BaseException as exc:  # re-raised in the main thread by check()/join()
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def wait_replica(self, applied: int, learner: LearnerProcess, timeout_s: float) -> None:
        """Until the worker's River replica has applied `applied` examples (the learner
        publishes one per label it learns); raises if the worker or the learner stopped."""
        deadline = time.monotonic() + timeout_s
        while True:
            replica = self.worker._adapter.replica  # the demo's own in-process worker
            if replica is not None and replica.applied >= applied:
                return
            self.check()
            if learner.proc.poll() is not None or time.monotonic() > deadline:
                # the learner's status and log say why (exited, or stuck on a label)
                learner.wait(lambda _s: False, 0, f"the worker's replica to learn {applied:,}")
            time.sleep(0.002)

    def stop(self) -> None:
        self.worker.stop.set()

    def join(self) -> RunStats:
        self.thread.join(120)
        self.check()
        if self.stats is None:
            raise DemoError("the worker did not stop within 2 minutes")
        return self.stats
