"""The wiring: the one place that joins Kafka, Redis and the model to the pure core.

    consume batch ─► decode+validate ─► Scorer: features (1 Redis call) ─► ONNX (1 run)
      ─► adapter ─► prediction log (1 Redis call) ─► encode ─► produce + offsets

`Worker` builds the parts from the spec and runs the loop: poll, backpressure, deliver,
count. The scoring itself is `streams.worker.scoring.Scorer`, which does no I/O of its own.
A micro-batch is handled whole. Bad events leave as dead letters; a failing or slow Redis
or model pauses consumption and retries the same batch with backoff (nothing dropped,
no crash loop); SIGTERM lets the batch in flight finish and commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import redis

from features.backends import open_store
from features.redis_connect import connect
from features.store import FeatureStore, StateLost
from inference.adaptation import Adapter, ExampleSourceFactory
from inference.registry import ModelRegistry, ModelSwitch
from inference.shadow import ShadowModel
from streams.events.codec import decode_batch, encode_feature_records, encode_predictions
from streams.events.dead_letters import withheld
from streams.events.schema import EventValidator
from streams.spec import Connections, DeliveryMode, PipelineSpec
from streams.worker.alerts import AlertSink
from streams.worker.consumer import BatchConsumer, MessageBatch
from streams.worker.delivery import (
    AtLeastOnceOutput,
    BatchAborted,
    Output,
    OutputBatch,
    OutputTopics,
    TransactionalOutput,
)
from streams.worker.examples_log import ExamplesTail
from streams.worker.instance import client_id, resolve_instance_id, transactional_id
from streams.worker.kafka_log import BrokerLink
from streams.worker.metrics import WorkerMetrics
from streams.worker.overlap import IN_FLIGHT_TIMEOUT_S, InFlight, LogWrite, RedisLane, leave
from streams.worker.prediction_log import PredictionLog
from streams.worker.scoring import Featurized, ScoredBatch, Scorer
from streams.worker.state_guard import AppliedOffsets, StateLossAlarm
from streams.worker.watchdog import Progress

log = logging.getLogger(__name__)

T = TypeVar("T")

# Failures of a dependency that are worth waiting out: Redis down or busy, a model run
# failing (onnxruntime raises RuntimeError subclasses), e.g. a GPU out of memory.
# On a Redis Cluster, a failover (slots uncovered, CLUSTERDOWN, TRYAGAIN) is waited out too.
_TRANSIENT_REDIS = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
)


@dataclass
class RunStats:
    """What one worker did; `events_per_s` spans first consume to last acknowledgement."""

    events_in: int = 0
    predictions: int = 0
    dead_letters: int = 0
    late: int = 0
    replayed: int = 0
    batches: int = 0
    aborted_batches: int = 0
    first_consume: float | None = None
    last_done: float | None = None
    model_versions: set[str] = field(default_factory=set)

    @property
    def events_per_s(self) -> float:
        if self.first_consume is None or self.last_done is None:
            return 0.0
        return self.events_in / max(self.last_done - self.first_consume, 1e-9)


class Worker:
    """One consumer-group member running the pipeline of a spec."""

    def __init__(
        self,
        spec: PipelineSpec,
        connections: Connections,
        *,
        worker_id: int = 0,
        exactly_once: bool | None = None,
        metrics: WorkerMetrics | None = None,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.time,
        instance_id: str | None = None,
    ) -> None:
        self.spec = spec
        self.metrics = metrics or WorkerMetrics()
        self.stop = stop or threading.Event()
        # What the main thread is busy with, for the watchdog (streams/worker/watchdog.py).
        self.progress = Progress()
        instance = resolve_instance_id(instance_id)
        kafka_client_id = client_id(spec.name, instance, worker_id)
        self._clock = clock
        self._link = BrokerLink(clock=clock)
        self._validator = EventValidator(spec.event)
        self._redis = connect(connections.redis_url, socket_timeout=10)
        self._store: FeatureStore = open_store(spec.features, connections.redis_url, spec.namespace)
        self._models = ModelSwitch.open(
            spec.model, spec.features.names, key=connections.model_secret, clock=clock
        )
        # A registry model may have a candidate in shadow (`streamfer model shadow`).
        self._shadow = (
            ShadowModel(
                spec.model,
                spec.features.names,
                ModelRegistry(spec.model.registry, key=connections.model_secret),
                clock=clock,
            )
            if spec.model.registry is not None
            else None
        )
        self._alerts = AlertSink(
            connections, spec.topics.alerts, f"{spec.name}-{instance}-{worker_id}", link=self._link
        )
        self._adapter = Adapter.open(
            spec.adaptation,
            self._redis,
            spec.namespace,
            spec.features.names,
            self._alerts.send,
            key=connections.snapshot_secret,
            clock=clock,
            examples=self._examples_tail(connections),
            on_fresh=self.metrics.observe_freshness,
        )
        # Lost feature state (Redis restarted empty, a failover dropped writes) is detected
        # by the store's script against these offsets: the batch is not scored.
        self._applied = AppliedOffsets(self._committed_offsets)
        self._state_alarm = StateLossAlarm(
            pipeline=spec.name,
            namespace=spec.namespace,
            send=self._alerts.send,
            gauge=self.metrics.feature_state_lost,
            clock=clock,
        )
        self._scorer = Scorer(
            threshold=spec.model.threshold,
            store=self._store,
            models=self._models,
            adapter=self._adapter,
            log=PredictionLog(
                self._redis, spec.namespace, spec.features.names, spec.prediction_log.horizon
            ),
            clock=clock,
            on_stage=lambda stage, seconds: self.metrics.stage.labels(stage).observe(seconds),
            floors=self._applied.floors,
            shadow=self._shadow,
        )
        eos = (
            exactly_once
            if exactly_once is not None
            else spec.delivery.mode is DeliveryMode.EXACTLY_ONCE
        )
        consumer_config = connections.kafka_config(
            **{
                "group.id": spec.group,
                "client.id": kafka_client_id,
                "enable.auto.commit": not eos,
                "enable.auto.offset.store": False,
                # Stored offsets are committed every second: after a crash at most about a
                # second of acknowledged work is scored again.
                "auto.commit.interval.ms": 1000,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "statistics.interval.ms": 5000,
                "stats_cb": self._on_stats,
                "fetch.min.bytes": 1,
                "queued.min.messages": max(10_000, spec.batching.max_size * 4),
            }
        )
        self._consumer = BatchConsumer(
            consumer_config,
            [spec.topics.events],
            max_size=spec.batching.max_size,
            max_wait_s=spec.batching.max_wait / 1000,
            on_assign=lambda parts: self.metrics.rebalances.labels("assign").inc(),
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
            link=self._link,
        )
        topics = OutputTopics(
            spec.topics.predictions, spec.topics.dead_letter, spec.topics.features
        )
        producer_config = connections.kafka_config(**{"client.id": kafka_client_id})
        self._output: Output
        if eos:
            self._output = TransactionalOutput(
                producer_config,
                transactional_id(spec.group, instance, worker_id),
                self._consumer,
                topics,
                self.metrics,
                link=self._link,
            )
        else:
            self._output = AtLeastOnceOutput(
                producer_config,
                self._consumer,
                topics,
                self.metrics,
                link=self._link,
                progress=self.progress,
            )
        self.stats = RunStats()
        # Overlap (streams/worker/overlap.py): a batch's Redis calls run on a thread of their own.
        self._lane = RedisLane()
        self._open: list[InFlight] = []  # consumed, not yet delivered nor given up
        self._log_pending: LogWrite | None = None  # the log write of the batch produced last
        self._shadow_version: str | None = None
        self._note_model()

    def _examples_tail(self, connections: Connections) -> ExampleSourceFactory | None:
        """Replica serving: the examples log, opened at the checkpoint's offset."""
        topic = self.spec.topics.examples
        if not topic:
            return None
        return lambda offset: ExamplesTail(connections, topic, offset)

    @property
    def model(self) -> Any:
        """The model version scoring the next batch."""
        return self._models.current()

    @property
    def shadow(self) -> Any:
        """The shadow candidate scored beside the next batch, or None."""
        return self._shadow.current() if self._shadow is not None else None

    def _on_stats(self, stats_json: str) -> None:
        self.metrics.on_stats(stats_json)
        self._link.on_stats(stats_json)

    # -- rebalance ---------------------------------------------------------------------
    def _on_revoke(self, partitions: list[Any]) -> None:
        self.metrics.rebalances.labels("revoke").inc()
        with self.progress.busy("revoking partitions"):
            leave(self._open, partitions)
            self._output.on_revoke(partitions)

    def _on_lost(self, partitions: list[Any]) -> None:
        self.metrics.rebalances.labels("lost").inc()
        with self.progress.busy("giving up lost partitions"):
            leave(self._open, partitions)
            self._output.on_lost(partitions)

    def _note_model(self) -> None:
        model = self._models.current()
        self.metrics.set_model(model.name, model.version, model.provider)

    # -- the loop ----------------------------------------------------------------------
    def run(self, *, max_events: int | None = None, idle_exit_s: float | None = None) -> RunStats:
        last_activity = self._clock()
        held: InFlight | None = None  # its features are running on the Redis thread
        try:
            while not self.stop.is_set():
                self._poll_versions()
                if held is not None and held.size < self._consumer.max_size:
                    # Below saturation finish it first, so the next batch takes all that came
                    # meanwhile: overlap made 2× the batches there, each paying the store's
                    # per-call cost (a worse p99 at 50% load). Full batches overlap.
                    with self.progress.busy("a batch was in flight"):
                        held = self._advance(held, None)
                # With a batch in flight take only what is queued: waiting would hold it back.
                batch = self._consumer.poll_batch(wait=held is None)
                # Bad credentials or an unverifiable broker: retrying cannot fix it.
                self._link.raise_if_refused()
                if not batch.messages:
                    if held is not None:
                        with self.progress.busy("a batch was in flight"):
                            held = self._advance(held, None)
                        continue
                    if not self._settle_log():
                        continue  # stopping while Redis is down: that batch replays
                    try:
                        self._output.idle()
                    except BatchAborted as exc:  # its producer replaced: the batch replays
                        self._consume_again(None, None, exc.replay)
                    # Idle time counts only while we own partitions: a worker waiting for
                    # its assignment (e.g. a dead member's session to expire) is not idle.
                    if idle_exit_s is not None:
                        if not self._consumer.assignment():
                            last_activity = self._clock()
                        elif self._clock() - last_activity > idle_exit_s:
                            break
                    continue
                last_activity = self._clock()
                if self.stats.first_consume is None:
                    self.stats.first_consume = last_activity
                with self.progress.busy("a batch was in flight"):
                    following = self._open_batch(batch)
                    held = (
                        self._advance(held, following)
                        if held is not None
                        else self._submit(following)
                    )
                consumed = self.stats.events_in + (held.size if held is not None else 0)
                if max_events is not None and consumed >= max_events:
                    break
            if held is not None:  # stopping: the batch consumed last is finished too
                with self.progress.busy("a batch was in flight"):
                    self._advance(held, None)
                held = None
        finally:
            with self.progress.busy("shutting down"):
                for batch in self._open:  # an error ended the loop: leave them unstored
                    batch.settle()
                self._open.clear()
                self._shutdown()
        return self.stats

    def _poll_versions(self) -> None:
        """Between batches: a new model version or adaptation snapshot (both throttled)."""
        swap = self._models.poll()
        if swap is not None:
            if swap.ok:
                self._note_model()
            else:
                self.metrics.model_swap_failures.inc()
                # A refused model (tampered, unsigned, not the pinned sha256) is an operator's
                # business, like a refused snapshot: it goes to the alerts topic too.
                self._alerts.send(
                    {
                        "kind": "model_rejected",
                        "version": swap.target,
                        "kept_version": swap.previous,
                        "reason": swap.error,
                        "time_ms": int(time.time() * 1000),
                    }
                )
        if self._shadow is not None:
            self._shadow.poll()
            shadow = self._shadow.current()
            version = shadow.version if shadow is not None else None
            if version != self._shadow_version:
                self._shadow_version = version
                self.metrics.set_shadow(self.spec.model.name, version)
        adapted = self._adapter.poll()
        if adapted is not None:
            if adapted.ok:
                self.metrics.set_adaptation(adapted.version, self.spec.adaptation.mode)
            else:
                self.metrics.snapshot_rejections.inc()

    def _open_batch(self, batch: MessageBatch) -> InFlight:
        """Decode a consumed batch (the worker's thread) and count it as in flight."""
        self.metrics.batch_size.observe(len(batch.messages))
        self.metrics.batch_wait.observe(batch.wait_s)
        started = time.perf_counter()
        decoded = decode_batch(
            batch.messages,
            self._validator,
            max_bytes=self.spec.event.max_bytes,
            now_ms=int(self._clock() * 1000),
        )
        self.metrics.stage.labels("decode").observe(time.perf_counter() - started)
        opened = InFlight(batch, decoded)
        self._open.append(opened)
        return opened

    def _submit(self, batch: InFlight) -> InFlight:
        """Start the batch's store call on the Redis thread (floors taken here)."""
        decoded = batch.decoded = batch.owned_events()
        request = self._scorer.feature_batch(decoded)
        batch.features = self._lane.features(lambda: self._scorer.features(decoded, request))
        return batch

    def _close(self, *batches: InFlight | None) -> None:
        """The batches are delivered or given up: no longer in flight."""
        for batch in batches:
            if batch is not None:
                batch.settle()
                if batch in self._open:
                    self._open.remove(batch)

    def _advance(self, held: InFlight, following: InFlight | None) -> InFlight | None:
        """Finish `held`, starting `following`'s features once `held`'s are applied; returns
        `following` in flight, or None with it given up (consumed again): stopping while a
        dependency is down, or `held`'s transaction aborted (both rewound)."""
        featurized = self._features_of(held)
        if featurized is None:  # stopping while a dependency is down: both replay
            self._close(held, following)
            return None
        if following is not None:
            self._submit(following)
        revoked = frozenset(held.revoked)
        result = self._retrying(lambda: self._scorer.score(held.owned(featurized)))
        # The batch produced before must be durable before this send stores its offsets.
        if result is None or not self._settle_log():
            self._close(held, following)
            return None
        if held.revoked != revoked:  # partitions went meanwhile: the result holds theirs
            self._consume_again(held, following)
            return None
        writing = self._lane.log(lambda: self._scorer.write_log(result), result)
        out = self._encode(held.owned_batch(), result)
        out.durable = writing.durable
        started = time.perf_counter()
        try:
            self._output.send(out)
        except BatchAborted as exc:
            self.stats.aborted_batches += 1
            log.warning("batch aborted (%s): consuming it again", exc)
            writing.durable(IN_FLIGHT_TIMEOUT_S)  # the batch's retry rewrites it anyway
            self._consume_again(held, following, exc.replay)
            return None
        self._log_pending = writing
        self.metrics.stage.labels("produce").observe(time.perf_counter() - started)
        self._applied.delivered(result.events.sources)
        self._count(held.batch, result)
        self._close(held)
        return following

    def _consume_again(
        self, held: InFlight | None, following: InFlight | None, sent: MessageBatch | None = None
    ) -> None:
        """Give both up and seek back to them, and to `sent` (produced before, unconfirmed):
        oldest last. Not partitions revoked since, even if assigned back: they restart from
        the committed offset, and a seek to the batch would skip the events before it."""
        self._close(held, following)
        for batch in (following, held):
            if batch is not None:
                self._consumer.rewind(batch.batch, self._consumer.assignment() - batch.revoked)
        if sent is not None:
            self._consumer.rewind(sent, self._consumer.assignment())

    def _features_of(self, held: InFlight) -> Featurized | None:
        """The batch's features from the Redis thread; after a failure, retried here."""
        future = held.features

        def attempt() -> Featurized:
            nonlocal future
            if future is not None:
                running, future = future, None
                return running.result()
            decoded = held.owned_events()
            return self._scorer.features(decoded, self._scorer.feature_batch(decoded))

        started = time.perf_counter()
        featurized = self._retrying(attempt)
        self.metrics.stage.labels("features_wait").observe(time.perf_counter() - started)
        if featurized is None:
            return None
        self._state_alarm.cleared()
        return held.owned(featurized)

    def _settle_log(self) -> bool:
        """The prediction log of the batch produced last is durable before the next
        delivery step stores its offsets; a failed write is retried. False: stopping."""
        writing, self._log_pending = self._log_pending, None
        if writing is None or writing.durable(None):
            return True

        def attempt() -> bool:
            self._scorer.write_log(writing.result)
            return True

        if self._retrying(attempt) is None:
            return False
        writing.written()
        return True

    def _committed_offsets(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The group's committed offsets (absent: none), for `AppliedOffsets`; bounded."""
        from confluent_kafka import TopicPartition

        asked = [TopicPartition(topic, p) for topic, p in partitions]
        found = self._consumer.raw.committed(asked, timeout=5)
        return {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}

    def _retrying(self, attempt: Callable[[], T]) -> T | None:
        """`attempt()`, retried with backoff while a dependency is down (consumption paused,
        rebalances served); None if the worker is stopped meanwhile."""
        delay_ms = self.spec.retry.initial
        paused = False
        try:
            while True:
                try:
                    return attempt()
                except StateLost as exc:
                    # Nothing was applied or scored; retried until a rebuild re-arms the state.
                    self._state_alarm.raised(exc)
                except _TRANSIENT_REDIS as exc:
                    self.metrics.redis_errors.inc()
                    log.warning("redis unavailable (%s); paused, retrying in %d ms", exc, delay_ms)
                except RuntimeError as exc:
                    self.metrics.model_errors.inc()
                    log.warning("inference failed (%s); paused, retrying in %d ms", exc, delay_ms)
                if self.stop.is_set():
                    return None
                if not paused:
                    self._consumer.pause_all()
                    self.metrics.paused.set(1)
                    self.progress.pause()
                    paused = True
                self._consumer.serve_while_paused(delay_ms / 1000)
                # Events of partitions revoked meanwhile are left out by the attempt (InFlight).
                delay_ms = min(delay_ms * 2, self.spec.retry.max)
        finally:
            if paused:
                self._consumer.resume_all()
                self.metrics.paused.set(0)
                self.progress.resume()

    def _encode(self, batch: MessageBatch, result: ScoredBatch) -> OutputBatch:
        started = time.perf_counter()
        events, scored = result.events, result.scored
        keys = events.keys.tolist()
        predictions = list(zip(keys, encode_predictions(events, scored), strict=True))
        feature_records = (
            list(
                zip(
                    keys,
                    encode_feature_records(events, scored, self.spec.features.names),
                    strict=True,
                )
            )
            if self.spec.topics.features
            else []
        )
        self.metrics.stage.labels("encode").observe(time.perf_counter() - started)
        dead_letters = events.dead_letters
        if not self.spec.dead_letters.payload:
            dead_letters = [withheld(dead) for dead in dead_letters]
        return OutputBatch(
            source=batch,
            predictions=predictions,
            dead_letters=dead_letters,
            feature_records=feature_records,
        )

    def _count(self, batch: MessageBatch, result: ScoredBatch) -> None:
        events, scored = result.events, result.scored
        n = len(events)
        s = self.stats
        s.events_in += len(batch.messages)
        s.predictions += n
        s.dead_letters += len(events.dead_letters)
        late, replayed = int(scored.late.sum()), int(scored.replayed.sum())
        s.late += late
        s.replayed += replayed
        s.batches += 1
        s.last_done = self._clock()
        s.model_versions.add(scored.model_version)
        m = self.metrics
        m.events_in.inc(len(batch.messages))
        for dead in events.dead_letters:
            m.dead_letters.labels(dead.reason).inc()
        if late:
            m.late_events.inc(late)
        if replayed:
            m.replayed_events.inc(replayed)
        if n:
            median_ms = float(np.median(events.event_time_ms))
            m.end_to_end.observe(max(0.0, scored.scored_at_ms - median_ms) / 1000)

    def _shutdown(self) -> None:
        """Finish what is in flight, leave the group (its close commits), release the rest.

        Every step is bounded: the drain waits `DRAIN_TIMEOUT_S` at most for the broker,
        the consumer's close about a session timeout, the producers' flushes their timeout.
        """
        try:
            self._output.drain()
        finally:
            try:
                self._consumer.close()
            finally:
                self._output.close()
                self._lane.close()
                self._store.close()
                self._models.close()
                self._adapter.close()
                if self._shadow is not None:
                    self._shadow.close()
                self._alerts.close()
                self._redis.close()
                self.stats.last_done = self.stats.last_done or self._clock()
