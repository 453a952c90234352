"""Workloads: `streamfer produce`, `train-offline`, `demo-model` and `demo`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from streams.cli.errors import user_errors
from streams.cli.options import BootstrapOpt, JsonOpt, NameOpt, RedisOpt, SpecOpt
from streams.cli.output import emit_json, err, out, print_rows, setup_logging


def produce(
    spec: SpecOpt,
    synthetic: Annotated[int, typer.Option(help="number of synthetic card-payment events")] = 0,
    seed: Annotated[int, typer.Option(help="generator seed")] = 7,
    rate: Annotated[
        float | None,
        typer.Option(help="events per second of event time [1000 synthetic, 20 CSV/drift]"),
    ] = None,
    drift_at: Annotated[
        int | None, typer.Option(help="event index where the concept (fraud pattern) changes")
    ] = None,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="replay this CSV, one event per row")
    ] = None,
    label_column: Annotated[
        str | None, typer.Option(help="CSV column holding the label (left out of the events)")
    ] = None,
    label_delay: Annotated[
        str | None,
        typer.Option(help="publish each label K rows later (e.g. 1) or after a duration (30s)"),
    ] = None,
    time_column: Annotated[
        str | None, typer.Option(help="CSV column with the event time (default: synthesized)")
    ] = None,
    start_row: Annotated[int, typer.Option(help="skip the rows before this one")] = 0,
    limit: Annotated[int | None, typer.Option(help="read at most this many CSV rows")] = None,
    pace: Annotated[float, typer.Option(help="rows per wall-clock second (0: flat out)")] = 0.0,
    drift_stream: Annotated[
        int, typer.Option(help="N rows of the synthetic abrupt-drift stream (hyperplanes)")
    ] = 0,
    name: NameOpt = None,
    as_json: JsonOpt = False,
    bootstrap: BootstrapOpt = None,
) -> None:
    """Write events to the spec's events topic; with labels, also each label K rows later.

    --synthetic N: card payments (labelled with --label-delay; --drift-at M changes the
    fraud pattern at event M). --csv FILE --label-column COL: any CSV. --drift-stream N:
    River hyperplanes with an abrupt concept change at --drift-at (default N/2).
    """
    from streams.ops.progress import progress_reporter
    from streams.ops.topics import ensure_topics
    from streams.spec import Connections, load_spec
    from streams.workloads.producing import produce_synthetic
    from streams.workloads.replay import LabelDelay, ReplayError, replay, replay_rows
    from streams.workloads.synthetic import CardPayments

    console = err
    with user_errors():
        pipeline = load_spec(spec, prefix=name)
        connections = Connections.from_env(bootstrap=bootstrap)
        labelled = csv_file is not None or drift_stream > 0 or label_delay is not None
        if not labelled:
            if synthetic <= 0:
                raise ReplayError(
                    "say what to produce: --synthetic N, --csv FILE --label-column COL, "
                    "or --drift-stream N"
                )
            ensure_topics(connections, pipeline)
            workload = CardPayments(synthetic, seed=seed, rate=rate or 1000.0, drift_at=drift_at)
            with progress_reporter("produce", synthetic, unit="events", console=console) as bar:
                done = produce_synthetic(connections, pipeline, workload, progress=bar)
            if as_json:
                emit_json(
                    {
                        "events": done.count,
                        "topic": pipeline.topics.events,
                        "seconds": done.seconds,
                        "events_per_s": done.rate,
                    }
                )
            else:
                out.print(
                    f"produced {done.count} events to '{pipeline.topics.events}' "
                    f"in {done.seconds:.1f}s ({done.rate:,.0f} events/s)"
                )
            return
        LabelDelay.parse(label_delay or "1")  # a bad delay fails before any work
        rows = replay_rows(
            pipeline,
            csv_path=csv_file,
            label_column=label_column,
            time_column=time_column,
            rate=rate or (1000.0 if synthetic and csv_file is None else 20.0),
            drift_rows=drift_stream,
            synthetic=synthetic,
            drift_at=drift_at,
            seed=seed,
            limit=limit,
            start_row=start_row,
        )
        with progress_reporter("replay", len(rows), unit="rows", console=console) as bar:
            result = replay(
                pipeline, connections, rows, label_delay=label_delay or "1", pace=pace, progress=bar
            )
    if as_json:
        emit_json(
            {
                "events": result.events,
                "labels": result.labels,
                "topic": pipeline.topics.events,
                "labels_topic": pipeline.topics.labels,
                "seconds": result.seconds,
            }
        )
        return
    out.print(
        f"replayed {result.events} events to '{pipeline.topics.events}' and {result.labels} "
        f"labels to '{pipeline.topics.labels}' in {result.seconds:.1f}s"
    )


def train_offline(
    spec: SpecOpt,
    csv_file: Annotated[Path | None, typer.Option("--csv", help="labelled CSV")] = None,
    label_column: Annotated[str | None, typer.Option(help="CSV column holding the label")] = None,
    drift_stream: Annotated[
        int, typer.Option(help="or: N rows of the synthetic abrupt-drift stream")
    ] = 0,
    drift_at: Annotated[int | None, typer.Option(help="drift stream: row of the change")] = None,
    seed: Annotated[int, typer.Option(help="drift stream seed (as for produce)")] = 7,
    fraction: Annotated[float, typer.Option(help="train on this first share of rows")] = 0.05,
) -> None:
    """Train the spec's offline model (MLP → ONNX, at model.path) on the first rows of a
    labelled replay — the model that later goes stale."""
    from streams.spec import load_spec
    from streams.workloads.replay import (
        ReplayError,
        csv_rows,
        hyperplane_drift_rows,
        train_prefix_model,
    )

    with user_errors():
        pipeline = load_spec(spec)
        if not 0 < fraction < 1:
            raise ReplayError("--fraction must be between 0 and 1, e.g. 0.05")
        if csv_file is not None:
            if not label_column:
                raise ReplayError("--csv needs --label-column")
            rows = csv_rows(csv_file, pipeline, label_column=label_column)
        elif drift_stream > 0:
            at = drift_at if drift_at is not None else drift_stream // 2
            rows = hyperplane_drift_rows(drift_stream, at, spec=pipeline, seed=seed)
        else:
            raise ReplayError(
                "say what to train on: --csv FILE --label-column COL, or --drift-stream N"
            )
        path = train_prefix_model(rows, pipeline, fraction=fraction)
    n = max(int(len(rows) * fraction), 10)
    out.print(
        f"trained on rows 0…{n - 1} of {len(rows)}: {path}\n"
        f"replay the rest with `streamfer produce … --start-row {n}`"
    )


def demo_model(
    spec: SpecOpt,
    events: Annotated[int, typer.Option(help="synthetic training events")] = 20_000,
) -> None:
    """Train the demo network on synthetic payments and write it where the spec says."""
    from streams.spec import load_spec
    from streams.workloads.demo_model import build_demo_model

    with user_errors():
        path = build_demo_model(load_spec(spec), n_events=events)
    out.print(f"demo model written to {path}")


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
    retrain_events: Annotated[
        int,
        typer.Option(
            help="payments of the retraining stage (dataset → train → publish → shadow → "
            "promote, on the adaptive spec); 0 skips it"
        ),
    ] = 10_000,
    as_json: JsonOpt = False,
    bootstrap: BootstrapOpt = None,
    redis_url: RedisOpt = None,
) -> None:
    """The whole loop on the local stack: model, produce, score, read back, summarize; then
    adaptation: a concept drift, delayed labels, the learner, River snapshots in the worker;
    then retraining: dataset → train → publish → shadow → promote."""
    from streams.cli.worker import check_redis
    from streams.spec import Connections, load_spec
    from streams.workloads.demo import run_demo
    from streams.workloads.demo_adaptation import check_adaptive, run_adaptation_demo

    setup_logging(False)
    with user_errors():
        pipeline = load_spec(spec)
        adaptive = None
        if drift_events > 0:
            adaptive = load_spec(adaptive_spec)
            check_adaptive(adaptive, str(adaptive_spec), drift_events)
        connections = Connections.from_env(bootstrap=bootstrap, redis_url=redis_url)
        check_redis(connections)
        summary = run_demo(pipeline, connections, events, log=err)
    if not as_json:
        print_rows("streamfer demo", summary.rows())
    if summary.missing_predictions:
        if as_json:
            emit_json({"throughput": asdict(summary), "adaptation": None})
        raise typer.Exit(1)
    adapted = None
    if adaptive is not None:
        with user_errors():
            adapted = run_adaptation_demo(adaptive, connections, drift_events, log=err)
        if not as_json:
            print_rows("streamfer demo: adaptation", adapted.rows())
    retrained = None
    if adaptive is not None and retrain_events > 0:
        from streams.workloads.demo_retraining import run_retraining_demo

        with user_errors():
            retrained = run_retraining_demo(adaptive, connections, retrain_events, log=err)
        if not as_json:
            print_rows("streamfer demo: retraining", retrained.rows())
    if as_json:
        emit_json(
            {
                "throughput": asdict(summary),
                "adaptation": asdict(adapted) if adapted is not None else None,
                "retraining": asdict(retrained) if retrained is not None else None,
            }
        )


def register(app: typer.Typer) -> None:
    app.command()(produce)
    app.command("train-offline")(train_offline)
    app.command("demo-model")(demo_model)
    app.command()(demo)
