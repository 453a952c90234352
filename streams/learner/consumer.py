"""The labels topic through librdkafka, assigned at the offsets the restored model stopped at."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from streams.learner.labels import LabelRecord, parse_label
from streams.learner.offsets import PartitionProgress
from streams.learner.ordering import MAX_HOLD_MS, TimeOrderedMerge
from streams.spec import Connections
from streams.worker.kafka_log import quiet_consumer

log = logging.getLogger(__name__)


class LabelConsumer:
    """The labels topic through librdkafka's batch consume, assigned (no group membership)
    at the offsets the restored model stopped at.

    Its group id only records the snapshot offsets (committed after each snapshot), so
    `streamfer lag` shows how far the learner is behind. Labels come out merged across
    partitions by label time (`TimeOrderedMerge`), so what is learned does not depend on
    how many partitions the labels topic has.
    """

    def __init__(
        self,
        connections: Connections,
        topic: str,
        group: str,
        progress: Mapping[int, PartitionProgress],
        *,
        max_hold_ms: float = MAX_HOLD_MS,
    ) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.topic = topic
        # Consumer settings only; librdkafka's own log lines go to the Python logger.
        self._consumer = Consumer(
            quiet_consumer(
                connections.kafka_config(
                    **{
                        "group.id": group,
                        "enable.auto.commit": False,
                        "enable.auto.offset.store": False,
                        "auto.offset.reset": "earliest",
                        "isolation.level": "read_committed",
                        # the merge must know when a partition has nothing earlier to give
                        "enable.partition.eof": True,
                    }
                )
            )
        )
        meta = self._consumer.list_topics(topic, timeout=10).topics[topic]
        self.partitions = sorted(meta.partitions)
        self._merge: TimeOrderedMerge[LabelRecord | tuple[int, int]] = TimeOrderedMerge(
            self.partitions, max_hold_ms=max_hold_ms, clock=lambda: time.monotonic() * 1000
        )
        self._consumer.assign(
            [
                TopicPartition(
                    topic, p, progress[p].resume_offset() if p in progress else OFFSET_BEGINNING
                )
                for p in self.partitions
            ]
        )

    def consume(self, max_size: int, max_wait_s: float) -> list[LabelRecord | tuple[int, int]]:
        """Up to about `max_size` labels within `max_wait_s`, in label-time order across
        partitions (blocking: run it in a thread). Malformed records come back as their
        (partition, offset), in their partition's place, so the bookkeeping can skip them."""
        from confluent_kafka import KafkaError

        for message in self._consumer.consume(max_size, max_wait_s):
            partition, offset = message.partition(), message.offset()
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF and partition is not None:
                    self._merge.caught_up(partition)
                else:
                    log.warning("labels consumer: %s", error)
                continue
            if partition is None or offset is None:
                continue
            parsed = parse_label(message.value(), partition, offset)
            if parsed is None:
                self._merge.add(partition, None, (partition, offset))
                continue
            parsed.produced_ms = max(message.timestamp()[1], 0)
            # The label's own time when it has one, else when it was produced.
            stamp = parsed.label_time_ms or parsed.produced_ms
            self._merge.add(partition, stamp if stamp > 0 else None, parsed)
        return self._merge.release()

    @property
    def held(self) -> int:
        """Labels fetched but waiting for a lagging partition (not learned yet)."""
        return self._merge.held

    def commit(self, offsets: Mapping[int, int]) -> None:
        """Record the snapshot's resume offsets under the group (for lag tooling only)."""
        from confluent_kafka import KafkaException, TopicPartition

        if not offsets:
            return
        try:
            self._consumer.commit(
                offsets=[TopicPartition(self.topic, p, o) for p, o in offsets.items()],
                asynchronous=True,
            )
        except KafkaException as exc:
            log.info("could not record label offsets for lag tooling: %s", exc)

    def close(self) -> None:
        self._consumer.close()
