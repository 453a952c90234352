"""Command-line options shared by the `streamfer` commands, declared once.

Help texts name the environment variable in parentheses: Typer renders help with Rich
markup, which swallows text in square brackets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SpecOpt = Annotated[Path, typer.Option("--spec", "-s", help="pipeline spec (YAML)")]
BootstrapOpt = Annotated[
    str | None,
    typer.Option("--bootstrap", help="Kafka bootstrap servers (env STREAMFER_BOOTSTRAP)"),
]
RedisOpt = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        help="Redis URL (env STREAMFER_REDIS_URL): one server, or any node of a Redis "
        "Cluster (found by asking it; ?cluster=yes|no says so)",
    ),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="log at INFO")]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="print the summary as one JSON document on stdout")
]
NameOpt = Annotated[
    str | None,
    typer.Option(
        "--name",
        help="prefix the pipeline's name, group, topics and Redis namespace, so one spec "
        "runs twice side by side",
    ),
]
