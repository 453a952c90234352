"""The `streamfer` command. Settings come from the spec file and the environment."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from streams.dashboard import dashboard_command
from streams.lag import lag_command
from streams.learner import learn_command
from streams.options import BootstrapOpt, RedisOpt, SpecOpt
from streams.rebuild import rebuild_command
from streams.replay import produce_command, train_command
from streams.report import report_command
from streams.spec import Connections, PipelineSpec, SpecError, load_spec

app = typer.Typer(
    help="streamfer: Kafka micro-batches → online features in Redis → ONNX → predictions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="Versioned model registry (sha256-verified, hot-swappable).")
app.add_typer(model_app, name="model")
app.command("produce")(produce_command)
app.command("learn")(learn_command)
app.command("report")(report_command)
app.command("train-offline")(train_command)
app.command("lag")(lag_command)
app.command("dashboard")(dashboard_command)
app.command("rebuild")(rebuild_command)
console = Console(stderr=True)
out = Console()


class UserError(Exception):
    """Something the user can fix; printed without a traceback."""


@contextmanager
def user_errors() -> Iterator[None]:
    from inference.adaptation import SnapshotKeyMissing
    from inference.onnx_model import ModelLoadError
    from streams.stack import StackError
    from streams.topics import BrokerUnreachable

    try:
        yield
    except (
        SpecError,
        UserError,
        BrokerUnreachable,
        StackError,
        ModelLoadError,
        SnapshotKeyMissing,
    ) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


def _spec(path: Path) -> PipelineSpec:
    return load_spec(path)


# -- local stack ---------------------------------------------------------------------------
@app.command()
def up(
    home: Annotated[Path | None, typer.Option(help="state folder [env STREAMFER_HOME]")] = None,
    kafka_port: Annotated[int | None, typer.Option(help="[env STREAMFER_KAFKA_PORT]")] = None,
    redis_port: Annotated[int | None, typer.Option(help="[env STREAMFER_REDIS_PORT]")] = None,
) -> None:
    """Start a local Kafka (KRaft) broker and redis-server on loopback; idempotent."""
    from streams.stack import LocalStack

    with user_errors():
        stack = LocalStack(_stack_config(home, kafka_port, redis_port))
        was_running = stack.status().running
        status = stack.up()
    state = "already running" if was_running else "started"
    console.print(
        f"local stack {state}: kafka pid {status.kafka_pid}, redis pid {status.redis_pid}"
    )
    out.print(f"export STREAMFER_BOOTSTRAP={status.bootstrap_servers}")
    out.print(f"export STREAMFER_REDIS_URL={status.redis_url}")


@app.command()
def down(home: Annotated[Path | None, typer.Option(help="state folder")] = None) -> None:
    """Stop the broker and redis-server that `streamfer up` started here."""
    from streams.stack import LocalStack

    with user_errors():
        LocalStack(_stack_config(home, None, None)).down()
    console.print("local stack stopped")


@app.command()
def status(home: Annotated[Path | None, typer.Option(help="state folder")] = None) -> None:
    """Show whether the local stack runs and where."""
    from streams.stack import LocalStack

    s = LocalStack(_stack_config(home, None, None)).status()
    out.print(
        f"running={s.running} bootstrap={s.bootstrap_servers} redis={s.redis_url} "
        f"kafka_pid={s.kafka_pid} redis_pid={s.redis_pid}"
    )
    if not s.running:
        raise typer.Exit(1)


def _stack_config(home: Path | None, kafka_port: int | None, redis_port: int | None) -> Any:
    from dataclasses import replace

    from streams.stack import StackConfig

    config = StackConfig.from_env()
    changes: dict[str, Any] = {}
    if home is not None:
        changes["home"] = home
    if kafka_port is not None:
        changes["kafka_port"] = kafka_port
    if redis_port is not None:
        changes["redis_port"] = redis_port
    return replace(config, **changes)


# -- the worker ----------------------------------------------------------------------------
@app.command()
def run(
    spec: SpecOpt,
    workers: Annotated[int, typer.Option(min=1, help="worker processes in one consumer group")] = 1,
    eos: Annotated[bool, typer.Option("--eos", help="exactly-once (Kafka transactions)")] = False,
    metrics_host: Annotated[str | None, typer.Option(help="bind address of /metrics")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="port of /metrics (0: any free)")] = None,
    max_events: Annotated[int | None, typer.Option(help="stop after this many events")] = None,
    idle_exit: Annotated[
        float | None, typer.Option(help="stop after this many idle seconds")
    ] = None,
    bootstrap: BootstrapOpt = None,
    redis_url: RedisOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Consume events in micro-batches, compute features, score, publish predictions."""
    from streams.topics import ensure_topics
    from streams.worker import WorkerOptions, run_workers

    _logging(verbose)
    with user_errors():
        pipeline = _spec(spec)
        connections = Connections.from_env(bootstrap=bootstrap, redis_url=redis_url)
        _check_redis(connections)
        ensure_topics(connections, pipeline)
        options = WorkerOptions(
            exactly_once=True if eos else None,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
            max_events=max_events,
            idle_exit_s=idle_exit,
        )
        result = run_workers(spec, connections, options, workers)
    if isinstance(result, int):
        raise typer.Exit(result)
    console.print(
        f"{result.events_in} events, {result.predictions} predictions, "
        f"{result.dead_letters} dead letters, {result.events_per_s:,.0f} events/s"
    )


def _check_redis(connections: Connections) -> None:
    import redis

    try:
        redis.Redis.from_url(connections.redis_url, socket_timeout=5).ping()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise UserError(
            f"no Redis answered at {connections.redis_url} ({exc}). Start the local stack with "
            "`streamfer up`, or set STREAMFER_REDIS_URL."
        ) from None


