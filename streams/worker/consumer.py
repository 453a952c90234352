"""BatchConsumer: librdkafka's batch consume as the micro-batch, offsets carried with it.

`consume(num_messages=max_size, timeout=max_wait)` returns when the batch is full or the
wait is over, so batching costs no Python per message. Rebalance callbacks are forwarded
to the delivery strategy, which knows what is in flight. Nothing here blocks without a
bound: commits are asynchronous, and `close()` leaves the final commit of the stored
offsets to librdkafka's own close (bounded by the session timeout).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streams.worker.kafka_log import BrokerLink, consumer_settings

log = logging.getLogger(__name__)

RebalanceHook = Callable[[list[TopicPartition]], None]

# Group timing, unless the config says otherwise (STREAMFER_RDKAFKA_SESSION_TIMEOUT_MS...).
# After a broker restart the group coordinator reloads the group with our old membership and
# completes the next rebalance only once that member rejoins or its session expires: with
# librdkafka's 45 s default the worker scored nothing for ~45 s after the broker was back.
# 10 s (heartbeats every 2 s) still rides out a loaded machine: heartbeats come from
# librdkafka's own thread, not from the Python loop.
GROUP_DEFAULTS: dict[str, Any] = {
    "session.timeout.ms": 10_000,
    "heartbeat.interval.ms": 2_000,
}


@dataclass(frozen=True, slots=True)
class MessageBatch:
    messages: list[Message]
    wait_s: float

    def next_offsets(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition): the offset to commit once this batch is done."""
        out: dict[tuple[str, int], int] = {}
        for msg in self.messages:
            tp = (msg.topic(), msg.partition())
            nxt = msg.offset() + 1
            if nxt > out.get(tp, -1):
                out[tp] = nxt
        return out

    def first_offsets(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition): where to rewind to process this batch again."""
        out: dict[tuple[str, int], int] = {}
        for msg in self.messages:
            tp = (msg.topic(), msg.partition())
            if tp not in out or msg.offset() < out[tp]:
                out[tp] = msg.offset()
        return out


class BatchConsumer:
    def __init__(
        self,
        config: dict[str, Any],
        topics: Sequence[str],
        *,
        max_size: int,
        max_wait_s: float,
        on_assign: RebalanceHook | None = None,
        on_revoke: RebalanceHook | None = None,
        on_lost: RebalanceHook | None = None,
        link: BrokerLink | None = None,
    ) -> None:
        self._link = link or BrokerLink()
        self._consumer = Consumer(
            self._link.client_config(consumer_settings({**GROUP_DEFAULTS, **config}))
        )
        self._max_size = max_size
        self._max_wait_s = max_wait_s
        self._hooks = (on_assign, on_revoke, on_lost)
        self._paused = False
        self._closing = False
        self._consumer.subscribe(
            list(topics), on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )

    @property
    def raw(self) -> Consumer:
        return self._consumer

    @property
    def max_size(self) -> int:
        """The most records a batch holds: a batch this size means a backlog."""
        return self._max_size

    @property
    def closing(self) -> bool:
        """True once `close()` began (its revoke callback runs inside it)."""
        return self._closing

    def _assigned(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", [(p.topic, p.partition) for p in partitions])
        if self._hooks[0]:
            self._hooks[0](partitions)
        if self._paused and partitions:
            # A rebalance during a backpressure pause must not restart fetching.
            self._consumer.pause(partitions)

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked %s", [(p.topic, p.partition) for p in partitions])
        if self._hooks[1]:
            self._hooks[1](partitions)

    def _lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("lost %s", [(p.topic, p.partition) for p in partitions])
        if self._hooks[2]:
            self._hooks[2](partitions)

    def poll_batch(self, *, wait: bool = True) -> MessageBatch:
        """What is queued now (up to max_size); only when nothing is, wait up to max_wait
        (not at all with `wait=False`: the caller has a batch of its own to finish).

        `consume(n, t)` would block until n records or t passed, so at moderate load every
        batch waited the full max_wait. Under load the queue is full and batches still fill.
        """
        started = time.perf_counter()
        consumer = self._consumer
        messages = consumer.consume(self._max_size, 0)
        if not messages and wait:
            first = consumer.poll(self._max_wait_s)
            if first is not None:
                messages = [first, *consumer.consume(self._max_size - 1, 0)]
        wait_s = time.perf_counter() - started
        if messages and self._link.down:
            self._link.up()
        good: list[Message] = []
        for msg in messages:
            err = msg.error()
            if err is None:
                good.append(msg)
            elif err.code() != KafkaError._PARTITION_EOF:
                if err.fatal():
                    raise KafkaException(err)
                log.warning("consumer error: %s", err)
        return MessageBatch(good, wait_s)

    def pause_all(self) -> None:
        """Stop fetching (librdkafka purges what it prefetched) but stay in the group."""
        self._paused = True
        assignment = self._consumer.assignment()
        if assignment:
            self._consumer.pause(assignment)

    def resume_all(self) -> None:
        self._paused = False
        assignment = self._consumer.assignment()
        if assignment:
            self._consumer.resume(assignment)

    def serve_while_paused(self, seconds: float) -> None:
        """Wait `seconds` while serving rebalance events; paused partitions yield nothing."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            stray = self._consumer.consume(1, min(left, 0.5))
            for msg in stray:  # a partition assigned and not yet paused: go back to it later
                if msg.error() is None:
                    self._consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))
                    self._consumer.pause([TopicPartition(msg.topic(), msg.partition())])

    def rewind(self, batch: MessageBatch, owned: set[tuple[str, int]] | None = None) -> None:
        """Seek back to the start of `batch` so it is consumed again (after an abort)."""
        for (topic, partition), offset in batch.first_offsets().items():
            if owned is None or (topic, partition) in owned:
                self._consumer.seek(TopicPartition(topic, partition, offset))

    def assignment(self) -> set[tuple[str, int]]:
        return {(p.topic, p.partition) for p in self._consumer.assignment()}

    def broker_answers(self, timeout_s: float) -> bool:
        try:
            self._consumer.list_topics(timeout=timeout_s)
        except KafkaException:
            return False
        return True

    def store_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        if not offsets:
            return
        owned = self.assignment()
        mine = [TopicPartition(t, p, o) for (t, p), o in offsets.items() if (t, p) in owned]
        if mine:
            self._consumer.store_offsets(offsets=mine)

    def commit(self) -> None:
        """Commit the stored offsets now, without waiting for the broker's answer.

        A synchronous commit has no timeout and, inside the revoke callback of `close()`
        while the group rebalances, never returned. The request is sent before the revoke
        callback returns, i.e. while the partitions are still ours; during `close()` it is
        left out, since librdkafka's close commits the stored offsets itself.
        """
        if self._closing:
            return
        try:
            self._consumer.commit(asynchronous=True)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                raise

    def group_metadata(self) -> Any:
        """The group's metadata, for `send_offsets_to_transaction`."""
        return self._consumer.consumer_group_metadata()

    def close(self) -> None:
        """Revoke (the hooks run), commit the stored offsets, leave the group."""
        self._closing = True
        self._consumer.close()
