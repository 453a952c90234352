"""Writing events to the events topic: the synthetic workload (and, later, CSV replay)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import KafkaError, Producer

from streams.ops.progress import ProgressReporter
from streams.spec import Connections, PipelineSpec
from streams.worker.kafka_log import COMMAND_LINK, quiet_producer
from streams.workloads.synthetic import CardPayments


@dataclass(frozen=True)
class ProduceResult:
    count: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.count / max(self.seconds, 1e-9)


def checked_producer(connections: Connections, **settings: Any) -> tuple[Producer, list[str]]:
    """An idempotent producer whose failed deliveries (only those call back) are collected
    in the returned list, so a caller can refuse to report success after `flush()`."""
    failures: list[str] = []

    def on_error(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    producer = Producer(
        quiet_producer(
            connections.kafka_config(
                **{
                    "enable.idempotence": True,
                    "delivery.report.only.error": True,
                    "on_delivery": on_error,
                    **settings,
                }
            )
        )
    )
    return producer, failures


def produce_events(
    connections: Connections,
    topic: str,
    events: Iterable[dict[str, Any]],
    *,
    key_field: str | None,
    progress: ProgressReporter | None = None,
) -> ProduceResult:
    """Produce JSON events keyed by `key_field`; raises if any record is not delivered."""
    producer, failures = checked_producer(
        connections,
        **{
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
        },
    )
    started = time.perf_counter()
    count = 0
    dumps = orjson.dumps
    for event in events:
        key = str(event[key_field]).encode() if key_field else None
        value = dumps(event)
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
                COMMAND_LINK.raise_if_refused()
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
            if progress is not None:
                progress.advance(10_000)
    while producer.flush(1) > 0:
        COMMAND_LINK.raise_if_refused()  # a refused login never delivers: stop, say why
    if progress is not None:
        progress.update(count)
    if failures:
        raise RuntimeError(f"{len(failures)} events were not delivered, e.g. {failures[0]}")
    return ProduceResult(count, time.perf_counter() - started)


def produce_synthetic(
    connections: Connections,
    spec: PipelineSpec,
    workload: CardPayments,
    *,
    progress: ProgressReporter | None = None,
) -> ProduceResult:
    key_field = spec.event.entities[0]
    return produce_events(
        connections,
        spec.topics.events,
        workload.events(),
        key_field=key_field,
        progress=progress,
    )
