"""The `streamfer` command: every subcommand, registered from its module under `streams/cli/`.

Commands are thin: parse the options, build validated settings (the spec, `Connections`),
call the service or tool, print. Settings come from the spec file and the environment.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from streams.cli import dataset, learner, model, ops, stack, worker, workloads
from streams.security.redaction import install_exception_redaction, redacted_traceback


class _RedactingTyper(typer.Typer):
    """The app, guarded: an exception no command turned into a user error (a bug, or a
    failure nobody foresaw) prints its traceback redacted, since its text may hold a URL or
    a setting with a secret; exit status 1, as Python's own."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        install_exception_redaction()  # threads' tracebacks too
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            sys.stderr.write(redacted_traceback(type(exc), exc, exc.__traceback__))
            sys.stderr.flush()
            raise SystemExit(1) from None


app = _RedactingTyper(
    help="streamfer: Kafka micro-batches → online features in Redis → ONNX → predictions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
for module in (stack, worker, learner, ops, workloads, model, dataset):
    module.register(app)


def main() -> None:  # pragma: no cover
    app()
