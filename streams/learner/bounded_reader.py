"""A topic read to the end offsets it had when the read began: assigned partitions, no
group membership or commits, every wait bounded (what `streamfer report` reads)."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from streams.learner.errors import LearnerError
from streams.spec import Connections
from streams.worker.kafka_log import BrokerUnreachable, quiet_consumer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicRecord:
    """One committed record, with where it lies in its topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class TopicReadTimeout(LearnerError):
    """A topic could not be read to its end offsets in time; the message says where it stood."""


def read_to_end(
    connections: Connections, topic: str, *, timeout_s: float = 60.0
) -> list[TopicRecord]:
    """Every committed record of `topic` below the high watermarks it had at the call; [] for
    a missing topic. Records written during the read are left out, so two reads of a quiet
    topic agree. Raises TopicReadTimeout when `timeout_s` passes first."""
    from confluent_kafka import (
        OFFSET_BEGINNING,
        Consumer,
        KafkaError,
        KafkaException,
        TopicPartition,
    )

    deadline = time.monotonic() + timeout_s

    def left() -> float:
        return max(deadline - time.monotonic(), 0.001)

    # Consumer settings only: this client never produces. The group id is required by
    # librdkafka's consumer but never joined (assign) nor committed to.
    consumer = Consumer(
        quiet_consumer(
            connections.kafka_config(
                **{
                    "group.id": f"streamfer-report-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,
                }
            )
        )
    )
    try:
        # All topics, not this one: asking for a missing topic's metadata may auto-create it.
        try:
            topics = consumer.list_topics(timeout=left()).topics
        except KafkaException as exc:
            raise BrokerUnreachable(
                f"no Kafka broker answered at {connections.bootstrap} within {timeout_s:.0f}s "
                f"({exc}). Start the local stack with `streamfer up`, or set STREAMFER_BOOTSTRAP."
            ) from None
        meta = topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        ends: dict[int, int] = {}
        for partition in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=left(), cached=False
            )
            if high > low:
                ends[partition] = high
        if not ends:
            return []
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        records: list[TopicRecord] = []
        pending = set(ends)
        while pending:
            if time.monotonic() >= deadline:
                at = {tp.partition: tp.offset for tp in consumer.position(_tps(topic, pending))}
                where = ", ".join(f"{p}: {at.get(p)} of {ends[p]}" for p in sorted(pending))
                raise TopicReadTimeout(
                    f"could not read topic {topic} to its end within {timeout_s:.0f}s "
                    f"(partition: offset of end: {where}); a transaction left open holds "
                    "read_committed readers back: retry, or give --timeout more seconds"
                )
            for message in consumer.consume(10_000, min(0.5, left())):
                partition, offset = message.partition(), message.offset()
                error = message.error()
                if partition not in ends or offset is None:
                    continue
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF and offset >= ends[partition]:
                        pending.discard(partition)
                    elif error.code() != KafkaError._PARTITION_EOF:
                        log.debug("reading %s: %s", topic, error)
                    continue
                if offset < ends[partition]:
                    records.append(TopicRecord(partition, offset, message.key(), message.value()))
            # The position passes transaction markers and compacted gaps, which no record shows.
            for tp in consumer.position(_tps(topic, pending)):
                if tp.offset >= ends[tp.partition]:
                    pending.discard(tp.partition)
        return records
    finally:
        consumer.close()


def _tps(topic: str, partitions: set[int]) -> list[Any]:
    from confluent_kafka import TopicPartition

    return [TopicPartition(topic, p) for p in sorted(partitions)]
