"""What commands print: human text on stderr, what scripts read (exports, summaries, JSON)
on stdout, whole lines when either is not a terminal. Human text and log records pass
through `redact`: no secret reaches stderr (stdout keeps what scripts must read, such as the
`export` lines of `streamfer up`)."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.table import Table

from streams.security.redaction import RedactingStream, install_log_redaction


def _console(stream: TextIO, *, stderr: bool) -> Console:
    """A terminal gets Rich's width; a pipe or file gets whole lines (no wrapping at 80
    columns), so what a script reads is one record per line. Stderr is written redacted."""
    file = RedactingStream(lambda: sys.stderr) if stderr else None
    if stream.isatty():
        return Console(stderr=stderr, file=file)
    return Console(stderr=stderr, file=file, width=_PIPE_WIDTH, soft_wrap=True)


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
    """Log to stderr at INFO (`-v`) or WARNING, every record redacted."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    install_log_redaction()
