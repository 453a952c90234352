"""`streamfer run`: the workers of a pipeline."""

from __future__ import annotations

from typing import Annotated

import typer

from streams.cli.errors import user_errors
from streams.cli.options import BootstrapOpt, JsonOpt, NameOpt, RedisOpt, SpecOpt, VerboseOpt
from streams.cli.output import emit_json, err, setup_logging

# `streamfer run` (and the workloads) check Redis before starting workers.
from streams.cli.redis_check import check_redis
from streams.worker.watchdog import DEFAULT_STALL_S

__all__ = ["check_redis", "register", "run"]


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
    instance_id: Annotated[
        str | None,
        typer.Option(
            help="this host's part of the workers' transactional and client ids, unique among "
            "the supervisors of a group (default: $STREAMFER_INSTANCE_ID, else the host name)"
        ),
    ] = None,
    stall_exit: Annotated[
        float,
        typer.Option(
            min=0,
            help="a worker busy this many seconds with no batch finished exits, to be "
            "restarted (0: never; pauses for an unreachable Redis or broker don't count)",
        ),
    ] = DEFAULT_STALL_S,
    name: NameOpt = None,
    as_json: JsonOpt = False,
    bootstrap: BootstrapOpt = None,
    redis_url: RedisOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Consume events in micro-batches, compute features, score, publish predictions."""
    from streams.ops.topics import ensure_topics
    from streams.spec import Connections, load_spec
    from streams.worker.instance import resolve_instance_id
    from streams.worker.supervisor import WorkerOptions, run_workers

    setup_logging(verbose)
    try:
        instance = resolve_instance_id(instance_id)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--instance-id") from None
    with user_errors():
        pipeline = load_spec(spec, prefix=name)
        connections = Connections.from_env(bootstrap=bootstrap, redis_url=redis_url)
        check_redis(connections)
        ensure_topics(connections, pipeline)
        options = WorkerOptions(
            exactly_once=True if eos else None,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
            max_events=max_events,
            idle_exit_s=idle_exit,
            name_prefix=name,
            instance_id=instance,
            stall_exit_s=stall_exit,
        )
        result = run_workers(spec, connections, options, workers)
    if isinstance(result, int):
        raise typer.Exit(result)
    if as_json:
        emit_json(
            {
                "pipeline": pipeline.name,
                "events": result.events_in,
                "predictions": result.predictions,
                "dead_letters": result.dead_letters,
                "late": result.late,
                "replayed": result.replayed,
                "batches": result.batches,
                "aborted_batches": result.aborted_batches,
                "events_per_s": round(result.events_per_s, 1),
                "model_versions": sorted(result.model_versions),
            }
        )
        return
    err.print(
        f"{result.events_in} events, {result.predictions} predictions, "
        f"{result.dead_letters} dead letters, {result.events_per_s:,.0f} events/s"
    )


def register(app: typer.Typer) -> None:
    app.command()(run)
