"""librdkafka's own log lines at DEBUG, and one streamfer line per broker state change.

librdkafka logs every failed connect of every client ("Connection refused" storms while a
broker restarts), "Purging unserved events", "Coordinator load in progress"... `BrokerLink`
gives its clients a `logger` that sends all of that to the Python logger at DEBUG, and an
`error_cb` that says once "broker unreachable since HH:MM:SS (...)" when all brokers are
down and once "reconnected to the broker after N s" when one answers again. Share one
`BrokerLink` among the clients of a process, so a state change is said once, not per client.
Depends on nothing but confluent-kafka, so every part of streamfer can use it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from confluent_kafka import KafkaError

log = logging.getLogger("streams.kafka")

RDKAFKA_LOGGER = "streams.kafka.rdkafka"
"""The logger librdkafka's lines go to, all at DEBUG (shown with `--verbose`)."""

# Errors that mean "cannot reach a broker right now": librdkafka retries them by itself.
_TRANSPORT_CODES = frozenset(
    {KafkaError._TRANSPORT, KafkaError._RESOLVE, KafkaError._ALL_BROKERS_DOWN}
)

# Settings only a consumer understands: given to a producer, librdkafka warns about each.
CONSUMER_ONLY = frozenset(
    {
        "group.id",
        "group.instance.id",
        "group.protocol",
        "group.remote.assignor",
        "partition.assignment.strategy",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "group.protocol.type",
        "coordinator.query.interval.ms",
        "max.poll.interval.ms",
        "enable.auto.commit",
        "auto.commit.interval.ms",
        "enable.auto.offset.store",
        "auto.offset.reset",
        "queued.min.messages",
        "queued.max.messages.kbytes",
        "fetch.wait.max.ms",
        "fetch.queue.backoff.ms",
        "fetch.message.max.bytes",
        "max.partition.fetch.bytes",
        "fetch.max.bytes",
        "fetch.min.bytes",
        "fetch.error.backoff.ms",
        "isolation.level",
        "enable.partition.eof",
        "check.crcs",
        "consume.callback.max.messages",
        "offset.store.method",
    }
)

# Settings only a producer understands: given to a consumer, librdkafka warns about each.
PRODUCER_ONLY = frozenset(
    {
        "transactional.id",
        "transaction.timeout.ms",
        "enable.idempotence",
        "enable.gapless.guarantee",
        "queue.buffering.max.messages",
        "queue.buffering.max.kbytes",
        "queue.buffering.max.ms",
        "linger.ms",
        "message.send.max.retries",
        "retries",
        "queue.buffering.backpressure.threshold",
        "compression.codec",
        "compression.type",
        "batch.num.messages",
        "batch.size",
        "delivery.report.only.error",
        "sticky.partitioning.linger.ms",
        "acks",
        "request.required.acks",
        "request.timeout.ms",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "partitioner",
        "compression.level",
    }
)


def producer_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` without the consumer-only settings (e.g. a group's session timeout)."""
    return {k: v for k, v in config.items() if k not in CONSUMER_ONLY}


def consumer_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` without the producer-only settings."""
    return {k: v for k, v in config.items() if k not in PRODUCER_ONLY}


class _AtDebug(logging.LoggerAdapter[logging.Logger]):
    """librdkafka maps its syslog levels to Python's; here every line is DEBUG."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        self.logger.debug(msg, *args, **kwargs)


class BrokerLink:
    """Whether the brokers answer, said once per change; the clients' logger and error_cb."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger = log,
    ) -> None:
        self._clock = clock
        self._log = logger
        self._lock = threading.Lock()  # error_cb and stats_cb of several clients
        self._down_since: float | None = None
        self._reported: set[int] = set()
        self.rdkafka_logger: logging.LoggerAdapter[logging.Logger] = _AtDebug(
            logging.getLogger(RDKAFKA_LOGGER), {}
        )

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def client_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """`config` plus this link's logger and error callback."""
        return {**config, "logger": self.rdkafka_logger, "error_cb": self.on_error}

    def on_error(self, err: KafkaError) -> None:
        """librdkafka `error_cb`: the brokers going away is one line; other errors too."""
        code = err.code()
        if code == KafkaError._ALL_BROKERS_DOWN:
            with self._lock:
                if self._down_since is not None:
                    return
                self._down_since = self._clock()
            self._log.warning(
                "broker unreachable since %s (%s); retrying",
                time.strftime("%H:%M:%S", time.localtime(self._down_since)),
                err.str(),
            )
        elif code in _TRANSPORT_CODES:
            self._log.debug("broker connection: %s", err.str())
        elif err.fatal():
            self._log.error("kafka client error: %s", err.str())
        elif code not in self._reported:  # e.g. bad credentials: said once, not per retry
            self._reported.add(code)
            self._log.warning("kafka client error: %s", err.str())

    def up(self) -> None:
        """A broker answered (a message, or statistics with a broker up): say so once."""
        if self._down_since is None:
            return
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is not None:
            self._log.info("reconnected to the broker after %.0f s", self._clock() - since)

    def on_stats(self, stats_json: str) -> None:
        """librdkafka `stats_cb`: a broker in state UP means the link is back."""
        if self._down_since is None:
            return
        stats: dict[str, Any] = orjson.loads(stats_json)
        brokers = stats.get("brokers", {}).values()
        if any(b.get("state") == "UP" and b.get("nodeid", -1) >= 0 for b in brokers):
            self.up()


# One link for the short-lived clients of a command (topic creation, reads, producing): a
# broker that goes away is said once per process, not once per client.
_COMMAND_LINK = BrokerLink()


def quiet_consumer(config: Mapping[str, Any], link: BrokerLink | None = None) -> dict[str, Any]:
    """A consumer's config: consumer settings only, librdkafka's log at DEBUG."""
    return (link or _COMMAND_LINK).client_config(consumer_settings(config))


def quiet_producer(config: Mapping[str, Any], link: BrokerLink | None = None) -> dict[str, Any]:
    """A producer's config: producer settings only, librdkafka's log at DEBUG."""
    return (link or _COMMAND_LINK).client_config(producer_settings(config))


def quiet_admin(config: Mapping[str, Any], link: BrokerLink | None = None) -> dict[str, Any]:
    """An admin client's config: neither role's settings, librdkafka's log at DEBUG."""
    return (link or _COMMAND_LINK).client_config(consumer_settings(producer_settings(config)))
