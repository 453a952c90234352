"""Operator commands: `streamfer lag`, `streamfer dashboard`, `streamfer rebuild`."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Annotated

import typer

from streams.cli.errors import err, out, user_errors
from streams.cli.options import BootstrapOpt, RedisOpt, SpecOpt


def lag(
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="consumer group (repeatable)")
    ] = None,
    topic: Annotated[
        list[str] | None, typer.Option("--topic", "-t", help="only these topics (repeatable)")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="refresh in place")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    interval: Annotated[
        float, typer.Option(min=0.2, help="seconds between refreshes with --follow")
    ] = 2.0,
    window: Annotated[
        float, typer.Option(min=1.0, help="seconds of readings the rates span with --follow")
    ] = 15.0,
    sample: Annotated[
        float,
        typer.Option(min=0.0, help="without --follow: read twice this many seconds apart"),
    ] = 0.0,
    timeout: Annotated[float, typer.Option(min=0.5, help="seconds to wait for the broker")] = 10.0,
    bootstrap: BootstrapOpt = None,
) -> None:
    """Committed offset, log end, lag, consumption rate and ETA per group and partition.

    Rates need two readings: --follow refreshes every --interval seconds with rates over the
    last --window seconds; a single reading shows them as '?' (null in --json) unless
    --sample S reads twice, S seconds apart. With --follow --json, one JSON document per
    line per refresh.
    """
    import orjson

    from streams.ops.lag import LagReader, LagReport, LagWindow, lag_report, render_report
    from streams.spec import Connections

    with user_errors(), contextlib.suppress(KeyboardInterrupt):
        reader = LagReader(Connections.from_env(bootstrap=bootstrap), timeout_s=timeout)
        groups, topics = group or None, topic or None

        def emit(report: LagReport) -> None:
            if as_json:
                print(orjson.dumps(report.to_json()).decode(), flush=True)
            else:
                out.print(render_report(report))

        if not follow:
            first = reader.snapshot(groups, topics)
            if sample > 0:
                time.sleep(sample)
                emit(lag_report(reader.snapshot(groups, topics), first))
            else:
                emit(lag_report(first, None))
            return
        rates = LagWindow(window)
        if as_json:
            while True:
                emit(rates.push(reader.snapshot(groups, topics)))
                time.sleep(interval)
        from rich.live import Live

        with Live(console=out, auto_refresh=False, screen=False) as live:
            while True:
                live.update(render_report(rates.push(reader.snapshot(groups, topics))))
                live.refresh()
                time.sleep(interval)


def rebuild(
    spec: SpecOpt,
    start: Annotated[
        str,
        typer.Option("--from", help="earliest, or a time (ISO-8601 or epoch ms) to replay from"),
    ] = "earliest",
    group: Annotated[
        str | None, typer.Option("--group", "-g", help="worker consumer group (default: spec's)")
    ] = None,
    wipe: Annotated[
        bool,
        typer.Option(help="delete the namespace's feature keys first (--no-wipe keeps them)"),
    ] = True,
    force: Annotated[
        bool, typer.Option("--force", help="rebuild even while the group has members")
    ] = False,
    bootstrap: BootstrapOpt = None,
    redis_url: RedisOpt = None,
) -> None:
    """Rebuild the Redis feature state from the events topic, up to the workers' commits.

    Stop the workers first (or leave them paused on lost feature state, which they detect);
    they continue from their committed offsets on the rebuilt state.
    """
    import redis
    from redis.exceptions import RedisClusterException
    from rich.markup import escape

    from streams.cli.redis_check import check_redis, redis_failure
    from streams.ops.progress import progress_reporter
    from streams.ops.rebuild import RebuildPlan, parse_start, rebuild_state
    from streams.spec import Connections, load_spec

    connections = Connections.from_env(bootstrap=bootstrap, redis_url=redis_url)
    with user_errors():
        pipeline = load_spec(spec)
        chosen = parse_start(start)
        check_redis(connections)
    try:
        with user_errors(), progress_reporter("rebuild", None, unit="events", console=err) as bar:

            def announce(plan: RebuildPlan) -> None:
                bar.update(0, total=plan.total)
                err.print(
                    f"replaying {plan.total:,} offsets of '{plan.topic}' "
                    f"({len(plan.ranges)} partitions) up to group '{plan.group}'s commits "
                    f"into Redis namespace '{pipeline.namespace}'",
                    highlight=False,
                )

            result = rebuild_state(
                pipeline,
                connections,
                group=group,
                start=chosen,
                wipe=wipe,
                force=force,
                progress=bar,
                on_plan=announce,
            )
    except (redis.RedisError, RedisClusterException) as exc:  # a cluster's nodes all down
        why = escape(redis_failure(connections.redis_url, exc))
        err.print(f"[bold red]error:[/] {why}", highlight=False)
        raise typer.Exit(2) from None
    out.print(
        f"rebuilt namespace '{pipeline.namespace}': {result.events:,} events replayed "
        f"({result.late:,} late), {result.dead_letters:,} skipped as dead letters, "
        f"{result.deleted_keys:,} stale keys deleted, in {result.seconds:.1f}s",
        highlight=False,
    )


def dashboard(
    spec: Annotated[
        Path | None, typer.Option("--spec", "-s", help="pipeline spec: its group and /metrics")
    ] = None,
    host: Annotated[str, typer.Option(help="bind address (keep 127.0.0.1 unless needed)")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="port (0: any free)")] = 8050,
    targets: Annotated[
        str | None,
        typer.Option(help="comma-separated /metrics URLs (default: the spec's workers)"),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="with -s and no --targets: workers of `run --workers`")
    ] = 1,
    group: Annotated[
        list[str] | None,
        typer.Option("--group", "-g", help="consumer groups to chart (default: discovered)"),
    ] = None,
    interval: Annotated[float, typer.Option(min=0.2, help="seconds between refreshes")] = 1.0,
    bootstrap: BootstrapOpt = None,
) -> None:
    """Live charts in the browser: lag, throughput, latency, dead letters, batch sizes,
    model and adaptation versions, prequential metrics, drift alerts."""
    import asyncio

    from streams.ops.dashboard.collector import DashboardConfig
    from streams.ops.dashboard.server import DashboardServer, default_targets
    from streams.spec import Connections, load_spec

    with user_errors():
        pipeline = load_spec(spec) if spec is not None else None
    urls = tuple(u.strip() for u in (targets or "").split(",") if u.strip())
    config = DashboardConfig(
        targets=urls or default_targets(pipeline, workers),
        connections=Connections.from_env(bootstrap=bootstrap),
        groups=tuple(group or ()),
        spec=pipeline,
        interval_s=interval,
    )
    if pipeline is not None and not config.targets:
        err.print(
            f"note: {spec} sets metrics.port 0 (a free port per worker), so its /metrics "
            "cannot be guessed: pass --targets with the URLs `streamfer run` printed; "
            "charting lag only"
        )
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning:[/] serving on {host}: anyone who can reach it sees it")

    async def serve() -> None:
        server = DashboardServer(config)
        bound = await server.start(host, port)
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        err.print(f"dashboard on http://{shown}:{bound}/ (Ctrl-C stops it)")
        for url in config.targets:
            err.print(f"  scraping {url}", highlight=False)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


def register(app: typer.Typer) -> None:
    app.command()(lag)
    app.command()(dashboard)
    app.command()(rebuild)
