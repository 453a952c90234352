"""The local stack's config, prerequisites and process identity, without starting services."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from streams.stack.config import new_cluster_id, render_server_properties
from streams.stack.discovery import kafka_cache_dir, kafka_classpath
from streams.stack.local import LocalStack, StackConfig, StackError


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(home: Path) -> StackConfig:
    return StackConfig(
        home=home, kafka_port=_free_port(), controller_port=_free_port(), redis_port=_free_port()
    )


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding only the binaries a test links in, and an empty jar cache."""
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", str(path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return path


def _link(bin_dir: Path, name: str) -> None:
    real = shutil.which(name, path="/usr/local/bin:/usr/bin:/bin")
    assert real is not None, f"{name} must be installed for this test"
    (bin_dir / name).symlink_to(real)


def test_defaults() -> None:
    config = StackConfig.from_env({})
    assert config == StackConfig()
    assert config.bootstrap_servers == "127.0.0.1:9092"
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    assert config.kafka_version.startswith("4.")


def test_from_env_reads_every_variable() -> None:
    config = StackConfig.from_env(
        {
            "STREAMFER_HOME": "/tmp/sf",
            "STREAMFER_KAFKA_PORT": "19092",
            "STREAMFER_CONTROLLER_PORT": " 19093 ",
            "STREAMFER_REDIS_PORT": "16379",
            "KAFKA_HOME": "/opt/kafka",
            "STREAMFER_KAFKA_VERSION": "4.0.0",
        }
    )
    assert config == StackConfig(
        home=Path("/tmp/sf"),
        kafka_port=19092,
        controller_port=19093,
        redis_port=16379,
        kafka_home=Path("/opt/kafka"),
        kafka_version="4.0.0",
    )
    assert config.bootstrap_servers == "127.0.0.1:19092"
    assert config.redis_url == "redis://127.0.0.1:16379/0"


def test_from_env_empty_values_mean_default() -> None:
    assert StackConfig.from_env({"STREAMFER_KAFKA_PORT": "", "KAFKA_HOME": ""}) == StackConfig()


@pytest.mark.parametrize("raw", ["abc", "0", "70000", "-1"])
def test_from_env_bad_port_names_the_variable(raw: str) -> None:
    with pytest.raises(StackError, match="STREAMFER_REDIS_PORT"):
        StackConfig.from_env({"STREAMFER_REDIS_PORT": raw})


def test_ports_must_differ_and_the_error_names_the_variables() -> None:
    with pytest.raises(StackError, match="ports must differ") as info:
        StackConfig(kafka_port=9092, controller_port=9092)
    for var in ("STREAMFER_KAFKA_PORT", "STREAMFER_CONTROLLER_PORT", "STREAMFER_REDIS_PORT"):
        assert var in str(info.value)


@pytest.mark.parametrize("version", ["3.9.0", "latest", "4"])
def test_kafka_version_must_be_4x(version: str) -> None:
    with pytest.raises(StackError, match="STREAMFER_KAFKA_VERSION"):
        StackConfig.from_env({"STREAMFER_KAFKA_VERSION": version})


def test_server_properties_single_node_with_transactions(tmp_path: Path) -> None:
    config = StackConfig(kafka_port=19092, controller_port=19093)
    props = dict(
        line.split("=", 1)
        for line in render_server_properties(config, tmp_path / "data").splitlines()
        if line and not line.startswith("#")
    )
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["log.dirs"] == str(tmp_path / "data")
    for key, value in {
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.partitions": "4",
        "auto.create.topics.enable": "true",
    }.items():
        assert props[key] == value, key
    assert "message.max.bytes" not in props


def test_jar_cache_follows_xdg_cache_home() -> None:
    assert kafka_cache_dir("4.1.1", {"XDG_CACHE_HOME": "/c"}) == Path("/c/streamfer/kafka-4.1.1")


