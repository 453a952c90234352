"""`streamfer dataset`: a point-in-time-correct training set from what was scored."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from streams.cli.errors import UserError, err, out, user_errors
from streams.cli.options import BootstrapOpt, SpecOpt


def dataset(
    spec: SpecOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet file to write")],
    since: Annotated[
        str | None,
        typer.Option(help="first event time: epoch ms, ISO 8601, or a duration ago (7d)"),
    ] = None,
    until: Annotated[str | None, typer.Option(help="end event time (excluded), same forms")] = None,
    unlabelled: Annotated[
        bool, typer.Option("--unlabelled", help="keep events without a label (label null)")
    ] = False,
    timeout: Annotated[float, typer.Option(min=1.0, help="seconds to read each topic")] = 120.0,
    bootstrap: BootstrapOpt = None,
) -> None:
    """Join the logged feature vectors (topics.features) with their labels and served
    scores into Parquet: every row holds the features exactly as they scored its event.
    Columns: docs/retraining.md."""
    from streams.ops.dataset import DatasetError, parse_time_ms, write_dataset
    from streams.ops.progress import progress_reporter
    from streams.spec import Connections, load_spec

    connections = Connections.from_env(bootstrap=bootstrap)
    with user_errors():
        pipeline = load_spec(spec)
        now_ms = int(time.time() * 1000)
        try:
            since_ms = parse_time_ms(since, now_ms) if since is not None else None
            until_ms = parse_time_ms(until, now_ms) if until is not None else None
            with progress_reporter("dataset", 3, unit="topics", console=err) as bar:
                summary = write_dataset(
                    pipeline,
                    connections,
                    output,
                    since_ms=since_ms,
                    until_ms=until_ms,
                    unlabelled=unlabelled,
                    timeout_s=timeout,
                    progress=bar,
                )
        except DatasetError as exc:
            raise UserError(str(exc)) from None
    out.print(
        f"wrote {summary.path}: {summary.rows:,} rows ({summary.labelled:,} labelled) from "
        f"{summary.feature_records:,} feature records"
    )


def register(app: typer.Typer) -> None:
    app.command()(dataset)
