"""How a command reports what the user can fix: one red line, exit status 2, no traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.markup import escape

# Re-exported while the commands move to importing streams.cli.output directly.
from streams.cli.output import err, out, setup_logging  # noqa: F401
from streams.security.redaction import redact


class UserError(Exception):
    """Something the user can fix; printed without a traceback."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    # Imported here so `streamfer --help` does not load onnxruntime, River and faust.
    from features.store import StoreRefused
    from inference.adaptation import SnapshotKeyMissing
    from inference.onnx_model import ModelLoadError
    from streams.learner.errors import LearnerError
    from streams.learner.process import LearnerProcessError
    from streams.ops.lag import LagReadError
    from streams.ops.rebuild import RebuildError
    from streams.ops.topics import BrokerUnreachable
    from streams.spec import SpecError
    from streams.stack.local import StackError
    from streams.workloads.demo_adaptation import DemoError
    from streams.workloads.replay import ReplayError

    return (
        SpecError,
        UserError,
        BrokerUnreachable,
        StackError,
        ModelLoadError,
        SnapshotKeyMissing,
        LearnerError,
        LearnerProcessError,
        LagReadError,
        RebuildError,
        ReplayError,
        DemoError,
        StoreRefused,
    )


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can cause into one line on stderr and exit status 2; the
    message is redacted (it may name a URL or a setting) and printed as text, not markup."""
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, _user_error_types()):
            raise
        err.print(f"[bold red]error:[/] {escape(redact(str(exc)))}", highlight=False)
        raise typer.Exit(2) from None