def test_cluster_id_is_kraft_shaped() -> None:
    ids = {new_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_missing_java_says_how_to_install(tmp_path: Path, bin_dir: Path) -> None:
    _link(bin_dir, "redis-server")
    with pytest.raises(StackError, match=r"java 17\+ not found.*apt-get install openjdk-17"):
        LocalStack(_config(tmp_path / "home")).up()


def test_old_java_is_refused(tmp_path: Path, bin_dir: Path) -> None:
    fake = bin_dir / "java"
    fake.write_text("#!/bin/sh\necho 'openjdk version \"1.8.0_392\"' >&2\n")
    fake.chmod(0o755)
    with pytest.raises(StackError, match=r"Java 8.*openjdk-17"):
        LocalStack(_config(tmp_path / "home")).up()


def test_missing_redis_server_says_how_to_install(tmp_path: Path, bin_dir: Path) -> None:
    _link(bin_dir, "java")
    with pytest.raises(StackError, match="redis-server not found: apt-get install redis-server"):
        LocalStack(_config(tmp_path / "home")).up()


def test_missing_mvn_only_matters_without_cached_jars(tmp_path: Path, bin_dir: Path) -> None:
    _link(bin_dir, "java")
    _link(bin_dir, "redis-server")
    with pytest.raises(StackError, match=r"mvn not found.*apt-get install maven.*KAFKA_HOME"):
        LocalStack(_config(tmp_path / "home")).up()
    assert not (tmp_path / "home" / "redis" / "redis.pid").exists()  # nothing was started


def test_kafka_home_without_jars_is_explained(tmp_path: Path) -> None:
    config = StackConfig(kafka_home=tmp_path / "not-kafka")
    with pytest.raises(StackError, match=r"KAFKA_HOME=.*libs/kafka_2\.13"):
        kafka_classpath(config)


def test_kafka_home_libs_are_used(tmp_path: Path) -> None:
    libs = tmp_path / "kafka" / "libs"
    libs.mkdir(parents=True)
    (libs / "kafka_2.13-4.1.1.jar").touch()
    assert kafka_classpath(StackConfig(kafka_home=tmp_path / "kafka")) == f"{libs}/*"


def test_port_taken_by_someone_else_names_port_and_variable(tmp_path: Path) -> None:
    config = _config(tmp_path / "home")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", config.redis_port))
        squatter.listen()
        with pytest.raises(
            StackError, match=rf"port {config.redis_port} .*in use.*STREAMFER_REDIS_PORT"
        ):
            LocalStack(config).up()


@pytest.fixture
def stranger() -> Iterator[int]:
    """An unrelated live process, standing in for a pid the OS reused."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_reused_pid_is_not_ours_and_is_never_signalled(tmp_path: Path, stranger: int) -> None:
    local = LocalStack(_config(tmp_path / "home"))
    for pid_file in (local.kafka.pid_file, local.redis.pid_file):
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(f"{stranger}\n")
    status = local.status()
    assert (status.running, status.kafka_pid, status.redis_pid) == (False, None, None)
    local.down()
    os.kill(stranger, 0)  # still alive
    assert not local.kafka.pid_file.exists()
    assert not local.redis.pid_file.exists()


def test_status_of_a_fresh_home_is_cheap_and_down(tmp_path: Path) -> None:
    status = LocalStack(_config(tmp_path / "never-started")).status()
    assert not status.running
    assert not (tmp_path / "never-started").exists()


def test_a_running_broker_is_judged_by_its_settings_not_its_comments(tmp_path: Path) -> None:
    local = LocalStack(_config(tmp_path / "home"))
    rendered = render_server_properties(local.config, local.kafka_dir / "data")
    local.kafka_dir.mkdir(parents=True)
    local.server_properties.write_text("# written by an older streamfer\n\n" + rendered)
    local._check_running_kafka_config()  # same settings: kept
    ports = (local.config.kafka_port, local.config.controller_port, local.config.redis_port)
    other = replace(local.config, kafka_port=min(ports) - 1)  # differs from all three
    local.server_properties.write_text(render_server_properties(other, local.kafka_dir / "data"))
    with pytest.raises(StackError, match=r"other settings.*streamfer down"):
        local._check_running_kafka_config()
