"""librdkafka's own log lines at DEBUG, and one streamfer line per broker state change.

librdkafka logs every failed connect of every client ("Connection refused" storms while a
broker restarts), "Purging unserved events", "Coordinator load in progress"... `BrokerLink`
gives its clients a `logger` that sends all of that to the Python logger at DEBUG, and an
`error_cb` that says once "broker unreachable since HH:MM:SS (...)" when all brokers are
down and once "reconnected to the broker after N s" when one answers again (a message, or
a broker UP in the statistics for a few seconds: a restarting broker flaps). Share one
`BrokerLink` among the clients of a process, so a state change is said once, not per client.

A broker that refuses us (a SASL login with wrong credentials, a TLS certificate the client
cannot verify) is no outage to wait out: librdkafka would retry it forever. The link keeps
the first refusal as `BrokerRefused`, one line naming the cause and the variables to fix
(never the password), and the loops of the worker, the tools and the learner stop with it
(`raise_if_refused`). Depends on nothing but confluent-kafka and the redaction, so every
part of streamfer can use it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import orjson
from confluent_kafka import KafkaError

from streams.security.redaction import redact

log = logging.getLogger("streams.kafka")

RDKAFKA_LOGGER = "streams.kafka.rdkafka"
"""The logger librdkafka's lines go to, all at DEBUG (shown with `--verbose`)."""

# Errors that mean "cannot reach a broker right now": librdkafka retries them by itself.
_TRANSPORT_CODES = frozenset(
    {KafkaError._TRANSPORT, KafkaError._RESOLVE, KafkaError._ALL_BROKERS_DOWN}
)


class BrokerUnreachable(Exception):
    """No broker answered; the message says where we looked and what to check."""


class BrokerRefused(BrokerUnreachable):
    """A broker answered but refused us: bad SASL credentials or an unverifiable certificate.

    Retrying cannot help, so it stops the process; the message names the cause and the fix.
    """


# librdkafka's "sasl_ssl://host:port/bootstrap: " in front and "(after 5ms in state X)" behind.
_BROKER_PREFIX = re.compile(r"^\S+://\S+?: ")
_AFTER_SUFFIX = re.compile(r"\s*\(after \d+ms in state \w+(?:, [^)]*)?\)\s*$")
# The settings that decide whether a broker lets a client in: a refusal belongs to them.
_IDENTITY = (
    "bootstrap.servers",
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
)


def refusal(err: KafkaError, config: Mapping[str, Any]) -> BrokerRefused | None:
    """`err` as a BrokerRefused when it means the broker refused these settings, else None."""
    code = err.code()
    where = config.get("bootstrap.servers", "?")
    secrets = [str(config[k]) for k in ("sasl.password", "ssl.key.password") if config.get(k)]
    detail = redact(_AFTER_SUFFIX.sub("", _BROKER_PREFIX.sub("", err.str())), secrets)
    if code == KafkaError._AUTHENTICATION:
        user = config.get("sasl.username")
        who = f"user {user!r}" if user else "no user (STREAMFER_RDKAFKA_SASL_USERNAME unset)"
        return BrokerRefused(
            f"Kafka authentication failed for {who} on {where}: check "
            f"STREAMFER_RDKAFKA_SASL_USERNAME/PASSWORD and _SASL_MECHANISM ({detail})"
        )
    # Only a failed verification is a refusal: a handshake cut by a restarting broker is not.
    if code == KafkaError._SSL and "verify failed" in detail.lower():
        return BrokerRefused(
            f"the TLS certificate of the Kafka broker at {where} could not be verified "
            "(SSL handshake failed: certificate verify failed): set "
            "STREAMFER_RDKAFKA_SSL_CA_LOCATION to the CA that signed it"
        )
    return None


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


