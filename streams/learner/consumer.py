"""The labels topic through librdkafka, assigned at the offsets the restored model stopped at."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from streams.learner.labels import LabelRecord, parse_label
from streams.learner.offsets import PartitionProgress
from streams.spec import Connections
from streams.worker.kafka_log import quiet_consumer

log = logging.getLogger(__name__)


class LabelConsumer:
    """The labels topic through librdkafka's batch consume, assigned (no group membership)
    at the offsets the restored model stopped at.

    Its group id only records the snapshot offsets (committed after each snapshot), so
    `streamfer lag` shows how far the learner is behind.
    """

    def __init__(
        self,
        connections: Connections,
        topic: str,
        group: str,
        progress: Mapping[int, PartitionProgress],
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
                    }
                )
            )
        )
        meta = self._consumer.list_topics(topic, timeout=10).topics[topic]
        self.partitions = sorted(meta.partitions)
        self._consumer.assign(
            [
                TopicPartition(
                    topic, p, progress[p].resume_offset() if p in progress else OFFSET_BEGINNING
                )
                for p in self.partitions
            ]
        )

    def consume(self, max_size: int, max_wait_s: float) -> list[LabelRecord | tuple[int, int]]:
        """Up to `max_size` labels within `max_wait_s` (blocking: run it in a thread)."""
        out: list[LabelRecord | tuple[int, int]] = []
        for message in self._consumer.consume(max_size, max_wait_s):
            if message.error() is not None:
                log.warning("labels consumer: %s", message.error())
                continue
            partition, offset = message.partition(), message.offset()
            if partition is None or offset is None:
                continue
            parsed = parse_label(message.value(), partition, offset)
            out.append(parsed if parsed is not None else (partition, offset))
        return out

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
