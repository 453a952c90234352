"""Labels that follow the predictions, as in production: a payment's label is published once
its prediction has been read from the predictions topic, never before.

The demo's adaptation stage publishes payments in blocks: a block's events, then (once
every one of them has a prediction) their labels, then it waits until the served model has
learned them (`wait_learned`) before the next block is published. So a payment is scored by
a model that has learned every label whose prediction was read before its block: it is at
most one block behind, the same lag for served River as a label source downstream of the
scores gives, and the loop keeps in step on a loaded machine as on a fast one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from streams.spec import Connections, PipelineSpec
from streams.worker.kafka_log import quiet_consumer
from streams.workloads.producing import checked_producer
from streams.workloads.replay import LabelledRow, label_record


class FeedbackError(Exception):
    """The loop could not go on: a prediction did not come within the wait."""


class PredictionsReader:
    """Every prediction of the topic from its beginning (assigned, no group), first one per
    event id kept (a redelivered prediction after a retry is not counted again)."""

    def __init__(self, connections: Connections, topic: str) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self._consumer = Consumer(
            quiet_consumer(
                connections.kafka_config(
                    **{
                        "group.id": f"streamfer-feedback-{uuid.uuid4().hex[:8]}",
                        "enable.auto.commit": False,
                        "isolation.level": "read_committed",
                        # a block waits for its predictions: the broker answers at once
                        "fetch.wait.max.ms": 5,
                    }
                )
            )
        )
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self.predictions: dict[str, dict[str, Any]] = {}

    def wait_for(self, event_ids: Sequence[str], timeout_s: float) -> None:
        """Read until each of `event_ids` has a prediction; FeedbackError past `timeout_s`."""
        missing = {i for i in event_ids if i not in self.predictions}
        deadline = time.monotonic() + timeout_s
        while missing:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FeedbackError(
                    f"{len(missing)} predictions did not come within {timeout_s:.0f} s "
                    f"(e.g. event {sorted(missing)[0]}): is the worker scoring?"
                )
            for message in self._arrived(min(left, 0.05)):
                if message.error() is not None or message.value() is None:
                    continue
                prediction = orjson.loads(message.value())
                event_id = str(prediction.get("event_id"))
                if event_id not in self.predictions:
                    self.predictions[event_id] = prediction
                    missing.discard(event_id)

    def _arrived(self, wait_s: float) -> list[Any]:
        """What is queued now; only when nothing is, the first record within `wait_s`
        (`consume(n, t)` alone would wait all of `t` unless n records came)."""
        messages = self._consumer.consume(10_000, 0)
        if not messages:
            first = self._consumer.poll(wait_s)
            messages = [first, *self._consumer.consume(10_000, 0)] if first is not None else []
        return messages

    def close(self) -> None:
        self._consumer.close()


@dataclass(frozen=True)
class FeedbackResult:
    predictions: list[dict[str, Any]]  # the first prediction of each payment, in read order
    events: int
    labels: int
    seconds: float


def publish_with_feedback(
    spec: PipelineSpec,
    connections: Connections,
    rows: Sequence[LabelledRow],
    *,
    block: int,
    wait_learned: Callable[[int], None],
    prediction_timeout_s: float = 120.0,
) -> FeedbackResult:
    """Blocks of `block` events; each block's labels once its predictions are read (label
    time = the block's last event time: when the labels became known), then
    `wait_learned(labels so far)` before the next block."""
    if not spec.topics.labels:
        raise FeedbackError("the spec names no labels topic: set topics.labels")
    producer, failures = checked_producer(connections, **{"linger.ms": 1})
    reader = PredictionsReader(connections, spec.topics.predictions)
    id_field, key_field = spec.event.id, spec.event.key or spec.event.entities[0]
    started = time.perf_counter()
    labels = 0
    try:
        for start in range(0, len(rows), block):
            chunk = rows[start : start + block]
            for row in chunk:
                producer.produce(
                    spec.topics.events,
                    orjson.dumps(row.event),
                    str(row.event.get(key_field, "")).encode(),
                )
            _flush(producer, failures)
            reader.wait_for([str(r.event[id_field]) for r in chunk], prediction_timeout_s)
            known_at = chunk[-1].event_time_ms
            for row in chunk:
                record = label_record(row, id_field, known_at)
                producer.produce(
                    spec.topics.labels, orjson.dumps(record), record["event_id"].encode()
                )
            _flush(producer, failures)
            labels += len(chunk)
            wait_learned(labels)
        return FeedbackResult(
            list(reader.predictions.values()), len(rows), labels, time.perf_counter() - started
        )
    finally:
        reader.close()


def _flush(producer: Any, failures: list[str]) -> None:
    while producer.flush(10) > 0:
        pass
    if failures:
        raise FeedbackError(f"{len(failures)} records were not delivered, e.g. {failures[0]}")
