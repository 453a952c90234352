"""What the local stack is asked to be: home, ports and Kafka version, read from the environment.

Pure values and their validation, shared by the CLI (help texts, overrides) and `LocalStack`;
nothing here looks for binaries or touches processes.
"""

from __future__ import annotations

import base64
import os
import re
import string
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

DEFAULT_KAFKA_VERSION = "4.1.1"
LOCALHOST = "127.0.0.1"

# The variables `StackConfig.from_env` reads, named once so that error messages and the
# CLI's help texts cannot drift from what is actually read.
HOME_ENV = "STREAMFER_HOME"
KAFKA_PORT_ENV = "STREAMFER_KAFKA_PORT"
CONTROLLER_PORT_ENV = "STREAMFER_CONTROLLER_PORT"
REDIS_PORT_ENV = "STREAMFER_REDIS_PORT"
REDIS_TLS_PORT_ENV = "STREAMFER_REDIS_TLS_PORT"
KAFKA_SECURE_PORT_ENV = "STREAMFER_KAFKA_SECURE_PORT"
# `streamfer up --redis-cluster N`: the first node's port; the others, TLS and bus follow it.
REDIS_CLUSTER_PORT_ENV = "STREAMFER_REDIS_CLUSTER_PORT"
KAFKA_VERSION_ENV = "STREAMFER_KAFKA_VERSION"
KAFKA_HOME_ENV = "KAFKA_HOME"
PORT_ENVS = {
    "kafka_port": KAFKA_PORT_ENV,
    "controller_port": CONTROLLER_PORT_ENV,
    "redis_port": REDIS_PORT_ENV,
    "redis_tls_port": REDIS_TLS_PORT_ENV,
    "kafka_secure_port": KAFKA_SECURE_PORT_ENV,
}

_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:[.-][0-9A-Za-z.-]+)?$")


class StackError(Exception):
    """A user-facing failure of the local stack: names what is wrong and how to fix it."""


def parse_port(name: str, raw: str) -> int:
    """`raw` as a TCP port; a StackError naming the variable `name` otherwise."""
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise StackError(f"{name}={raw!r} is not a port number: set it to an integer 1-65535")
    return port


@dataclass(frozen=True)
class StackConfig:
    """Where the stack keeps its state, the ports it listens on and the Kafka it runs."""

    home: Path = Path(".streamfer")
    kafka_port: int = 9092
    controller_port: int = 9093
    redis_port: int = 6379
    redis_tls_port: int = 6380  # opened by `streamfer up --secure` only
    kafka_secure_port: int = 9094  # the SASL_SSL listener, with `streamfer up --secure` only
    kafka_home: Path | None = None
    kafka_version: str = DEFAULT_KAFKA_VERSION
    # `streamfer up --secure`: also the TLS/SASL listeners (Kafka SASL_SSL, Redis TLS port)
    secure: bool = False
    # `streamfer up --redis-cluster N`: N cluster primaries instead of the single Redis
    redis_cluster: int = 0
    redis_cluster_port: int = 7000  # ports from here: clients, then TLS, then the bus
    # `--redis-replicas R`: R replicas per cluster primary (failover), with --redis-cluster
    redis_replicas: int = 0

    def __post_init__(self) -> None:
        ports = {name: getattr(self, name) for name in PORT_ENVS}
        for name, port in ports.items():
            if not 1 <= port <= 65535:
                raise StackError(f"{name}={port} is not a port number (1-65535)")
        if len(set(ports.values())) != len(ports):
            given = ", ".join(f"{name}={port}" for name, port in ports.items())
            raise StackError(
                f"the stack's ports must differ, got {given}: set {', '.join(PORT_ENVS.values())} "
                f"(or the matching `streamfer up` options) to {len(ports)} different ports"
            )
        match = _VERSION_RE.match(self.kafka_version)
        if match is None or int(match.group(1)) < 4:
            raise StackError(
                f"kafka_version={self.kafka_version!r} is not a Kafka 4.x+ version "
                f"(e.g. {DEFAULT_KAFKA_VERSION}): set {KAFKA_VERSION_ENV} accordingly"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackConfig:
        """Build the config from STREAMFER_* and KAFKA_HOME variables; unset or empty = default."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        kwargs: dict[str, object] = {}
        if (home := get(HOME_ENV)) is not None:
            kwargs["home"] = Path(home).expanduser()
        for key, var in PORT_ENVS.items():
            if (raw := get(var)) is not None:
                kwargs[key] = parse_port(var, raw)
        if (cluster_port := get(REDIS_CLUSTER_PORT_ENV)) is not None:
            kwargs["redis_cluster_port"] = parse_port(REDIS_CLUSTER_PORT_ENV, cluster_port)
        if (kafka_home := get(KAFKA_HOME_ENV)) is not None:
            kwargs["kafka_home"] = Path(kafka_home).expanduser()
        if (version := get(KAFKA_VERSION_ENV)) is not None:
            kwargs["kafka_version"] = version
        return cls(**kwargs)  # type: ignore[arg-type]

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOCALHOST}:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://{LOCALHOST}:{self.redis_port}/0"


@dataclass(frozen=True)
class StackStatus:
    """What `status()` and `up()` report; `running` only when both services serve."""

    running: bool
    bootstrap_servers: str
    redis_url: str  # as the `streamfer` ACL user, password included: print it redacted
    kafka_pid: int | None
    redis_pid: int | None
    redis_admin_url: str = ""  # as the `admin` ACL user (all commands)
    secure_redis_url: str | None = None  # rediss://, with `streamfer up --secure`
    redis_cluster_pids: tuple[int, ...] = ()  # `--redis-cluster N`: every node; redis_pid: seed


def shipped_file(name: str) -> str:
    """The text of a file shipped in `streams/stack/kafka/` (package data)."""
    return resources.files("streams.stack").joinpath(f"kafka/{name}").read_text("utf-8")


def render_server_properties(
    config: StackConfig, data_dir: Path, keystore: Path | None = None
) -> str:
    """The broker's server.properties: the shipped template with this config's ports, and
    the SASL_SSL listener (TLS key and certificates from `keystore`) when one is given."""
    secure = f",SASL_SSL://{LOCALHOST}:{config.kafka_secure_port}"
    text = string.Template(shipped_file("server.properties")).substitute(
        kafka_port=config.kafka_port,
        controller_port=config.controller_port,
        data_dir=str(data_dir),
        secure_listener="" if keystore is None else secure,
    )
    if keystore is None:
        return text
    return text + string.Template(shipped_file("secure.properties")).substitute(
        keystore=str(keystore)
    )


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (22 chars)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):  # Kafka's own generator avoids these too
            return cluster_id


def properties_settings(properties: str) -> list[str]:
    """The setting lines of a .properties text, without comments and blank lines: what a
    running broker's config is compared by, so a reworded comment changes nothing."""
    return [
        line.strip() for line in properties.splitlines() if line.strip()[:1] not in ("", "#", "!")
    ]
