"""`streamfer up | down | status`: the local Kafka (KRaft) broker and redis-server."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from streams.cli.errors import err, out, user_errors

HomeOpt = Annotated[Path | None, typer.Option(help="state folder (env STREAMFER_HOME)")]


def _stack_config(home: Path | None, kafka_port: int | None, redis_port: int | None) -> Any:
    from streams.stack.local import StackConfig

    config = StackConfig.from_env()
    changes: dict[str, Any] = {}
    if home is not None:
        changes["home"] = home
    if kafka_port is not None:
        changes["kafka_port"] = kafka_port
    if redis_port is not None:
        changes["redis_port"] = redis_port
    return replace(config, **changes)


def up(
    home: HomeOpt = None,
    kafka_port: Annotated[int | None, typer.Option(help="(env STREAMFER_KAFKA_PORT)")] = None,
    redis_port: Annotated[int | None, typer.Option(help="(env STREAMFER_REDIS_PORT)")] = None,
) -> None:
    """Start a local Kafka (KRaft) broker and redis-server on loopback; idempotent."""
    from streams.stack.local import LocalStack

    with user_errors():
        stack = LocalStack(_stack_config(home, kafka_port, redis_port))
        was_running = stack.status().running
        status = stack.up()
    state = "already running" if was_running else "started"
    err.print(f"local stack {state}: kafka pid {status.kafka_pid}, redis pid {status.redis_pid}")
    out.print(f"export STREAMFER_BOOTSTRAP={status.bootstrap_servers}")
    out.print(f"export STREAMFER_REDIS_URL={status.redis_url}")


def down(home: HomeOpt = None) -> None:
    """Stop the broker and redis-server that `streamfer up` started here."""
    from streams.stack.local import LocalStack

    with user_errors():
        LocalStack(_stack_config(home, None, None)).down()
    err.print("local stack stopped")


def status(home: HomeOpt = None) -> None:
    """Show whether the local stack runs and where."""
    from streams.stack.local import LocalStack

    s = LocalStack(_stack_config(home, None, None)).status()
    out.print(
        f"running={s.running} bootstrap={s.bootstrap_servers} redis={s.redis_url} "
        f"kafka_pid={s.kafka_pid} redis_pid={s.redis_pid}"
    )
    if not s.running:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(status)
