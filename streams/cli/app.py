"""The `streamfer` command: every subcommand, registered from its module under `streams/cli/`.

Commands are thin: parse the options, build validated settings (the spec, `Connections`),
call the service or tool, print. Settings come from the spec file and the environment.
"""

from __future__ import annotations

import typer

from streams.cli import learner, model, ops, stack, worker, workloads

app = typer.Typer(
    help="streamfer: Kafka micro-batches → online features in Redis → ONNX → predictions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
for module in (stack, worker, learner, ops, workloads, model):
    module.register(app)


def main() -> None:  # pragma: no cover
    app()
