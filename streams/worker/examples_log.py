"""The examples log in Kafka: the learner appends each example it learned, in learn order;
every worker's replica tails it from its checkpoint's offset (assigned, no group).

One partition, so the order is total. Exactly-once without transactions: a snapshot is
published only after the producer flushed, and records the log's next offset with the
model; a restarted learner adopts what lies past that offset (`read_since`), so it neither
re-learns nor republishes those labels, and a replica skips any sequence number it has.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from streams.spec import Connections
from streams.worker.kafka_log import quiet_consumer

log = logging.getLogger(__name__)

PARTITION = 0


class ExamplesProducer:
    """Appends encoded examples; `flush` returns the log's next offset once all are stored."""

    def __init__(
        self, connections: Connections, topic: str, client_id: str, next_offset: int
    ) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self._producer = Producer(
            connections.kafka_config(
                **{
                    "client.id": client_id,
                    "enable.idempotence": True,  # no duplicate or reordered records on retry
                    "linger.ms": 1,  # freshness: a batch of examples leaves at once
                }
            )
        )
        self._next = next_offset  # the log's end when the learner started (`read_since`)
        self._failed: str | None = None

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._failed = str(err)
        elif msg.offset() is not None:
            self._next = max(self._next, int(msg.offset()) + 1)

    def append(self, values: list[bytes]) -> None:
        for value in values:
            self._producer.produce(
                self.topic, value, partition=PARTITION, on_delivery=self._delivered
            )
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait until every appended example is stored; the log's next offset. Raises if
        one could not be stored (the snapshot must not claim it)."""
        left = self._producer.flush(timeout_s)
        if left or self._failed is not None:
            raise RuntimeError(
                f"examples log {self.topic}: {left} examples not stored ({self._failed}); "
                "no snapshot is published until they are"
            )
        return self._next

    def close(self) -> None:
        self._producer.flush(10)


class ExamplesTail:
    """A worker's read of the log from an offset: `poll` returns what has arrived, no wait."""

    def __init__(
        self, connections: Connections, topic: str, offset: int | None, *, max_records: int = 10_000
    ) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.topic = topic
        self._max = max_records
        # The group id is required by librdkafka but never joined (assign) nor committed:
        # the replica's position lives in its checkpoint, not in Kafka.
        self._consumer = Consumer(
            quiet_consumer(
                connections.kafka_config(
                    **{
                        "group.id": f"streamfer-replica-{uuid.uuid4().hex[:8]}",
                        "enable.auto.commit": False,
                        "enable.auto.offset.store": False,
                        # A checkpoint offset already deleted by retention: read what is left
                        # (the replica reports the gap), never jump to the end.
                        "auto.offset.reset": "earliest",
                        "fetch.wait.max.ms": 5,  # freshness: the broker answers within 5 ms
                        "fetch.min.bytes": 1,
                    }
                )
            )
        )
        start = OFFSET_BEGINNING if offset is None else offset
        self._tp = TopicPartition(topic, PARTITION, start)
        self._consumer.assign([self._tp])
        self.position: int | None = offset

    def poll(self) -> list[bytes]:
        out: list[bytes] = []
        for message in self._consumer.consume(self._max, 0):
            if message.error() is not None:
                log.warning("examples log: %s", message.error())
                continue
            value = message.value()
            if value is not None:
                out.append(value)
            self.position = int(message.offset()) + 1
        return out

    def behind(self) -> int | None:
        """Records past the position, from the watermark the last fetch brought (no call)."""
        from confluent_kafka import TopicPartition

        _low, high = self._consumer.get_watermark_offsets(
            TopicPartition(self.topic, PARTITION), cached=True
        )
        if high is None or high < 0 or self.position is None:
            return None
        return max(int(high) - self.position, 0)

    def read_to_end(self, timeout_s: float = 60.0) -> tuple[list[bytes], int]:
        """Everything from the start offset to the high watermark at the call, and that
        watermark (the offset after them). Raises TimeoutError past `timeout_s`."""
        import time

        from confluent_kafka import TopicPartition

        low, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, PARTITION), 10)
        position = max(int(low), self.position or 0)
        deadline = time.monotonic() + timeout_s
        out: list[bytes] = []
        while position < high:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"examples log {self.topic}: read to offset {position} of {high} within "
                    f"{timeout_s:.0f} s"
                )
            for message in self._consumer.consume(self._max, 0.5):
                if message.error() is not None or message.offset() is None:
                    continue
                if message.offset() < high and message.value() is not None:
                    out.append(message.value())
                position = max(position, int(message.offset()) + 1)
        self.position = position
        return out, int(high)

    def close(self) -> None:
        self._consumer.close()


def read_since(connections: Connections, topic: str, offset: int | None) -> tuple[list[bytes], int]:
    """The records from `offset` to the log's end (what a restarted learner adopts) and the
    offset after them."""
    tail = ExamplesTail(connections, topic, offset)
    try:
        return tail.read_to_end()
    finally:
        tail.close()
