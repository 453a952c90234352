"""`streamfer lag` against the real broker: a group that stopped mid-topic."""

from __future__ import annotations

import orjson
import pytest
import typer
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from typer.testing import CliRunner

from streams.cli.ops import lag

pytestmark = pytest.mark.integration


def cli() -> typer.Typer:
    """`streamfer lag` as the lead registers it (a one-command app takes no name)."""
    app = typer.Typer()
    app.command("lag")(lag)
    return app


@pytest.fixture
def stopped_group(conn, unique):
    """Topic with 3 partitions; the group committed mid-way on p0, at the end of p1, and
    nothing on p2. Returns (topic, group, {partition: (committed or None, log end)})."""
    topic, group = f"lag-{unique}", f"lag-group-{unique}"
    admin = AdminClient(conn.kafka_config())
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=-1)])[topic].result()
    producer = Producer(conn.kafka_config())
    sizes = {0: 120, 1: 45, 2: 30}
    for partition, n in sizes.items():
        for i in range(n):
            producer.produce(topic, f"m{i}".encode(), partition=partition)
    assert producer.flush(30) == 0
    consumer = Consumer(conn.kafka_config(**{"group.id": group, "enable.auto.commit": False}))
    consumer.commit(
        offsets=[TopicPartition(topic, 0, 37), TopicPartition(topic, 1, 45)], asynchronous=False
    )
    consumer.close()
    return topic, group, {0: (37, 120), 1: (45, 45), 2: (None, 30)}


def test_json_lag_is_log_end_minus_committed_for_every_partition(stopped_group):
    topic, group, truth = stopped_group
    result = CliRunner().invoke(cli(), ["--group", group, "--json"])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.output)
    [found] = report["groups"]
    assert found["group"] == group and found["state"] == "empty" and found["members"] == 0
    rows = {p["partition"]: p for p in found["partitions"] if p["topic"] == topic}
    assert set(rows) == {0, 1, 2}
    for partition, (committed, log_end) in truth.items():
        row = rows[partition]
        assert row["committed"] == committed and row["log_end"] == log_end
        # With nothing committed, all that is retained is ahead (log start is 0 here).
        assert row["lag"] == log_end - (committed if committed is not None else 0)
        assert row["consume_rate"] is None  # one reading: no rate
        assert row["eta_s"] == (0.0 if row["lag"] == 0 else None)
    assert found["lag"] == sum(end - (c or 0) for c, end in truth.values())
    assert report["rate_window_s"] is None


def test_human_output_shows_the_same_numbers(stopped_group):
    topic, group, truth = stopped_group
    result = CliRunner().invoke(cli(), ["--topic", topic], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"group {group} (empty, 0 members)" in result.output
    lines = [line.replace("│", " ").split() for line in result.output.splitlines()]
    rows = {cells[1]: cells[2:5] for cells in lines if len(cells) >= 5 and cells[0] == topic}
    assert rows == {
        str(p): ["-" if c is None else str(c), str(end), str(end - (c or 0))]
        for p, (c, end) in truth.items()
    }
    total = next(cells for cells in lines if cells and cells[0] == "total")
    assert total[1] == str(sum(end - (c or 0) for c, end in truth.values()))


def test_two_readings_give_rates_and_eta(stopped_group):
    _topic, group, _truth = stopped_group
    result = CliRunner().invoke(cli(), ["--group", group, "--json", "--sample", "1"])
    assert result.exit_code == 0, result.output
    [found] = orjson.loads(result.output)["groups"]
    assert found["consume_rate"] == 0.0 and found["produce_rate"] == 0.0
    assert found["eta_s"] is None  # lag, and nobody consuming: never catches up


def test_unreachable_broker_is_a_message_not_a_traceback(monkeypatch):
    monkeypatch.setenv("STREAMFER_BOOTSTRAP", "127.0.0.1:1")
    result = CliRunner().invoke(cli(), ["--json", "--timeout", "2"])
    assert result.exit_code == 2
    assert "no Kafka broker answered" in result.output
