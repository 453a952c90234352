"""The wiring: the one place that joins Kafka, Redis and the model to the pure core.

    consume batch ─► decode+validate ─► features (1 Redis call) ─► ONNX (1 run)
      ─► prediction log (1 pipelined Redis call) ─► encode ─► produce + offsets

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
from typing import Any

import numpy as np
import redis

from features.backends import open_store
from features.store import FeatureBatch, FeatureResult, FeatureStore
from inference.adaptation import Adapter
from inference.registry import ModelSwitch
from streams.events.codec import (
    DecodedBatch,
    Scored,
    decode_batch,
    encode_feature_records,
    encode_predictions,
)
from streams.events.dead_letters import Reason
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
from streams.worker.metrics import WorkerMetrics
from streams.worker.prediction_log import PredictionLog

log = logging.getLogger(__name__)

# Failures of a dependency that are worth waiting out: Redis down or busy, a model run
# failing (onnxruntime raises RuntimeError subclasses), e.g. a GPU out of memory.
_TRANSIENT_REDIS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


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
    ) -> None:
        self.spec = spec
        self.metrics = metrics or WorkerMetrics()
        self.stop = stop or threading.Event()
        self._clock = clock
        self._validator = EventValidator(spec.event)
        self._redis = redis.Redis.from_url(connections.redis_url, socket_timeout=10)
        self._store: FeatureStore = open_store(spec.features, connections.redis_url, spec.namespace)
        self._models = ModelSwitch.open(spec.model, spec.features.names)
        self._log = PredictionLog(
            self._redis, spec.namespace, spec.features.names, spec.prediction_log.horizon
        )
        self._alerts = AlertSink(connections, spec.topics.alerts, f"{spec.name}-{worker_id}")
        self._adapter = Adapter.open(
            spec.adaptation, self._redis, spec.namespace, spec.features.names, self._alerts.send
        )
        eos = (
            exactly_once
            if exactly_once is not None
            else spec.delivery.mode is DeliveryMode.EXACTLY_ONCE
        )
        consumer_config = connections.kafka_config(
            **{
                "group.id": spec.group,
                "client.id": f"streamfer-{spec.name}-{worker_id}",
                "enable.auto.commit": not eos,
                "enable.auto.offset.store": False,
                # Stored offsets are committed every second: after a crash at most about a
                # second of acknowledged work is scored again.
                "auto.commit.interval.ms": 1000,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "statistics.interval.ms": 5000,
                "stats_cb": self.metrics.on_stats,
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
        )
        topics = OutputTopics(
            spec.topics.predictions, spec.topics.dead_letter, spec.topics.features
        )
        producer_config = connections.kafka_config(
            **{"client.id": f"streamfer-{spec.name}-{worker_id}"}
        )
        self._output: Output
        if eos:
            self._output = TransactionalOutput(
                producer_config,
                f"streamfer-{spec.group}-{worker_id}",
                self._consumer,
                topics,
                self.metrics,
            )
        else:
            self._output = AtLeastOnceOutput(producer_config, self._consumer, topics, self.metrics)
        self.stats = RunStats()
        self._note_model()

    @property
    def model(self) -> Any:
        """The model version scoring the next batch."""
        return self._models.current()

    # -- rebalance ---------------------------------------------------------------------
    def _on_revoke(self, partitions: list[Any]) -> None:
        self.metrics.rebalances.labels("revoke").inc()
        self._output.on_revoke(partitions)

    def _on_lost(self, partitions: list[Any]) -> None:
        self.metrics.rebalances.labels("lost").inc()
        self._output.on_lost(partitions)

    def _note_model(self) -> None:
        model = self._models.current()
        self.metrics.set_model(model.name, model.version, model.provider)

    # -- the loop ----------------------------------------------------------------------
    def run(self, *, max_events: int | None = None, idle_exit_s: float | None = None) -> RunStats:
        last_activity = time.monotonic()
        try:
            while not self.stop.is_set():
                swap = self._models.poll()
                if swap is not None:
                    if swap.ok:
                        self._note_model()
                    else:
                        self.metrics.model_swap_failures.inc()
                adapted = self._adapter.poll()
                if adapted is not None:
                    if adapted.ok:
                        self.metrics.set_adaptation(adapted.version, self.spec.adaptation.mode)
                    else:
                        self.metrics.snapshot_rejections.inc()
                batch = self._consumer.poll_batch()
                if not batch.messages:
                    self._output.idle()
                    # Idle time counts only while we own partitions: a worker waiting for
                    # its assignment (e.g. a dead member's session to expire) is not idle.
                    if idle_exit_s is not None:
                        if not self._consumer.assignment():
                            last_activity = time.monotonic()
                        elif time.monotonic() - last_activity > idle_exit_s:
                            break
                    continue
                last_activity = time.monotonic()
                if self.stats.first_consume is None:
                    self.stats.first_consume = time.time()
                self._handle(batch)
                if max_events is not None and self.stats.events_in >= max_events:
                    break
        finally:
            self._shutdown()
        return self.stats

    def _handle(self, batch: MessageBatch) -> None:
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
        result = self._score_with_backpressure(decoded)
        if result is None:  # stopping while a dependency was down: let the batch replay
            return
        scored, decoded = result
        out = self._encode(batch, decoded, scored)
        started = time.perf_counter()
        try:
            self._output.send(out)
        except BatchAborted as exc:
            self.stats.aborted_batches += 1
            log.warning("batch aborted (%s): consuming it again", exc)
            self._consumer.rewind(batch, self._consumer.assignment())
            return
        self.metrics.stage.labels("produce").observe(time.perf_counter() - started)
        self._count(batch, decoded, scored)

    def _score_with_backpressure(self, decoded: DecodedBatch) -> tuple[Scored, DecodedBatch] | None:
        delay_ms = self.spec.retry.initial
        paused = False
        try:
            while True:
                try:
                    return self._score(decoded)
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
                    paused = True
                self._consumer.serve_while_paused(delay_ms / 1000)
                delay_ms = min(delay_ms * 2, self.spec.retry.max)
                decoded = self._only_owned(decoded)
        finally:
            if paused:
                self._consumer.resume_all()
                self.metrics.paused.set(0)

    def _only_owned(self, decoded: DecodedBatch) -> DecodedBatch:
        """Drop events of partitions revoked while we waited: their new owner scores them."""
        owned = self._consumer.assignment()
        gone = {i for i, (t, p, _o) in enumerate(decoded.sources) if (t, p) not in owned}
        return decoded.without(gone) if gone else decoded

    def _score(self, decoded: DecodedBatch) -> tuple[Scored, DecodedBatch]:
        """Features, model, prediction log; returns the batch without poison events."""
        if not decoded.records:
            return _empty_scored(self._models.current()), decoded
        started = time.perf_counter()
        try:
            features = self._store.update_and_read(
                FeatureBatch(decoded.records, decoded.event_time_ms, decoded.sources)
            )
        except redis.ResponseError as exc:
            log.warning("feature computation failed for the batch (%s); isolating events", exc)
            features, decoded = isolate_poison(self._store, decoded)
            if not decoded.records:
                return _empty_scored(self._models.current()), decoded
        features_done = time.perf_counter()
        self.metrics.stage.labels("features").observe(features_done - started)
        model = self._models.current()  # one version scores the whole batch
        onnx_scores = model.predict(features.values)
        self.metrics.stage.labels("inference").observe(time.perf_counter() - features_done)
        adapted = self._adapter.score(features.values, onnx_scores)
        final, river = adapted.final, adapted.river
        unscorable = ~np.isfinite(final)
        if unscorable.any():
            # A NaN score would be published as null: dead-letter those events instead. Their
            # features stay applied, as for every event the store has seen.
            bad = np.flatnonzero(unscorable)
            log.warning("%d events got a non-finite score; dead-lettered", bad.size)
            decoded = dead_letter_unscorable(decoded, bad, final, onnx_scores)
            keep = ~unscorable
            features = FeatureResult(
                features.values[keep], features.late[keep], features.replayed[keep]
            )
            onnx_scores, final = onnx_scores[keep], final[keep]
            river = None if river is None else river[keep]
        scored_at_ms = int(self._clock() * 1000)
        started = time.perf_counter()
        id_field = self.spec.event.id
        self._log.write(
            [str(r[id_field]) for r in decoded.records],
            features.values,
            {"onnx": onnx_scores, "final": final}
            if river is None
            else {"onnx": onnx_scores, "river": river, "final": final},
            model.version,
            adapted.version,
            decoded.event_time_ms,
        )
        self.metrics.stage.labels("prediction_log").observe(time.perf_counter() - started)
        scored = Scored(
            features=features.values,
            scores=final,
            onnx_scores=onnx_scores,
            river_scores=river,
            decisions=final >= self.spec.model.threshold,
            late=features.late,
            replayed=features.replayed,
            model_name=model.name,
            model_version=model.version,
            adaptation_version=adapted.version,
            scored_at_ms=scored_at_ms,
        )
        return scored, decoded

    def _encode(self, batch: MessageBatch, decoded: DecodedBatch, scored: Scored) -> OutputBatch:
        started = time.perf_counter()
        values = encode_predictions(
            decoded, scored, id_field=self.spec.event.id, entities=self.spec.event.entities
        )
        key_field = self.spec.event.key
        keys = [str(r[key_field]).encode() for r in decoded.records] if key_field else decoded.keys
        feature_records = (
            list(
                zip(
                    keys,
                    encode_feature_records(
                        decoded, scored, self.spec.features.names, self.spec.event.id
                    ),
                    strict=True,
                )
            )
            if self.spec.topics.features
            else []
        )
        self.metrics.stage.labels("encode").observe(time.perf_counter() - started)
        return OutputBatch(
            source=batch,
            predictions=list(zip(keys, values, strict=True)),
            dead_letters=decoded.dead_letters,
            feature_records=feature_records,
        )

    def _count(self, batch: MessageBatch, decoded: DecodedBatch, scored: Scored) -> None:
        n = len(decoded.records)
        s = self.stats
        s.events_in += len(batch.messages)
        s.predictions += n
        s.dead_letters += len(decoded.dead_letters)
        s.late += int(scored.late.sum())
        s.replayed += int(scored.replayed.sum())
        s.batches += 1
        s.last_done = time.time()
        s.model_versions.add(scored.model_version)
        m = self.metrics
        m.events_in.inc(len(batch.messages))
        for dead in decoded.dead_letters:
            m.dead_letters.labels(dead.reason).inc()
        if scored.late.any():
            m.late_events.inc(int(scored.late.sum()))
        if scored.replayed.any():
            m.replayed_events.inc(int(scored.replayed.sum()))
        if n:
            median_ms = float(np.median(decoded.event_time_ms))
            m.end_to_end.observe(max(0.0, scored.scored_at_ms - median_ms) / 1000)

    def _shutdown(self) -> None:
        """Finish what is in flight, commit, leave the group."""
        try:
            self._output.drain()
        finally:
            self._consumer.close()
            self._output.close()
            self._store.close()
            self._models.close()
            self._alerts.close()
            self.stats.last_done = self.stats.last_done or time.time()


def dead_letter_unscorable(
    decoded: DecodedBatch, positions: np.ndarray, final: np.ndarray, onnx: np.ndarray
) -> DecodedBatch:
    """The batch without the events at `positions`, which become `score_not_finite` dead
    letters (raw value and key, as for every dead letter)."""
    dead = list(decoded.dead_letters)
    for i in positions.tolist():
        message = (
            f"the score is {final[i]} (ONNX model output {onnx[i]}): the model or the "
            "adaptation model gave no finite score for this event's features"
        )
        dead.append(decoded.dead_letter(i, Reason.SCORE_NOT_FINITE, message))
    kept = decoded.without(set(positions.tolist()))
    kept.dead_letters = dead
    return kept


def isolate_poison(
    store: FeatureStore, decoded: DecodedBatch
) -> tuple[FeatureResult, DecodedBatch]:
    """A script error is about the data: score events one by one, dead-letter the bad ones.

    Events the failed call had already applied are replays now (their offsets were
    recorded), so answering them again returns their recorded values and changes nothing
    twice. Returns the features of the good events and the batch without the bad ones.
    """
    rows: list[FeatureResult] = []
    bad: set[int] = set()
    dead = list(decoded.dead_letters)
    for i, record in enumerate(decoded.records):
        try:
            rows.append(
                store.update_and_read(
                    FeatureBatch([record], [decoded.event_time_ms[i]], [decoded.sources[i]])
                )
            )
        except redis.ResponseError as exc:
            bad.add(i)
            dead.append(decoded.dead_letter(i, Reason.FEATURE_ERROR, str(exc)))
    kept = decoded.without(bad)
    kept.dead_letters = dead
    if not rows:
        empty = np.empty(0, dtype=bool)
        return FeatureResult(np.empty((0, len(store.names))), empty, empty), kept
    return (
        FeatureResult(
            values=np.vstack([r.values for r in rows]),
            late=np.concatenate([r.late for r in rows]),
            replayed=np.concatenate([r.replayed for r in rows]),
        ),
        kept,
    )


def _empty_scored(model: Any) -> Scored:
    empty = np.empty(0)
    return Scored(
        np.empty((0, 0)),
        empty,
        empty,
        None,
        empty.astype(bool),
        empty.astype(bool),
        empty.astype(bool),
        model.name,
        model.version,
        None,
        int(time.time() * 1000),
    )
