"""Command-line options shared by every `streamfer` command that talks to Kafka or Redis.

Kept apart from `streams/cli.py` so command modules (learner, lag, rebuild, …) can use the
same declarations without importing the CLI that registers them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SpecOpt = Annotated[Path, typer.Option("--spec", "-s", help="pipeline spec (YAML)")]
BootstrapOpt = Annotated[
    str | None,
    typer.Option("--bootstrap", help="Kafka bootstrap servers [env STREAMFER_BOOTSTRAP]"),
]
RedisOpt = Annotated[
    str | None, typer.Option("--redis-url", help="Redis URL [env STREAMFER_REDIS_URL]")
]
