"""`streamfer up | down | status`: the local Kafka (KRaft) broker and redis-server.

Options override the environment that `StackConfig.from_env` reads (the one reader of those
variables, so values and errors are the same either way); each help text names its variable
in parentheses, since Rich markup would swallow square brackets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from streams.cli.errors import err, out, user_errors
from streams.security.redaction import redact_url
from streams.stack.config import (
    CONTROLLER_PORT_ENV,
    HOME_ENV,
    KAFKA_PORT_ENV,
    KAFKA_SECURE_PORT_ENV,
    PORT_ENVS,
    REDIS_CLUSTER_PORT_ENV,
    REDIS_PORT_ENV,
    REDIS_TLS_PORT_ENV,
    StackConfig,
    StackError,
)

_DEFAULT = StackConfig()
# The variable each option overrides, by StackConfig field.
_OPTION_ENVS = {"home": HOME_ENV, **PORT_ENVS}


def _port_option(flag: str, what: str, env: str, default: int) -> typer.models.OptionInfo:
    # No min/max here: Typer would show the range beside the flag, narrowing the help column
    # until Rich cuts the variable names; stack_config checks the range instead.
    return typer.Option(flag, help=f"{what} on 127.0.0.1 (env {env}, default {default})")


HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help=f"state folder: data, logs, pid files (env {HOME_ENV}, default {_DEFAULT.home})",
    ),
]
KafkaPortOpt = Annotated[
    int | None,
    _port_option("--kafka-port", "Kafka broker port", KAFKA_PORT_ENV, _DEFAULT.kafka_port),
]
ControllerPortOpt = Annotated[
    int | None,
    _port_option(
        "--controller-port",
        "KRaft controller port",
        CONTROLLER_PORT_ENV,
        _DEFAULT.controller_port,
    ),
]
RedisPortOpt = Annotated[
    int | None,
    _port_option("--redis-port", "redis-server port", REDIS_PORT_ENV, _DEFAULT.redis_port),
]
KafkaSecurePortOpt = Annotated[
    int | None,
    _port_option(
        "--kafka-secure-port",
        "Kafka SASL_SSL listener port, with --secure",
        KAFKA_SECURE_PORT_ENV,
        _DEFAULT.kafka_secure_port,
    ),
]
SecureOpt = Annotated[
    bool,
    typer.Option(
        "--secure",
        help="also a Kafka SASL_SSL listener (SCRAM-SHA-512) and Redis TLS; prints "
        "STREAMFER_SECURE_* too",
    ),
]
RedisTlsPortOpt = Annotated[
    int | None,
    _port_option(
        "--redis-tls-port",
        "redis-server TLS port, with --secure",
        REDIS_TLS_PORT_ENV,
        _DEFAULT.redis_tls_port,
    ),
]
RedisClusterOpt = Annotated[
    int,
    typer.Option(
        "--redis-cluster",
        help="N Redis Cluster primaries (N >= 3) instead of the single redis-server, ports "
        f"from env {REDIS_CLUSTER_PORT_ENV} (default {_DEFAULT.redis_cluster_port})",
    ),
]

RedisReplicasOpt = Annotated[
    int,
    typer.Option(
        "--redis-replicas",
        help="with --redis-cluster: R replicas per primary (failover; the URL then asks the "
        "feature store to wait for them, ?replicas=R)",
    ),
]


def stack_config(
    environ: Mapping[str, str] | None = None,
    *,
    home: Path | None = None,
    kafka_port: int | None = None,
    controller_port: int | None = None,
    redis_port: int | None = None,
    redis_tls_port: int | None = None,
    kafka_secure_port: int | None = None,
) -> StackConfig:
    """The environment's StackConfig with the options given on the command line on top."""
    env = os.environ if environ is None else environ
    given = {
        name: value
        for name, value in (
            ("home", home),
            ("kafka_port", kafka_port),
            ("controller_port", controller_port),
            ("redis_port", redis_port),
            ("redis_tls_port", redis_tls_port),
            ("kafka_secure_port", kafka_secure_port),
        )
        if value is not None
    }
    for name, value in given.items():
        if name in PORT_ENVS and not 1 <= value <= 65535:
            flag = "--" + name.replace("_", "-")
            raise StackError(f"{flag} {value} is not a port number: give an integer 1-65535")
    # A variable an option overrides is not read, so its (maybe bad) value cannot fail us.
    overridden = {_OPTION_ENVS[name] for name in given}
    config = StackConfig.from_env({k: v for k, v in env.items() if k not in overridden})
    return replace(config, **given)


