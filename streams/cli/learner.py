"""`streamfer learn` (the faust-streaming learner) and `streamfer report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer

from streams.cli.errors import err, out, setup_logging, user_errors
from streams.cli.options import (
    BootstrapOpt,
    JsonOpt,
    NameOpt,
    RedisOpt,
    SpecOpt,
    VerboseOpt,
)


def learn(
    spec: SpecOpt,
    name: NameOpt = None,
    web_host: Annotated[str, typer.Option(help="bind address of the web views")] = "127.0.0.1",
    web_port: Annotated[
        int, typer.Option(help="port of /adaptation/ and /metrics (0: a free one, printed)")
    ] = 6066,
    idle_exit: Annotated[
        float | None, typer.Option(help="stop after this many seconds without labels")
    ] = None,
    session_timeout: Annotated[
        float,
        typer.Option(
            help="session timeout (s) of the app's group: a restart after a crash "
            "gets its table back once the dead member's session expired"
        ),
    ] = 10.0,
    bootstrap: BootstrapOpt = None,
    redis_url: RedisOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Learn from delayed labels (River, online), publish signed snapshots, watch for drift."""
    import redis
    from redis.exceptions import RedisClusterException
    from rich.markup import escape

    from streams.cli.redis_check import check_redis, redis_failure
    from streams.learner.app import Learner, LearnerOptions
    from streams.spec import Connections, load_spec

    setup_logging(verbose)
    with user_errors():
        pipeline = load_spec(spec, prefix=name)
        connections = Connections.from_env(bootstrap=bootstrap, redis_url=redis_url)
        check_redis(connections)
        try:
            learner = Learner(
                pipeline,
                connections,
                LearnerOptions(
                    web_host=web_host,
                    web_port=web_port,
                    idle_exit_s=idle_exit,
                    session_timeout_s=session_timeout,
                    loglevel="info" if verbose else "warning",
                ),
            )
            err.print(
                f"learning from '{pipeline.topics.labels}' "
                f"(mode {learner.adaptation.mode.value}); web views on "
                f"http://{web_host}:{learner.web_port}/adaptation/"
                + (
                    f"; continuing from snapshot {learner.resumed_from}"
                    if learner.resumed_from
                    else ""
                ),
                highlight=False,
                soft_wrap=True,
            )
            learner.run()
        except (redis.ConnectionError, RedisClusterException) as exc:  # a cluster's nodes all down
            err.print(
                f"[bold red]error:[/] {escape(redis_failure(connections.redis_url, exc))}",
                highlight=False,
            )
            raise typer.Exit(2) from None


def report(
    spec: SpecOpt,
    name: NameOpt = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="PNG path (default: <name>-report.png)")
    ] = None,
    as_json: JsonOpt = False,
    json_file: Annotated[
        Path | None, typer.Option("--json-file", help="also write the report as JSON here")
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="seconds to read each topic to its end offsets")
    ] = 60.0,
    bootstrap: BootstrapOpt = None,
) -> None:
    """Prequential metrics over time: what the workers served (ONNX, River, final) beside the
    learner's own predict-then-learn; a table (or --json) and a PNG plot."""
    from rich.console import Console

    from streams.learner.report import (
        build_report,
        changelog_topic,
        plot_report,
        print_report,
        read_served,
        read_table,
    )
    from streams.spec import Connections, load_spec

    with user_errors():
        pipeline = load_spec(spec, prefix=name)
        connections = Connections.from_env(bootstrap=bootstrap)
        items = read_table(connections, pipeline, timeout_s=timeout)
        served = read_served(connections, pipeline, timeout_s=timeout)
    if not items and not served.joined:
        err.print(
            f"no prequential metrics yet for '{pipeline.name}': topic "
            f"{changelog_topic(pipeline)} is missing or empty and no label of "
            f"{pipeline.topics.labels} matches a prediction in {pipeline.topics.predictions}: "
            "run the pipeline and `streamfer learn` first",
            highlight=False,
        )
        raise typer.Exit(1)
    adaptation = pipeline.adaptation
    rows = build_report(
        items,
        served,
        window_ms=adaptation.metrics_window,
        river_served=adaptation.mode.value != "off",
    )
    title = f"{pipeline.name}: prequential metrics ({adaptation.mode.value} mode)"
    if as_json:
        print(orjson.dumps(rows).decode(), flush=True)
    else:
        # Piped output keeps each row on one line, however wide the table.
        console = out if out.is_terminal else Console(width=10_000, soft_wrap=True)
        print_report(rows, console, title)
    png = plot_report(rows, output or Path(f"{pipeline.name}-report.png"), title)
    err.print(f"plot written to {png}", highlight=False)
    if json_file is not None:
        json_file.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
        err.print(f"report written to {json_file}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(learn)
    app.command()(report)
