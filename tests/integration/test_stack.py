"""The real local stack: a Kafka 4 broker and redis-server in a temporary home."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer

from streams.stack.config import PORT_ENVS
from streams.stack.local import LocalStack, StackConfig

pytestmark = pytest.mark.integration


# Ports other stacks on this machine use by convention: the defaults and the `<n>9092` /
# `<n>9093` / `<n>9379` sets of parallel dev stacks. A free one now may be taken by them later.
_CONVENTIONAL = {9092, 9093, 6379} | {
    base + port for base in range(10_000, 60_000, 10_000) for port in (9092, 9093, 9379)
}


def _free_ports(n: int) -> list[int]:
    """`n` distinct ports free now, none of the conventional ones nor the environment's."""
    avoid = _CONVENTIONAL | {
        int(value) for var in PORT_ENVS.values() if (value := os.environ.get(var, "")).isdigit()
    }
    socks: list[socket.socket] = []
    try:
        for _ in range(100 * n):  # bounded: the ephemeral range is far larger than `avoid`
            if len(socks) == n:
                break
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            if sock.getsockname()[1] in avoid:
                sock.close()
            else:
                socks.append(sock)  # held open, so the next bind gets another port
        assert len(socks) == n, "no free ports outside the conventional ones"
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[-1].split()[0] != "Z"


def _pgrep(pattern: str) -> str:
    return subprocess.run(["pgrep", "-af", "--", pattern], capture_output=True, text=True).stdout


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalStack]:
    kafka_port, controller_port, redis_port = _free_ports(3)
    config = StackConfig(
        home=tmp_path / "home",
        kafka_port=kafka_port,
        controller_port=controller_port,
        redis_port=redis_port,
    )
    stack = LocalStack(config)
    try:
        yield stack
    finally:
        stack.down()  # a failing test must not leave processes behind


def _consume_one(bootstrap: str, topic: str, isolation: str) -> bytes:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "isolation.level": isolation,
        }
    )
    try:
        consumer.subscribe([topic])
        for _ in range(60):
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                value = msg.value()
                assert value is not None
                return value
        raise AssertionError(f"nothing consumed from {topic}")
    finally:
        consumer.close()


def test_up_serves_is_idempotent_supports_transactions_and_down_leaves_nothing(
    local: LocalStack,
) -> None:
    status = local.up()
    assert status.running
    assert status.kafka_pid is not None and status.redis_pid is not None
    assert local.status() == status
    assert (local.home / "stack.json").exists()
    home = str(local.home)

    # Plain produce + consume, on an auto-created topic.
    topic = f"plain-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": status.bootstrap_servers})
    producer.produce(topic, b"hello")
    assert producer.flush(30) == 0
    assert _consume_one(status.bootstrap_servers, topic, "read_uncommitted") == b"hello"

    # Redis as the streamfer ACL user (its keys are sf:*); a client without a password is refused.
    client = redis.Redis.from_url(status.redis_url)
    client.set("sf:test", b"v")
    assert client.get("sf:test") == b"v"
    client.close()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=local.config.redis_port, socket_timeout=5).ping()
    assert local.redis_passwords.stat().st_mode & 0o777 == 0o600

    # A second up() keeps the running processes.
    again = local.up()
    assert (again.kafka_pid, again.redis_pid) == (status.kafka_pid, status.redis_pid)
    assert len(_pgrep(f"{home}/kafka/server.properties").splitlines()) == 1
    assert len(_pgrep(f"--dir {home}/redis").splitlines()) == 1

    # Exactly-once output needs transactions.
    tx_topic = f"tx-{uuid.uuid4().hex[:8]}"
    tx = Producer(
        {"bootstrap.servers": status.bootstrap_servers, "transactional.id": f"t-{tx_topic}"}
    )
    tx.init_transactions(60)
    tx.begin_transaction()
    tx.produce(tx_topic, b"committed")
    tx.commit_transaction(60)
    assert _consume_one(status.bootstrap_servers, tx_topic, "read_committed") == b"committed"

    del producer, tx  # close the clients first: no reconnect noise once the broker is gone
    local.down()
    assert not _pid_alive(status.kafka_pid)
    assert not _pid_alive(status.redis_pid)
    assert _pgrep(home) == ""
    assert not local.status().running
    assert not (local.home / "stack.json").exists()


def test_restart_reuses_formatted_storage(local: LocalStack) -> None:
    first = local.up()
    cluster_id = (local.kafka_dir / "cluster.id").read_text()
    local.down()
    second = local.up()
    assert second.running and second.kafka_pid != first.kafka_pid
    assert (local.kafka_dir / "cluster.id").read_text() == cluster_id
    # The Redis passwords are made once per home, not per start.
    assert (second.redis_url, second.redis_admin_url) == (first.redis_url, first.redis_admin_url)
    redis.Redis.from_url(second.redis_url, socket_timeout=5).ping()


def _streamfer(args: list[str], config: StackConfig) -> subprocess.CompletedProcess[str]:
    """`streamfer <args>` as a shell would run it, pointed at `config` by the environment."""
    env = {
        **os.environ,
        "STREAMFER_HOME": str(config.home),
        "STREAMFER_KAFKA_PORT": str(config.kafka_port),
        "STREAMFER_CONTROLLER_PORT": str(config.controller_port),
        "STREAMFER_REDIS_PORT": str(config.redis_port),
    }
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_cli_up_prints_only_the_exports_on_stdout(local: LocalStack) -> None:
    config = local.config
    first = _streamfer(["up"], config)
    assert first.returncode == 0, first.stderr
    running = local.status()  # the Redis URLs carry the passwords this first `up` made
    exports = [
        f"export STREAMFER_BOOTSTRAP={config.bootstrap_servers}",
        f"export STREAMFER_REDIS_URL={running.redis_url}",
        f"export STREAMFER_REDIS_ADMIN_URL={running.redis_admin_url}",
    ]
    assert first.stdout.splitlines() == exports  # what `exports=$(streamfer up)` evaluates
    assert len(first.stderr.splitlines()) == 1, first.stderr  # one status line, no chatter
    assert first.stderr.startswith("local stack started: kafka pid ")

    again = _streamfer(["up"], config)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == exports
    assert again.stderr.startswith("local stack already running: ")

    status = _streamfer(["status"], config)
    assert status.returncode == 0 and status.stdout.startswith("running=True ")

    down = _streamfer(["down"], config)
    assert down.returncode == 0, down.stderr
    assert _streamfer(["status"], config).returncode == 1
