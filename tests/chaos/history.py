"""What the clients of a chaos run saw: every prediction a read_committed reader got, in
topic order, and the delayed label produced for each event once its prediction showed up.

One thread per pipeline reads the predictions topic for the whole run (through broker
outages: librdkafka reconnects on its own) and appends to the history the checks run over
afterwards; it produces an event's label the first time it sees the event's prediction,
as a label source downstream of the scores would.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streams.spec import Connections
from streams.worker.kafka_log import quiet_consumer
from streams.workloads.producing import checked_producer


@dataclass(frozen=True)
class Seen:
    """One prediction as read: where it was in the predictions topic and for which event."""

    partition: int
    offset: int
    event_id: str
    key: str | None
    late: bool


class History:
    """The prediction history of one pipeline, recorded by a thread; labels as it goes."""

    def __init__(
        self,
        conn: Connections,
        predictions: str,
        partitions: int,
        labels_topic: str,
        labels: dict[str, int],
    ) -> None:
        self.seen: list[Seen] = []
        self.labels_produced = 0
        self._labels = labels  # event id → its label (written by the event feed first)
        self._labelled: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._labels_topic = labels_topic
        self._consumer = Consumer(
            quiet_consumer(
                conn.kafka_config(
                    **{
                        "group.id": f"chaos-history-{uuid.uuid4().hex[:8]}",
                        "auto.offset.reset": "earliest",
                        "enable.auto.commit": False,
                        "isolation.level": "read_committed",
                    }
                )
            )
        )
        # Assigned, not subscribed: a group member that rejoins after a broker restart,
        # with nothing committed, would read the whole topic again (false duplicates).
        self._consumer.assign(
            [TopicPartition(predictions, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self._producer, self.label_failures = checked_producer(conn, **{"linger.ms": 20})
        self._thread = threading.Thread(target=self._run, name="chaos-history", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            rows = []
            fresh = []
            for msg in self._consumer.consume(10_000, 0.2):
                if msg.error() is not None:
                    continue
                prediction = orjson.loads(msg.value())
                event_id = prediction["event_id"]
                key = msg.key().decode() if msg.key() is not None else None
                late = bool(prediction.get("late"))
                rows.append(Seen(msg.partition(), msg.offset(), event_id, key, late))
                if event_id not in self._labelled:
                    self._labelled.add(event_id)
                    fresh.append(event_id)
            now = int(time.time() * 1000)
            for event_id in fresh:
                label = {"event_id": event_id, "label": self._labels[event_id], "label_time": now}
                self._producer.produce(self._labels_topic, orjson.dumps(label), event_id.encode())
            self._producer.poll(0)
            with self._lock:
                self.seen.extend(rows)
                self.labels_produced += len(fresh)

    def distinct(self) -> int:
        """Events with a prediction so far."""
        with self._lock:
            return len(self._labelled)

    def predicted(self) -> set[str]:
        """The events with a prediction so far."""
        with self._lock:  # `seen` grows under the lock (the thread adds to `_labelled` outside it)
            return {s.event_id for s in self.seen}

    def read_to(self) -> dict[int, int]:
        """Per predictions partition, the offset after the last prediction read."""
        with self._lock:
            seen = list(self.seen)
        ends: dict[int, int] = {}
        for s in seen:
            ends[s.partition] = max(ends.get(s.partition, 0), s.offset + 1)
        return ends

    def labels_unacknowledged(self) -> int:
        return len(self._producer)

    def labels_flushed(self, timeout_s: float) -> bool:
        """Every label produced so far acknowledged by the broker, within `timeout_s`."""
        return self._producer.flush(timeout_s) == 0

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self._producer.flush(30)
        self._consumer.close()