# -- schemas and models --------------------------------------------------------------------
@app.command()
def schema(
    spec: SpecOpt,
    kind: Annotated[str, typer.Option(help="events | predictions | both")] = "both",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="folder to write to")
    ] = None,
) -> None:
    """Print (or write) the JSON Schemas of the spec's events and predictions."""
    from streams.schema import event_json_schema, prediction_json_schema

    with user_errors():
        pipeline = _spec(spec)
        if kind not in ("events", "predictions", "both"):
            raise UserError("--kind must be events, predictions or both")
        schemas = {
            "events": event_json_schema(pipeline.event, pipeline.name),
            "predictions": prediction_json_schema(pipeline.event, pipeline.name),
        }
        chosen = schemas if kind == "both" else {kind: schemas[kind]}
        if output is not None:
            output.mkdir(parents=True, exist_ok=True)
            for name, body in chosen.items():
                path = output / f"{pipeline.name}.{name}.schema.json"
                path.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
                console.print(f"wrote {path}")
            return
        body = chosen if kind == "both" else chosen[kind]
        sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")


@app.command("demo-model")
def demo_model(
    spec: SpecOpt,
    events: Annotated[int, typer.Option(help="synthetic training events")] = 20_000,
) -> None:
    """Train the demo network on synthetic payments and write it where the spec says."""
    from streams.demo_model import build_demo_model

    with user_errors():
        path = build_demo_model(_spec(spec), n_events=events)
    out.print(f"demo model written to {path}")


@model_app.command("register")
def model_register(
    name: str,
    file: Path,
    registry: Annotated[Path, typer.Option(help="registry root")] = Path(".streamfer/models"),
    activate: Annotated[bool, typer.Option(help="make it the active version")] = True,
) -> None:
    """Add FILE as the next version of NAME (sha256 recorded)."""
    from inference.registry import ModelRegistry, RegistryError

    try:
        ref = ModelRegistry(registry).register(name, file, activate=activate)
    except RegistryError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    out.print(f"{ref.name} v{ref.version} sha256={ref.sha256}{' (active)' if activate else ''}")


@model_app.command("activate")
def model_activate(
    name: str,
    version: str,
    registry: Annotated[Path, typer.Option(help="registry root")] = Path(".streamfer/models"),
) -> None:
    """Point workers at VERSION of NAME; they swap between batches."""
    from inference.onnx_model import ModelIntegrityError
    from inference.registry import ModelRegistry, RegistryError

    try:
        ref = ModelRegistry(registry).activate(name, version)
    except (RegistryError, ModelIntegrityError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    out.print(f"{ref.name} v{ref.version} is active")


@model_app.command("list")
def model_list(
    registry: Annotated[Path, typer.Option(help="registry root")] = Path(".streamfer/models"),
) -> None:
    """Models, versions, hashes and which one is active."""
    from inference.registry import ModelRegistry

    reg = ModelRegistry(registry)
    table = Table("model", "version", "sha256", "active")
    for name in reg.names():
        active = reg.active_version(name)
        for version in reg.versions(name):
            manifest = reg.manifest(name, version)
            table.add_row(
                name, version, manifest["sha256"][:16], "yes" if version == active else ""
            )
    out.print(table)


# -- the demo ------------------------------------------------------------------------------
@app.command()
def demo(
    spec: SpecOpt = Path("examples/card-payments.yaml"),
    events: Annotated[int, typer.Option(help="synthetic events to push through")] = 20_000,
    drift_events: Annotated[
        int,
        typer.Option(
            help="payments of the adaptation stage (the fraud pattern changes halfway); 0 skips it"
        ),
    ] = 16_000,
    adaptive_spec: Annotated[
        Path, typer.Option(help="spec of the adaptation stage (adaptation on, labels topic)")
    ] = Path("examples/card-payments-adaptive.yaml"),
    bootstrap: BootstrapOpt = None,
    redis_url: RedisOpt = None,
) -> None:
    """The whole loop on the local stack: model, produce, score, read back, summarize; then
    adaptation: a concept drift, delayed labels, the learner, River snapshots in the worker."""
    from streams.demo import run_demo
    from streams.demo_adaptation import DemoError, check_adaptive, run_adaptation_demo
    from streams.learner_process import LearnerProcessError

    _logging(False)
    with user_errors():
        pipeline = _spec(spec)
        adaptive = None
        if drift_events > 0:
            adaptive = _spec(adaptive_spec)
            try:
                check_adaptive(adaptive, str(adaptive_spec), drift_events)
            except (DemoError, LearnerProcessError) as exc:
                raise UserError(str(exc)) from None
        connections = Connections.from_env(bootstrap=bootstrap, redis_url=redis_url)
        _check_redis(connections)
        summary = run_demo(pipeline, connections, events, log=console)
    table = Table(title="streamfer demo", show_header=False)
    for key, value in summary.items():
        table.add_row(key, str(value))
    out.print(table)
    if summary.get("events without a prediction", 0):
        raise typer.Exit(1)
    if adaptive is None:
        return
    with user_errors():
        try:
            adapted = run_adaptation_demo(adaptive, connections, drift_events, log=console)
        except (DemoError, LearnerProcessError) as exc:
            raise UserError(str(exc)) from None
    table = Table(title="streamfer demo: adaptation", show_header=False)
    for key, value in adapted.rows():
        table.add_row(key, value)
    out.print(table)


def main() -> None:  # pragma: no cover
    app()
