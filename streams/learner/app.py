"""`streamfer learn`: the feedback service, a faust-streaming app.

    [labels] ─► librdkafka batch consume (N, within T) ─► join with the prediction log
        (one MGET) ─► River predict-then-learn ─► prequential metrics (Faust table, per
        window) ─► drift detectors ─► [alerts]    every K labels / T s ─► signed snapshot

Faust runs the app: the changelog-backed metrics table and its recovery, the web views,
the timers, producing alerts, signals. The labels themselves are read by a confluent-kafka
consumer inside the app, because faust-streaming's aiokafka consumer was seen skipping
records right after partition assignment (docs/adaptation.md shows the failure).

Exactly-once learning across a SIGKILL without Kafka transactions: each snapshot carries the
label offsets it includes (per partition: the next offset, and the offsets still waiting in
retry). On start the learner loads the newest snapshot, assigns the labels partitions at
those offsets, and skips what the snapshot already learned; so every label is learned once
into the model that serves. Metrics are deduplicated on their own: each table entry (one
label partition × one window) stores the label offsets it counted, in the same changelog
record as the sums, so a replayed label is never counted twice and a lost write is redone.

Modules: `labels` (records), `offsets` (the bookkeeping), `tables` (the metrics table),
`processor` (the pure core), `consumer` (librdkafka labels), `faust_settings`, `metrics`
(Prometheus). This one wires them: the faust app, its web views, timers and signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from prometheus_client import generate_latest
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from features.redis_connect import connect
from inference.adaptation import (
    AdaptationMode,
    AdaptationSpec,
    LearnerState,
    OnlineLearner,
    RiverReplica,
    Serving,
    SnapshotKeyMissing,
    SnapshotRejected,
    SnapshotStore,
    decode_examples,
    encode_examples,
    snapshot_key,
)
from streams.learner.consumer import LabelConsumer
from streams.learner.errors import LearnerError
from streams.learner.faust_settings import faust_broker_credentials
from streams.learner.labels import LabelRecord
from streams.learner.metrics import LearnerMetrics
from streams.learner.offsets import PartitionProgress, restore_progress
from streams.learner.processor import BatchResult, LabelProcessor
from streams.learner.shadow_metrics import shadow_comparisons
from streams.learner.tables import (
    TABLE,
    FaustTable,
    counter_total,
    merged_windows,
    totals,
    window_rows,
)
from streams.spec import Connections, PipelineSpec
from streams.worker.examples_log import ExamplesProducer, read_since
from streams.worker.kafka_log import COMMAND_LINK, BrokerRefused
from streams.worker.prediction_log import PredictionLog

log = logging.getLogger(__name__)


# -- the app -------------------------------------------------------------------------------
@dataclass
class LearnerOptions:
    """How `streamfer learn` runs (the CLI's options); `web_port` 0 is a free port."""

    web_host: str = "127.0.0.1"
    web_port: int = 6066
    idle_exit_s: float | None = None
    session_timeout_s: float = 10.0
    loglevel: str = "warning"


class Learner:
    """The faust app of one pipeline's learner and the state it works on."""

    def __init__(
        self, spec: PipelineSpec, connections: Connections, options: LearnerOptions
    ) -> None:
        adaptation: AdaptationSpec = spec.adaptation
        if adaptation.mode is AdaptationMode.OFF:
            raise LearnerError("adaptation.mode is off in this spec: set stack or challenger")
        if not spec.topics.labels:
            raise LearnerError("the spec names no labels topic: set topics.labels")
        unknown = [f for f in adaptation.drift.features if f not in spec.features.names]
        if unknown:
            raise LearnerError(
                f"adaptation.drift.features {unknown} are not feature columns; known: "
                f"{list(spec.features.names)}"
            )
        try:
            key = snapshot_key(connections.snapshot_secret)
        except SnapshotKeyMissing as exc:
            raise LearnerError(str(exc)) from None
        self.spec = spec
        self.adaptation = adaptation
        self.connections = connections
        self.options = options
        self.app_id = f"streamfer-learn-{spec.namespace}"
        self.web_port = options.web_port or free_port(options.web_host)
        # A Redis restart (refused connections, then LOADING while it reads its AOF) is
        # waited out, about 30 s, instead of crashing the app (found by tests/chaos). On a
        # Redis Cluster the same retry covers MOVED/ASK and a failover.
        self.redis = connect(
            connections.redis_url,
            socket_timeout=10,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 40),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError],
        )
        self.store = SnapshotStore(self.redis, spec.namespace, key)
        self.metrics = LearnerMetrics()
        self.topic_name = spec.topics.labels
        self.resumed_from: dict[str, Any] | None = None
        self._examples_offset: int | None = None  # the restored snapshot's log position
        self.learner, progress = self._restore()
        self.metrics.labels_seen.set(self.learner.labels_seen)
        self.prediction_log = PredictionLog(
            self.redis, spec.namespace, spec.features.names, spec.prediction_log.horizon
        )
        self.progress = progress
        self._lock = asyncio.Lock()
        self._since_snapshot = 0
        self._last_snapshot = time.monotonic()
        self._last_label = time.monotonic()
        self._dirty = False
        self.labels: LabelConsumer | None = None
        self.refused: BrokerRefused | None = None  # the broker refused the labels consumer
        self.app = self._build_app()
        self.examples = self._open_examples()

    # -- start-up: continue from the newest snapshot -------------------------------------
    def _restore(self) -> tuple[OnlineLearner, dict[int, PartitionProgress]]:
        names = tuple(self.spec.features.names)
        version = self.store.latest_version()
        snapshot = None
        if version is not None:
            try:
                # Its own last snapshot, even one from before snapshots were bound to their
                # pipeline: the next one it publishes is bound (workers refuse unbound ones).
                snapshot = self.store.load(version, with_state=True, allow_unbound=True)
            except SnapshotRejected as exc:
                raise LearnerError(
                    f"{exc}. Remove the snapshot keys sf:{{{self.spec.namespace}}}:adapt:* to "
                    "start learning afresh, or fix the key."
                ) from None
        if snapshot is None:
            return OnlineLearner(self.adaptation, names, self.spec.model.threshold), {}
        state = snapshot.state if isinstance(snapshot.state, LearnerState) else LearnerState()
        learner = OnlineLearner(
            self.adaptation, names, self.spec.model.threshold, snapshot.model, state
        )
        self.resumed_from = {"version": snapshot.version, "labels_seen": learner.labels_seen}
        offset = snapshot.meta.get("examples_offset")
        self._examples_offset = int(offset) if offset is not None else None
        log.warning(
            "continuing from snapshot %d (%d labels learned)", snapshot.version, learner.labels_seen
        )
        return learner, restore_progress(snapshot.meta, self.topic_name)

    def _open_examples(self) -> ExamplesProducer | None:
        """The examples log, continued: what lies past the snapshot's offset was learned
        (and published) before a crash; the model adopts it, in order, and the processor
        skips those labels, so none is learned or published twice (examples_log)."""
        topic = self.spec.topics.examples
        if not topic:
            return None
        values, end = read_since(self.connections, topic, self._examples_offset)
        learner = self.learner
        replica = RiverReplica(
            learner.model, self.adaptation.task, learner.columns, learner.labels_seen
        )
        decoded = decode_examples(values, len(learner.columns))
        applied = replica.apply(decoded)
        if applied.learned:
            for (partition, offset), kept in zip(decoded.labels, applied.kept, strict=True):
                if kept:
                    self.processor.adopted.setdefault(partition, set()).add(offset)
            learner.state.labels_seen = replica.applied
            self._dirty = True
            log.warning(
                "adopted %d examples learned after snapshot (log offsets %s..%d)",
                applied.learned,
                self._examples_offset,
                end,
            )
        producer = ExamplesProducer(self.connections, topic, f"{self.app_id}-examples", end)
        if self.adaptation.serving is Serving.REPLICA and (
            applied.learned or self.store.latest_version() is None
        ):
            # Replicas start from a checkpoint: the first (or the adopted) one, right away.
            meta = {
                **learner.meta(),
                "offsets": self.processor.offsets_meta(self.topic_name),
                "examples_offset": end,
            }
            self.store.publish(learner.model, meta, learner.state)
            self._dirty = False
        return producer

    def prepare_kafka(self) -> None:
        """The pipeline's topics exist (labels and alerts included)."""
        from streams.ops.topics import ensure_topics

        ensure_topics(self.connections, self.spec)

    def _partitions(self) -> int:
        """The labels topic's partition count, which the metrics table's changelog must match.

        The topics are created first: asking the broker for the metadata of a missing topic
        auto-creates it with the broker's default count (4 on the local stack), which would
        leave the changelog with fewer partitions than the labels it is co-partitioned with.
        """
        from streams.ops.topics import admin_for

        self.prepare_kafka()
        admin = admin_for(self.connections)
        meta = admin.list_topics(self.topic_name, timeout=10).topics.get(self.topic_name)
        if meta is None or not meta.partitions:
            return self.spec.topics.partitions
        return len(meta.partitions)

    # -- the faust app -------------------------------------------------------------------
    def _build_app(self) -> Any:
        import faust

        partitions = self._partitions()
        brokers = [f"kafka://{b.strip()}" for b in self.connections.bootstrap.split(",")]
        o = self.options
        app = faust.App(
            self.app_id,
            broker=brokers,
            broker_credentials=faust_broker_credentials(self.connections.kafka),
            store="memory://",
            topic_partitions=partitions,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=o.session_timeout_s,
            broker_heartbeat_interval=min(3.0, o.session_timeout_s / 3),
            web_enabled=True,
            web_bind=o.web_host,
            web_host=o.web_host,
            web_port=self.web_port,
            web_in_thread=False,
        )
        self.alerts_topic = (
            app.topic(self.spec.topics.alerts, key_serializer="raw", value_serializer="raw")
            if self.spec.topics.alerts
            else None
        )
        table = app.Table(
            TABLE,
            default=dict,
            partitions=partitions,
            schema=faust.Schema(key_type=str, key_serializer="json", value_serializer="json"),
        )
        self.table = FaustTable(table)
        self.processor = LabelProcessor(
            self.spec, self.prediction_log, self.table, self.learner, self.progress
        )
        batching = self.adaptation.batch
        learner = self

        async def consume_labels() -> None:
            """librdkafka batches (the take(N, within=T) of the learner), handled in order."""
            await learner._wait_for_tables(app)
            consumer = LabelConsumer(
                learner.connections,
                learner.topic_name,
                f"{learner.app_id}-labels",
                learner.progress,
            )
            learner.labels = consumer
            while not app.should_stop:
                records = await asyncio.to_thread(
                    consumer.consume, batching.max_size, batching.max_wait / 1000
                )
                if COMMAND_LINK.refusal is not None:
                    # Bad credentials are not waited out: stop the way SIGTERM does (a
                    # last snapshot), and `run` raises the refusal's one line.
                    learner.refused = COMMAND_LINK.refusal
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                if records:
                    await learner._wait_for_tables(app)
                    await learner.handle(records)

        app.task(consume_labels)

        retry_every = min(max(self.adaptation.label_retry.backoff / 2000, 0.5), 1.0)

        async def retry_timer() -> None:
            await learner.retry_and_snapshot()

        app.timer(retry_every, name="retry")(retry_timer)

        async def before_shutdown(*_args: Any, **_kwargs: Any) -> None:
            async with learner._lock:
                if learner._dirty:
                    await learner._snapshot()

        app.on_before_shutdown.connect(before_shutdown)
        self._add_views(app)
        return app

    def _add_views(self, app: Any) -> None:
        import faust

        learner = self

        class Status(faust.web.View):
            async def get(self, request: Any) -> Any:
                return _json_response(self, learner.status())

        class Windows(faust.web.View):
            async def get(self, request: Any) -> Any:
                return _json_response(self, {"windows": learner.window_rows()})

        class Metrics(faust.web.View):
            async def get(self, request: Any) -> Any:
                return self.bytes(
                    generate_latest(learner.metrics.registry),
                    content_type="text/plain; version=0.0.4",
                )

        app.page("/adaptation/")(Status)
        app.page("/adaptation/windows/")(Windows)
        app.page("/metrics")(Metrics)

    # -- processing ----------------------------------------------------------------------
    async def _wait_for_tables(self, app: Any) -> None:
        """Hold labels while Faust restores the metrics table (at start, after a rebalance):
        counting into a table that is being reloaded would lose counts."""
        recovery = app.tables.recovery
        while not recovery.completed.is_set() or app.in_recovery:
            await asyncio.sleep(0.1)

    async def handle(self, records: list[LabelRecord | tuple[int, int]]) -> None:
        async with self._lock:
            result = self.processor.consume(records)
            self._last_label = time.monotonic()
            await self._after(result)
            # Labels that came before their prediction was logged are retried here too, at
            # the labels loop's pace, not only by the (coarser) retry timer: freshness.
            retried = self.processor.due_retries()
            if retried.learned or retried.expired or retried.retried:
                await self._after(retried)

    async def retry_and_snapshot(self) -> None:
        if self._lock.locked():  # a batch is being handled; its end checks the snapshot too
            return
        async with self._lock:
            result = self.processor.due_retries()
            await self._after(result)
            if self._dirty and (
                time.monotonic() - self._last_snapshot >= self.adaptation.snapshot.every / 1000
            ):
                await self._snapshot()
            idle = self.options.idle_exit_s
            if (
                idle is not None
                and not self.processor.retry
                and time.monotonic() - self._last_label > idle
            ):
                if self._dirty:
                    await self._snapshot()
                log.warning("idle for %.0f s: stopping", idle)
                self.options.idle_exit_s = None
                os.kill(os.getpid(), signal.SIGTERM)

    async def _after(self, result: BatchResult) -> None:
        m = self.metrics
        for outcome in ("learned", "retried", "expired", "skipped", "bad"):
            value = getattr(result, outcome)
            if value:
                m.labels.labels(outcome).inc(value)
        m.pending.set(len(self.processor.retry))
        m.labels_seen.set(self.learner.labels_seen)
        m.promoted.set(1 if self.learner.promoted else 0)
        for alert in result.alerts:
            m.drift.labels(alert.detector, f"{alert.kind}:{alert.name}").inc()
            log.info("drift: %s on %s %s", alert.detector, alert.kind, alert.name)
            if self.alerts_topic is not None:
                await self.alerts_topic.send(
                    key=f"drift:{alert.name}".encode(), value=orjson.dumps(alert.to_json())
                )
        if self.examples is not None:
            for batch in result.examples:
                self.examples.append(encode_examples(batch))
        if result.windows:
            self._export_window_gauges(max(result.windows))
        if result.learned or result.expired or result.bad:
            self._dirty = True
            self._since_snapshot += result.learned + result.expired + result.bad
        if self._since_snapshot >= self.adaptation.snapshot.every_labels:
            await self._snapshot()

    async def _snapshot(self) -> None:
        """Make the metrics durable, then publish model + state + offsets (in that order:
        a snapshot never includes labels whose metrics could still be lost)."""
        await self.app.producer.flush()
        meta = {**self.learner.meta(), "offsets": self.processor.offsets_meta(self.topic_name)}
        if self.examples is not None:
            # The checkpoint names the log position after every example it has learned.
            meta["examples_offset"] = await asyncio.to_thread(self.examples.flush)
        version = await asyncio.to_thread(
            self.store.publish, self.learner.model, meta, self.learner.state
        )
        self._since_snapshot = 0
        self._last_snapshot = time.monotonic()
        self._dirty = False
        if self.labels is not None:
            self.labels.commit({p: pr.resume_offset() for p, pr in self.progress.items()})
        self.metrics.snapshots.inc()
        self.metrics.info.clear()
        self.metrics.info.labels(str(version), self.adaptation.mode.value).set(1)
        log.info("snapshot %d published (%d labels)", version, self.learner.labels_seen)

    # -- reading -------------------------------------------------------------------------
    def window_rows(self) -> list[dict[str, Any]]:
        return window_rows(self.table.items(), self.adaptation.task.value)

    def status(self) -> dict[str, Any]:
        items = self.table.items()
        return {
            "pipeline": self.spec.name,
            "mode": self.adaptation.mode.value,
            "labels_seen": self.learner.labels_seen,
            "promoted": self.learner.promoted,
            "pending": len(self.processor.retry),
            "expired": counter_total(items, "x|"),
            "bad": counter_total(items, "b|"),
            "snapshot_version": self.store.latest_version(),
            "resumed_from": self.resumed_from,
            "offsets": self.processor.offsets_meta(self.topic_name),
            "total": totals(items, self.adaptation.task.value),
        }

    def _export_window_gauges(self, start: int) -> None:
        items = self.table.items()
        task = self.adaptation.task.value
        windows = merged_windows(items, task)
        for name, metrics in windows.get(start, {}).items():
            for metric, value in metrics.result().items():
                if metric != "n" and value is not None:
                    self.metrics.window[metric].labels(name).set(value)
        for name, result in totals(items, task).items():
            for metric, value in result.items():
                if metric != "n" and value is not None:
                    self.metrics.overall.labels(name, metric).set(value)
        # Shadow candidates beside the active model on the same events (the dashboard's
        # prequential chart plots every output of these gauges).
        for version, c in shadow_comparisons(items, task, start=start).items():
            for name, result in (
                (f"shadow:{version}", c.shadow),
                (f"active@shadow:{version}", c.active),
            ):
                for metric, value in result.items():
                    if metric != "n" and value is not None:
                        self.metrics.window[metric].labels(name).set(value)

    def run(self) -> None:
        """Run until SIGTERM/SIGINT (or idle exit); blocks."""
        import faust

        for partition, progress in sorted(self.progress.items()):
            log.info(
                "labels partition %d: resuming at offset %d", partition, progress.resume_offset()
            )
        worker = faust.Worker(self.app, loglevel=self.options.loglevel, quiet=True)
        with contextlib.suppress(SystemExit):  # mode's worker exits the interpreter when done
            worker.execute_from_commandline()
        if self.refused is not None:
            raise LearnerError(str(self.refused))


def free_port(host: str) -> int:
    """A port nothing listens on now (`--web-port 0`); faust binds it moments later."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _json_response(view: Any, body: Any) -> Any:
    return view.bytes(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS),
        content_type="application/json",
    )
