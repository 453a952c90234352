"""Alerts a worker raises (a refused snapshot, a drift seen while scoring), as JSON."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from confluent_kafka import Producer

from streams.spec import Connections
from streams.worker.kafka_log import BrokerLink, producer_settings

log = logging.getLogger(__name__)


class AlertSink:
    """JSON alerts (e.g. a refused snapshot) to the spec's alerts topic, or the log only."""

    def __init__(
        self,
        connections: Connections,
        topic: str | None,
        source: str,
        *,
        link: BrokerLink | None = None,
    ) -> None:
        self._topic = topic
        self._source = source
        self._producer: Producer | None = None
        if topic:
            config = producer_settings(connections.kafka_config(**{"linger.ms": 50}))
            self._producer = Producer((link or BrokerLink()).client_config(config))

    def send(self, alert: dict[str, Any]) -> None:
        log.error("alert: %s", alert)
        if self._producer is not None and self._topic is not None:
            payload = {**alert, "source": self._source}
            self._producer.produce(self._topic, orjson.dumps(payload), self._source.encode())
            self._producer.poll(0)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