# How long a broker must stay UP in the statistics before the link counts as back.
BACK_SETTLE_S = 4.0


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
        self._back_since: float | None = None  # a broker looked UP: not said until it stays so
        self._outages = 0
        self._up_at: float | None = None  # when the last outage ended
        self._unsaid = False  # the current outage is not said (yet)
        self._detail = ""
        self._reported: set[int] = set()
        self._config: dict[str, Any] = {}
        self._refused: BrokerRefused | None = None
        self._checking = 0  # start checks running (`checking()`): their outages go unsaid
        self.rdkafka_logger: logging.LoggerAdapter[logging.Logger] = _AtDebug(
            logging.getLogger(RDKAFKA_LOGGER), {}
        )

    @property
    def down(self) -> bool:
        return self._down_since is not None

    @property
    def outages(self) -> int:
        """How many outages this link has said so far (a client can tell one happened)."""
        return self._outages

    @property
    def refusal(self) -> BrokerRefused | None:
        """The first refusal a client of this link met, if any (it stays: nothing heals it)."""
        return self._refused

    def raise_if_refused(self) -> None:
        """Stop the caller's loop with the refusal's one line, when there was one."""
        if self._refused is not None:
            raise self._refused

    def client_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """`config` plus this link's logger and error callback."""
        settings = {k: v for k, v in config.items() if isinstance(v, str)}
        with self._lock:  # the settings a refusal's message names (user, servers)
            if [settings.get(k) for k in _IDENTITY] != [self._config.get(k) for k in _IDENTITY]:
                self._refused = None  # other credentials: the old refusal is not theirs
            self._config = settings
        return {**config, "logger": self.rdkafka_logger, "error_cb": self.on_error}

    def on_error(self, err: KafkaError) -> None:
        """librdkafka `error_cb`: the brokers going away is one line; other errors too."""
        code = err.code()
        if code in (KafkaError._AUTHENTICATION, KafkaError._SSL):
            refused = refusal(err, self._config)
            if refused is not None:
                # Not logged here: the loop that stops on it says it, once.
                with self._lock:
                    self._refused = self._refused or refused
                self._log.debug("%s", refused)
                return
        if code == KafkaError._ALL_BROKERS_DOWN:
            if self._refused is not None:
                return  # the refusal explains it; no "unreachable" line beside it
            # "0/2 brokers are down" is said while a refused handshake tears the connection
            # down, before the refusal is reported, but also by a consumer (bootstrap and
            # group coordinator) whose broker went away, as that client's only report of a
            # real outage: kept unsaid until the statistics show no broker up (on_stats).
            uncounted = err.str().startswith("0/")
            with self._lock:
                if self._down_since is not None:
                    # Down again before the return was confirmed: the same outage, unsaid.
                    self._back_since = None
                    return
                now = self._down_since = self._clock()
                self._outages += 1
                # Just after a return, another client of the link may still report the
                # outage it saw: kept unsaid until statistics show no broker up (on_stats).
                # During a start check the check's own error says it (or the refusal that
                # a slow TLS handshake reports only after "all brokers down").
                self._unsaid = (
                    uncounted
                    or self._checking > 0
                    or (self._up_at is not None and now - self._up_at < BACK_SETTLE_S)
                )
                self._detail = err.str()
            if not self._unsaid:
                self._say_down()
        elif code in _TRANSPORT_CODES:
            self._log.debug("broker connection: %s", err.str())
        elif err.fatal():
            self._log.error("kafka client error: %s", err.str())
        elif code not in self._reported:  # e.g. bad credentials: said once, not per retry
            self._reported.add(code)
            self._log.warning("kafka client error: %s", err.str())

    @contextmanager
    def checking(self) -> Iterator[None]:
        """A command's start check (`streams.ops.topics.admin_for`): an outage it meets is
        not said here, since the check ends in its own error line (no broker answered, or
        the refusal), and when a broker answers, `up()` ends it without a line."""
        with self._lock:
            self._checking += 1
        try:
            yield
        finally:
            with self._lock:
                self._checking -= 1

    def _say_down(self) -> None:
        since = self._down_since
        if since is not None:
            self._log.warning(
                "broker unreachable since %s (%s); retrying",
                time.strftime("%H:%M:%S", time.localtime(since)),
                self._detail,
            )

    def up(self) -> None:
        """A broker answered for sure (a message was consumed): say so once.

        A WARNING like the line it answers, so an operator who saw "unreachable" at the
        default level also sees the outage end.
        """
        if self._down_since is None:
            return
        now = self._clock()
        with self._lock:
            since, self._down_since, self._back_since = self._down_since, None, None
            unsaid, self._unsaid, self._up_at = self._unsaid, False, now
        if since is not None and not unsaid:
            self._log.warning("reconnected to the broker after %.0f s", now - since)

    def on_stats(self, stats_json: str) -> None:
        """librdkafka `stats_cb`: a broker UP in two statistics `BACK_SETTLE_S` apart means
        the link is back; one UP alone is not (a restarting broker accepts a connection,
        then drops it again while it starts, which would be said as a second outage)."""
        if self._down_since is None or self._refused is not None:
            return  # nothing down, or a refusal, which says it all
        stats: dict[str, Any] = orjson.loads(stats_json)
        brokers = stats.get("brokers", {}).values()
        if not any(b.get("state") == "UP" and b.get("nodeid", -1) >= 0 for b in brokers):
            with self._lock:
                self._back_since = None
                say, self._unsaid = self._unsaid, False
            if say:  # the report kept unsaid was a real outage after all
                self._say_down()
            return
        now = self._clock()
        with self._lock:
            if self._back_since is None:
                self._back_since = now
            settled = now - self._back_since >= BACK_SETTLE_S
        if settled:
            self.up()


# One link for the short-lived clients of a command (topic creation, reads, producing): a
# broker that goes away is said once per process, not once per client.
COMMAND_LINK = BrokerLink()


def quiet_consumer(config: Mapping[str, Any], link: BrokerLink | None = None) -> dict[str, Any]:
    """A consumer's config: consumer settings only, librdkafka's log at DEBUG."""
    return (link or COMMAND_LINK).client_config(consumer_settings(config))


def quiet_producer(config: Mapping[str, Any], link: BrokerLink | None = None) -> dict[str, Any]:
    """A producer's config: producer settings only, librdkafka's log at DEBUG."""
    return (link or COMMAND_LINK).client_config(producer_settings(config))


def quiet_admin(config: Mapping[str, Any], link: BrokerLink | None = None) -> dict[str, Any]:
    """An admin client's config: neither role's settings, librdkafka's log at DEBUG."""
    return (link or COMMAND_LINK).client_config(consumer_settings(producer_settings(config)))
