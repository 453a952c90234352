"""How a scored batch leaves the worker: at-least-once or exactly-once.

Both strategies produce the batch's predictions, dead letters (and optional feature
records) and decide when its source offsets count as done:

* `AtLeastOnceOutput`: offsets are stored only after the broker acknowledged everything
  the batch produced. The wait for those acks is overlapped with the next batch: batch N
  is produced, batch N+1 is consumed and scored, then `flush()` confirms N (usually
  already acknowledged) and N's offsets are stored before N+1 is produced.
* `TransactionalOutput`: one Kafka transaction per batch, with the consumer offsets sent
  inside it (`send_offsets_to_transaction`), so a read_committed reader sees each
  prediction exactly once. A batch whose transaction aborts raises `BatchAborted`; the
  pipeline rewinds and scores it again (the feature store answers replays from records,
  so state is not double-counted).

A batch may carry a `durable` gate: what else must be durable before its offsets count
(the worker's prediction-log write, which runs on a thread while the batch is produced).
Offsets are stored, or sent in the transaction, only once the gate says yes; a gate that
says no leaves the batch unstored (at-least-once: consumed again) or aborts its
transaction.

Outputs see the consumer only through `SourceOffsets` (store, commit, group metadata), which
`BatchConsumer` implements. On the revoke and shutdown paths every wait has a bound: what
the broker has not acknowledged by then is not marked done, so it is consumed again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from streams.events.dead_letters import DeadLetter, dead_letter_headers
from streams.worker.bounded_call import CallTimedOut, call_within
from streams.worker.consumer import MessageBatch
from streams.worker.kafka_log import BrokerLink, producer_settings
from streams.worker.metrics import WorkerMetrics
from streams.worker.watchdog import Progress

log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """The broker refused records for good; offsets were not stored, so they replay."""


class BatchAborted(Exception):
    """The batch's transaction was aborted, or its producer replaced; consume it again.

    `replay`: an earlier batch to consume again as well (the one whose records a replaced
    producer still held), or None.
    """

    def __init__(self, reason: str, replay: MessageBatch | None = None) -> None:
        super().__init__(reason)
        self.replay = replay


@dataclass(slots=True)
class OutputBatch:
    source: MessageBatch
    predictions: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    feature_records: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    durable: Callable[[float | None], bool] | None = None
    """Called with a timeout (None: no bound) before the offsets count: True once the
    batch's other writes are durable; None: nothing else to wait for."""


def _durable(batch: OutputBatch, timeout_s: float | None) -> bool:
    return batch.durable is None or batch.durable(timeout_s)


@dataclass(frozen=True)
class OutputTopics:
    predictions: str
    dead_letter: str
    features: str | None = None


class SourceOffsets(Protocol):
    """What an output needs of the consumer it reads from (`BatchConsumer` is one)."""

    def store_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        """Mark offsets done; the next commit (or the consumer's close) commits them."""
        ...

    def commit(self) -> None:
        """Commit the stored offsets now (without waiting for the broker's answer)."""
        ...

    def group_metadata(self) -> Any:
        """The consumer group's metadata, for `send_offsets_to_transaction`."""
        ...

    def broker_answers(self, timeout_s: float) -> bool:
        """A broker answered a metadata request within `timeout_s` (the consumer's own
        connections: a check that does not go through the producer it judges)."""
        ...


# How long the revoke and shutdown paths wait for the broker to acknowledge a batch.
DRAIN_TIMEOUT_S = 30.0
# How long past its own timeout a transactional call may take before its producer is given
# up as stuck (librdkafka#5456: `send_offsets_to_transaction` can ignore its timeout).
STUCK_GRACE_S = 5.0
SEND_OFFSETS_BOUND_S = 10.0
# How long records may go unacknowledged, none of them acknowledged meanwhile, while a
# broker answers, before the producer is taken for stuck and replaced. Longer than
# librdkafka's own recovery of a request whose connection died (request.timeout.ms 30 s,
# then a retry); a broker that does not answer is an outage, waited out however long.
STUCK_ACKS_S = 60.0


class Output(Protocol):
    def send(self, batch: OutputBatch) -> None: ...
    def idle(self) -> None: ...
    def drain(self) -> None: ...
    def on_revoke(self, partitions: list[TopicPartition]) -> None: ...
    def on_lost(self, partitions: list[TopicPartition]) -> None: ...
    def close(self) -> None: ...


_PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger.ms": 5,
    "batch.num.messages": 10000,
    "compression.type": "lz4",
    "acks": "all",
    "enable.idempotence": True,
    "queue.buffering.max.messages": 500_000,
    # Only failures call back into Python: no per-message work for the happy path.
    "delivery.report.only.error": True,
}


def _produce_all(producer: Producer, topics: OutputTopics, batch: OutputBatch) -> None:
    produce = producer.produce
    topic = topics.predictions
    for key, value in batch.predictions:
        while True:
            try:
                produce(topic, value, key)
                break
            except BufferError:  # local queue full: let librdkafka send, then go on
                producer.poll(0.05)
    for dead in batch.dead_letters:
        producer.produce(
            topics.dead_letter, dead.value, dead.key, headers=dead_letter_headers(dead)
        )
    if topics.features:
        for key, value in batch.feature_records:
            producer.produce(topics.features, value, key)
    producer.poll(0)


def _producer_config(
    producer_config: dict[str, Any], link: BrokerLink | None, **settings: Any
) -> dict[str, Any]:
    config = producer_settings({**_PRODUCER_DEFAULTS, **producer_config, **settings})
    return link.client_config(config) if link is not None else config


class AckWatch:
    """Whether a producer waited on is stuck: its records unacknowledged, none of them
    acknowledged for `stuck_s`, counted from when a broker was seen answering (a producer
    that lived through an outage gets its reconnect's time; a stall in librdkafka, or a
    partition refusing writes, does not end by waiting). While no broker answers it is an
    outage: never stuck."""

    def __init__(
        self, stuck_s: float, unacked: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stuck_s = stuck_s
        self._unacked = unacked
        self._clock = clock
        self._since: float | None = None  # nothing acknowledged since, a broker answering

    def stuck(self, left: int, broker_answers: Callable[[float], bool]) -> bool:
        """After each wait: `left` records still unacknowledged."""
        if left < self._unacked:  # progress
            self._unacked, self._since = left, None
            return False
        now = self._clock()
        if self._since is None:
            if broker_answers(5.0):
                self._since = now
            return False
        return now - self._since >= self._stuck_s and broker_answers(5.0)


class AtLeastOnceOutput:
    def __init__(
        self,
        producer_config: dict[str, Any],
        consumer: SourceOffsets,
        topics: OutputTopics,
        metrics: WorkerMetrics,
        *,
        link: BrokerLink | None = None,
        drain_timeout_s: float = DRAIN_TIMEOUT_S,
        progress: Progress | None = None,
        stuck_acks_s: float = STUCK_ACKS_S,
    ) -> None:
        self._failures: list[str] = []
        self._config = _producer_config(producer_config, link, on_delivery=self._on_delivery_error)
        self._producer = Producer(self._config)
        self._stuck_acks_s = stuck_acks_s
        self._drain_timeout_s = drain_timeout_s
        self._consumer = consumer
        self._topics = topics
        self._metrics = metrics
        self._pending: OutputBatch | None = None
        self._progress = progress

    def _on_delivery_error(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()}: {err}")

    def _confirm_pending(self, timeout_s: float | None = None) -> None:
        """Wait for the broker's acks of the batch in flight, then store its offsets.

        Between batches the wait is as long as the broker needs (that is backpressure);
        with `timeout_s` (revoke, shutdown) a batch still unacknowledged then is left
        unstored: it is consumed again, by us or the partition's next owner.
        """
        pending, self._pending = self._pending, None
        if pending is None:
            return
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        waiting = False  # for an unreachable broker: a known outage, not a stall
        watch = AckWatch(self._stuck_acks_s, len(self._producer))
        try:
            while (left := self._producer.flush(10.0 if deadline is None else 1.0)) > 0:
                if deadline is None and watch.stuck(left, self._consumer.broker_answers):
                    self._replace(pending, left)
                if deadline is not None and time.monotonic() >= deadline:
                    log.warning(
                        "%d records not acknowledged after %.0f s; "
                        "their events will be consumed again",
                        len(self._producer),
                        timeout_s,
                    )
                    return
                if deadline is None:
                    log.warning(
                        "waiting for the broker to acknowledge %d records", len(self._producer)
                    )
                    if not waiting and self._progress is not None:
                        self._progress.pause()
                        waiting = True
        finally:
            if waiting and self._progress is not None:
                self._progress.resume()
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryFailed(f"{len(failures)} records not delivered, e.g. {failures[0]}")
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not _durable(pending, left):
            log.warning(
                "the batch's prediction log is not written: its events will be consumed again"
            )
            return
        self._consumer.store_offsets(pending.source.next_offsets())
        self._metrics.predictions_out.inc(len(pending.predictions))

    def _replace(self, pending: OutputBatch, left: int) -> None:
        """The producer is stuck (`AckWatch`): a fresh one replaces it, and the batch it
        held is consumed again (raises `BatchAborted`)."""
        log.error(
            "%d records unacknowledged for %.0f s while the broker answers: replacing the "
            "producer; their events will be consumed again",
            left,
            self._stuck_acks_s,
        )
        stuck, self._producer = self._producer, Producer(self._config)
        # Their delivery reports ("purged") are not failures of the batches to come.
        stuck.purge()
        stuck.flush(1.0)
        self._failures.clear()
        self._metrics.producers_replaced.inc()
        raise BatchAborted(
            f"producer replaced with {left} records unacknowledged", replay=pending.source
        )

    def send(self, batch: OutputBatch) -> None:
        self._confirm_pending()
        _produce_all(self._producer, self._topics, batch)
        self._pending = batch

    def idle(self) -> None:
        """No new batch came: confirm the last one now, so its offsets don't wait for one."""
        self._confirm_pending()

    def drain(self) -> None:
        """Confirm what is in flight (bounded) and commit the stored offsets."""
        self._confirm_pending(self._drain_timeout_s)
        self._consumer.commit()

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        # The partitions are still ours here: finish their batch and commit it, so the
        # next owner starts exactly after it.
        self.drain()

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        # Ownership is already gone: offsets can't be committed; the new owner replays.
        self._producer.flush(10.0)
        self._pending = None

    def close(self) -> None:
        self._producer.flush(30.0)


class TransactionalOutput:
    def __init__(
        self,
        producer_config: dict[str, Any],
        transactional_id: str,
        consumer: SourceOffsets,
        topics: OutputTopics,
        metrics: WorkerMetrics,
        *,
        timeout_s: float = 30.0,
        link: BrokerLink | None = None,
    ) -> None:
        self._config = _producer_config(
            producer_config,
            link,
            **{"transactional.id": transactional_id, "delivery.report.only.error": True},
        )
        self._consumer = consumer
        self._topics = topics
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._in_transaction = False
        self._stuck: list[Producer] = []  # given up after a transactional call never returned
        self._link = link
        self._outages_seen = link.outages if link is not None else 0
        self._uninitialised = False  # a replacement whose init_transactions must be resumed
        self._producer = self._new_producer()

    def _new_producer(self) -> Producer:
        producer = Producer(self._config)
        # Fences any zombie with the same transactional.id and aborts its open transaction.
        producer.init_transactions(self._timeout_s)
        return producer

    def send(self, batch: OutputBatch) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in batch.source.next_offsets().items()]
        self._renew_after_outage()
        if not self._resume_init():
            raise BatchAborted("no transactional producer yet (the broker is away)")
        try:
            self._producer.begin_transaction()
            self._in_transaction = True
            _produce_all(self._producer, self._topics, batch)
            if not _durable(batch, self._timeout_s):
                self._producer.abort_transaction(self._timeout_s)
                self._in_transaction = False
                raise BatchAborted("the batch's prediction log is not written")
            self._send_offsets(offsets)
            self._commit()
        except KafkaException as exc:
            self._recover(exc.args[0])
            raise BatchAborted(str(exc.args[0])) from None
        except CallTimedOut as exc:
            self._replace_stuck_producer(exc)
            raise BatchAborted(str(exc)) from None
        self._metrics.predictions_out.inc(len(batch.predictions))

    def _renew_after_outage(self) -> None:
        """After a broker outage, a fresh producer for the first transaction.

        The producer that lived through the outage keeps a coordinator lookup that can wait
        for good (librdkafka#5456): its first `send_offsets_to_transaction` after the broker's
        return stalled in 2 runs of 2 here. A fresh one looks the coordinators up anew; between
        batches no transaction is open, so the old one is only flushed and dropped.
        """
        if self._link is None or self._link.outages == self._outages_seen or self._link.down:
            return
        log.info("broker back after an outage: starting a fresh transactional producer")
        try:
            fresh = self._new_producer()
        except KafkaException as exc:  # e.g. the coordinator still loading: next batch
            log.warning("no fresh transactional producer yet (%s); keeping the old one", exc)
            return
        self._outages_seen = self._link.outages
        old, self._producer = self._producer, fresh
        self._uninitialised = False  # `fresh` is initialised, whatever the one it replaces
        old.flush(STUCK_GRACE_S)

    def _send_offsets(self, offsets: list[TopicPartition]) -> None:
        """`send_offsets_to_transaction`, bounded here: librdkafka's own timeout can fail.

        It is one round trip to the group coordinator: `SEND_OFFSETS_BOUND_S` is far more
        than a healthy call takes, and a batch given up costs a replay, never correctness.
        """
        producer, timeout_s = self._producer, min(self._timeout_s, SEND_OFFSETS_BOUND_S)
        metadata = self._consumer.group_metadata()
        call_within(
            lambda: producer.send_offsets_to_transaction(offsets, metadata, timeout_s),
            timeout_s + STUCK_GRACE_S,
            "send_offsets_to_transaction",
        )

    def _replace_stuck_producer(self, exc: CallTimedOut) -> None:
        """Give up a producer stuck in a transactional call, and start a fresh one.

        No call can abort its transaction (librdkafka runs one transactional call at a time),
        but the new producer's `init_transactions` with the same transactional.id fences the
        stuck one and aborts its open transaction, so nothing of the batch is committed. The
        stuck producer is kept referenced by its thread, never destroyed from here (that
        would block too).
        """
        log.warning("%s; replacing the producer and scoring the batch again", exc)
        self._stuck.append(self._producer)
        self._in_transaction = False
        self._producer = Producer(self._config)
        self._uninitialised = True
        self._resume_init()

    def _resume_init(self) -> bool:
        """Finish the replacement producer's `init_transactions`; False while it can't.

        The call stalls when the broker is away (why the old producer was given up, often),
        and its timeout is retriable: librdkafka resumes it when it is called again. So
        it is retried at the next batch instead of killing the worker (tests/chaos found
        workers exiting here during a broker outage).
        """
        if not self._uninitialised:
            return True
        try:
            self._producer.init_transactions(self._timeout_s)
        except KafkaException as exc:
            if not exc.args[0].retriable():
                raise
            log.warning("the fresh transactional producer is not ready yet (%s)", exc.args[0])
            return False
        self._uninitialised = False
        return True

    def _commit(self) -> None:
        deadline = time.monotonic() + self._timeout_s * 4
        while True:
            try:
                self._producer.commit_transaction(self._timeout_s)
                self._in_transaction = False
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.retriable() and time.monotonic() < deadline:
                    continue
                raise

    def _recover(self, err: KafkaError) -> None:
        if err.code() == KafkaError._FENCED:
            # A newer producer took our transactional.id: another process runs this worker
            # slot with the same instance id (two supervisors on one host, say).
            log.error(
                "transactional id %s is in use by another process: give each supervisor "
                "its own --instance-id (or STREAMFER_INSTANCE_ID)",
                self._config["transactional.id"],
            )
        log.warning("transaction failed (%s); aborting the batch", err)
        if err.fatal():
            self._producer = self._new_producer()
        else:
            try:
                self._producer.abort_transaction(self._timeout_s)
            except KafkaException as abort_exc:
                log.warning("abort failed (%s); recreating the producer", abort_exc)
                self._producer = self._new_producer()
        self._in_transaction = False

    def idle(self) -> None:
        """Each batch commits inside send(); nothing waits for the next one."""

    def drain(self) -> None:
        """Each batch commits inside send(); nothing is left in flight between batches."""

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        # Rebalance callbacks run inside consume(), and send() always ends its transaction
        # before the next consume(), so a transaction is open here only if send() died
        # half-way; it can't be committed without the batch, so abort it.
        if self._in_transaction:
            self._producer.abort_transaction(self._timeout_s)
            self._in_transaction = False

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        self.on_revoke(partitions)

    def close(self) -> None:
        if self._in_transaction:
            self._producer.abort_transaction(self._timeout_s)
        self._producer.flush(30.0)