def up(
    home: HomeOpt = None,
    kafka_port: KafkaPortOpt = None,
    controller_port: ControllerPortOpt = None,
    redis_port: RedisPortOpt = None,
    redis_tls_port: RedisTlsPortOpt = None,
    kafka_secure_port: KafkaSecurePortOpt = None,
    secure: SecureOpt = False,
    redis_cluster: RedisClusterOpt = 0,
    redis_replicas: RedisReplicasOpt = 0,
) -> None:
    """Start a local Kafka (KRaft) broker and redis-server on loopback; idempotent.

    Prints the two `export` lines that point streamfer at them: `eval "$(streamfer up)"`.
    With --redis-cluster N, a local N-primary Redis Cluster replaces the redis-server; the
    URLs then name its first node, and clients find the others from it. --redis-replicas R
    gives each primary R replicas, which take over a primary that fails.
    """
    from streams.stack.local import LocalStack

    with user_errors():
        config = stack_config(
            home=home,
            kafka_port=kafka_port,
            controller_port=controller_port,
            redis_port=redis_port,
            redis_tls_port=redis_tls_port,
            kafka_secure_port=kafka_secure_port,
        )
        if redis_replicas and not redis_cluster:
            raise StackError("--redis-replicas needs --redis-cluster N (replicas of its primaries)")
        stack = LocalStack(
            replace(
                config,
                secure=secure,
                redis_cluster=redis_cluster,
                redis_replicas=redis_replicas,
            )
        )
        was_running = stack.status().running
        status = stack.up()
        secure_kafka = stack.secure_kafka()
    state = "already running" if was_running else "started"
    redis = f"redis pid {status.redis_pid}"
    if status.redis_cluster_pids:
        redis = f"redis cluster pids {', '.join(map(str, status.redis_cluster_pids))}"
    err.print(f"local stack {state}: kafka pid {status.kafka_pid}, {redis}")
    out.print(f"export STREAMFER_BOOTSTRAP={status.bootstrap_servers}")
    # Redis as the `streamfer` ACL user, and as `admin` for tests and operators' admin work.
    out.print(f"export STREAMFER_REDIS_URL={status.redis_url}")
    out.print(f"export STREAMFER_REDIS_ADMIN_URL={status.redis_admin_url}")
    if status.secure_redis_url is not None:
        out.print(f"export STREAMFER_SECURE_REDIS_URL={status.secure_redis_url}")
    if secure_kafka is not None:  # the SASL_SSL listener and its SCRAM user
        for line in secure_kafka.export_lines():
            out.print(line, highlight=False, markup=False)


def down(home: HomeOpt = None) -> None:
    """Stop the broker and redis-server (or cluster) that `streamfer up` started here."""
    from streams.stack.local import LocalStack

    with user_errors():
        LocalStack(stack_config(home=home)).down()
    err.print("local stack stopped")


def status(home: HomeOpt = None) -> None:
    """Show whether the local stack of this home runs and where; exit status 1 when not."""
    from streams.stack.local import LocalStack

    with user_errors():
        s = LocalStack(stack_config(home=home)).status()
    cluster = ""
    if s.redis_cluster_pids:
        cluster = f" redis_cluster_pids={','.join(map(str, s.redis_cluster_pids))}"
    out.print(
        f"running={s.running} bootstrap={s.bootstrap_servers} redis={redact_url(s.redis_url)} "
        f"kafka_pid={s.kafka_pid} redis_pid={s.redis_pid}{cluster}"
    )
    if not s.running:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(status)
