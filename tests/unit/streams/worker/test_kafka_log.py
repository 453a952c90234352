"""Broker state changes are said once each; librdkafka's lines go to DEBUG; a producer never
gets a consumer's settings."""

from __future__ import annotations

import logging
import time

import orjson
import pytest
from confluent_kafka import KafkaError, Producer

from streams.worker.kafka_log import (
    BACK_SETTLE_S,
    RDKAFKA_LOGGER,
    BrokerLink,
    producer_settings,
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def stats(state: str) -> str:
    return orjson.dumps({"brokers": {"b:1/1": {"nodeid": 1, "state": state}}}).decode()


def test_all_brokers_down_and_back_is_two_lines(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(1_000.0)
    link = BrokerLink(clock=clock)
    with caplog.at_level(logging.DEBUG, logger="streams.kafka"):
        for _ in range(3):  # every client of the process reports it, and retries
            link.on_error(KafkaError(KafkaError._TRANSPORT, "Connection refused"))
            link.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
        link.on_stats(stats("TRY_CONNECT"))
        clock.now += 42
        link.on_stats(stats("UP"))
        clock.now += BACK_SETTLE_S
        link.on_stats(stats("UP"))
        link.on_stats(stats("UP"))
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno > logging.DEBUG]
    assert len(said) == 2
    assert said[0][0] == "WARNING" and said[0][1].startswith("broker unreachable since ")
    assert said[1] == ("WARNING", f"reconnected to the broker after {42 + BACK_SETTLE_S:.0f} s")
    assert not link.down


def test_a_restarting_broker_that_flaps_is_one_outage(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(1_000.0)
    link = BrokerLink(clock=clock)
    with caplog.at_level(logging.INFO, logger="streams.kafka"):
        link.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
        clock.now += 30
        link.on_stats(stats("UP"))  # the starting broker accepted a connection...
        assert link.down, "one UP is not yet a return"
        clock.now += 1
        link.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
        clock.now += 3
        link.on_stats(stats("UP"))  # ...dropped it, and serves now
        clock.now += BACK_SETTLE_S
        link.on_stats(stats("UP"))
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said
    assert said[0].startswith("broker unreachable since ")
    assert said[1] == f"reconnected to the broker after {34 + BACK_SETTLE_S:.0f} s"


def test_a_message_after_an_outage_means_reconnected(caplog: pytest.LogCaptureFixture) -> None:
    link = BrokerLink(clock=Clock(5.0))
    link.up()  # nothing was down: nothing to say
    with caplog.at_level(logging.INFO, logger="streams.kafka"):
        link.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "down"))
        link.up()
        link.up()
    assert [r.getMessage() for r in caplog.records] == [
        f"broker unreachable since {time.strftime('%H:%M:%S', time.localtime(5.0))} "
        "(down); retrying",
        "reconnected to the broker after 0 s",
    ]


def test_librdkafka_lines_reach_the_python_logger_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    link = BrokerLink()
    config = {"bootstrap.servers": "127.0.0.1:1", "session.timeout.ms": 6000}
    with caplog.at_level(logging.DEBUG, logger=RDKAFKA_LOGGER):
        producer = Producer(link.client_config(config))  # a consumer setting: CONFWARN
        producer.poll(0.2)
        producer.flush(0.1)
    lines = [r for r in caplog.records if r.name == RDKAFKA_LOGGER]
    assert any("CONFWARN" in r.getMessage() for r in lines)
    assert {r.levelno for r in lines} == {logging.DEBUG}


def test_producer_settings_leave_out_what_only_a_consumer_understands() -> None:
    config = {
        "bootstrap.servers": "b:9092",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "group.id": "g",
        "sasl.password": "secret",
    }
    assert producer_settings(config) == {"bootstrap.servers": "b:9092", "sasl.password": "secret"}


def test_a_late_report_from_another_client_after_the_return_is_not_an_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock(1_000.0)
    link = BrokerLink(clock=clock)
    with caplog.at_level(logging.INFO, logger="streams.kafka"):
        link.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
        clock.now += 40
        link.up()  # the consumer got a message
        # The producer of the same link says what it saw a moment ago, then recovers too.
        link.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
        link.up()
        assert not link.down
        # A real outage as quickly after the return is said once the statistics show no
        # broker up.
        link.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
        link.on_stats(stats("TRY_CONNECT"))
    said = [r.getMessage() for r in caplog.records]
    assert [m.split(" since ")[0] for m in said] == [
        "broker unreachable",
        "reconnected to the broker after 40 s",
        "broker unreachable",
    ]
    assert link.down and link.outages == 3


def test_an_outage_met_by_a_start_check_is_left_to_the_check_to_say(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Under load a TLS handshake that will be refused can first report "all brokers down";
    # the check then ends in the refusal's one line, and no "unreachable" line beside it.
    clock = Clock(1_000.0)
    link = BrokerLink(clock=clock)
    with caplog.at_level(logging.INFO, logger="streams.kafka"):
        with link.checking():
            link.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
            clock.now += 2
            link.up()  # the check's broker answered: over, unsaid
        assert caplog.records == []
        clock.now += 60
        link.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith("broker unreachable since "), said


def test_a_zero_count_report_is_an_outage_once_the_statistics_show_no_broker_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A consumer whose broker goes away may report only "0/2 brokers are down" (bootstrap
    # and group coordinator): an exactly-once worker said nothing of a 30 s outage (CI).
    clock = Clock(1_000.0)
    link = BrokerLink(clock=clock)
    with caplog.at_level(logging.INFO, logger="streams.kafka"):
        link.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "0/2 brokers are down"))
        assert link.down and caplog.records == []
        clock.now += 5
        link.on_stats(stats("TRY_CONNECT"))
        clock.now += 30
        link.up()
    said = [r.getMessage() for r in caplog.records]
    assert [m.split(" since ")[0] for m in said] == [
        "broker unreachable",
        "reconnected to the broker after 35 s",
    ]


def test_a_zero_count_report_while_brokers_answer_or_beside_a_refusal_says_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock(1_000.0)
    link = BrokerLink(clock=clock)
    refused = BrokerLink(clock=clock)
    with caplog.at_level(logging.INFO, logger="streams.kafka"):
        link.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "0/2 brokers are down"))
        link.on_stats(stats("UP"))
        clock.now += BACK_SETTLE_S
        link.on_stats(stats("UP"))  # a broker answers: over, unsaid
        # A handshake refused: "0/1 brokers are down" first, then the refusal itself.
        refused.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "0/1 brokers are down"))
        refused.on_error(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication failed"))
        refused.on_stats(stats("TRY_CONNECT"))
    assert caplog.records == []
    assert not link.down and refused.refusal is not None
