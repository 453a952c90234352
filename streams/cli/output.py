"""What commands print: human text on stderr, what scripts read (exports, summaries, JSON)
on stdout, whole lines when either is not a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.table import Table


def _console(stream: TextIO, *, stderr: bool) -> Console:
    """A terminal gets Rich's width; a pipe or file gets whole lines (no wrapping at 80
    columns), so what a script reads is one record per line."""
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=_PIPE_WIDTH, soft_wrap=True)


_PIPE_WIDTH = 1_000
# Human output goes to stderr; what scripts read (exports, summaries, JSON) to stdout.
err = _console(sys.stderr, stderr=True)
out = _console(sys.stdout, stderr=False)


def print_rows(title: str, rows: list[tuple[str, str]]) -> None:
    """A two-column summary table on stdout."""
    table = Table(title=title, show_header=False)
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)


def emit_json(document: dict[str, Any]) -> None:
    """One JSON document on one line of stdout, for scripts."""
    sys.stdout.write(orjson.dumps(document).decode() + "\n")
    sys.stdout.flush()


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
