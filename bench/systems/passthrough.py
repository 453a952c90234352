"""The ceiling: confluent-kafka consume → orjson decode → encode → produce, nothing else.

Same consumer and producer settings as a streamfer worker (batch consume of
`batching.max_size` within `batching.max_wait`, the producer defaults of
`streams.worker.delivery`), and the same at-least-once protocol: a batch's offsets are stored only
once the broker acknowledged its records, that wait overlapped with the next batch. No
features, no model: what is left is the cost of moving JSON through Kafka in Python.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from bench.systems.common import Report, RunnerConfig, stop_on_signals
from streams.spec import load_spec
from streams.worker.delivery import _PRODUCER_DEFAULTS  # the very settings the worker uses


def main(config_path: str) -> None:
    config = RunnerConfig.load(config_path)
    spec = load_spec(config.spec_path)
    stop = stop_on_signals()
    report = Report(config.report_path, config.system, config.worker_id)
    max_size, max_wait_s = spec.batching.max_size, spec.batching.max_wait / 1000
    failures: list[str] = []

    def on_error(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    consumer = Consumer(
        {
            "bootstrap.servers": config.bootstrap,
            "group.id": spec.group,
            "client.id": f"bench-passthrough-{config.worker_id}",
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "fetch.min.bytes": 1,
            "queued.min.messages": max(10_000, max_size * 4),
        }
    )
    producer = Producer(
        {
            **_PRODUCER_DEFAULTS,
            "bootstrap.servers": config.bootstrap,
            "client.id": f"bench-passthrough-{config.worker_id}",
            "on_delivery": on_error,
        }
    )
    consumer.subscribe([spec.topics.events])
    out_topic = spec.topics.predictions
    loads, dumps, produce = orjson.loads, orjson.dumps, producer.produce
    pending: list[TopicPartition] | None = None
    events = 0
    while not stop.is_set():
        # As the worker takes a batch (streams/worker/consumer.py poll_batch): what is queued
        # now, waiting only when nothing is, so the floor is not the consume wait itself.
        messages = consumer.consume(max_size, 0)
        if not messages:
            first = consumer.poll(max_wait_s)
            messages = [first, *consumer.consume(max_size - 1, 0)] if first is not None else []
        good = [m for m in messages if m.error() is None]
        if pending is not None and (good or not messages):
            while producer.flush(10.0) > 0:
                pass
            if failures:
                raise RuntimeError(f"{len(failures)} records not delivered: {failures[0]}")
            consumer.store_offsets(offsets=pending)
            pending = None
        if not good:
            continue
        report.first_consume()
        offsets: dict[tuple[str, int], int] = {}
        for msg in good:
            out = dumps(loads(msg.value()))
            while True:
                try:
                    produce(out_topic, out, msg.key())
                    break
                except BufferError:
                    producer.poll(0.05)
            offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
        producer.poll(0)
        pending = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        events += len(good)
    producer.flush(30)
    if pending:
        consumer.store_offsets(offsets=pending)
    consumer.close()
    report.finish(events=events, predictions=events)


if __name__ == "__main__":
    main(sys.argv[1])
