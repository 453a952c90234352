"""`streamfer schema` and `streamfer model register | activate | list`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from streams.cli.errors import UserError, err, out, setup_logging, user_errors
from streams.cli.options import SpecOpt

RegistryOpt = Annotated[Path, typer.Option(help="registry root")]
DEFAULT_REGISTRY = Path(".streamfer/models")


def schema(
    spec: SpecOpt,
    kind: Annotated[str, typer.Option(help="events | predictions | both")] = "both",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="folder to write to")
    ] = None,
) -> None:
    """Print (or write) the JSON Schemas of the spec's events and predictions."""
    from streams.events.schema import event_json_schema, prediction_json_schema
    from streams.spec import load_spec

    with user_errors():
        pipeline = load_spec(spec)
        if kind not in ("events", "predictions", "both"):
            raise UserError("--kind must be events, predictions or both")
        schemas = {
            "events": event_json_schema(pipeline.event, pipeline.name),
            "predictions": prediction_json_schema(pipeline.event, pipeline.name),
        }
        chosen = schemas if kind == "both" else {kind: schemas[kind]}
        if output is not None:
            output.mkdir(parents=True, exist_ok=True)
            for name, body in chosen.items():
                path = output / f"{pipeline.name}.{name}.schema.json"
                path.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
                err.print(f"wrote {path}")
            return
        body = chosen if kind == "both" else chosen[kind]
        sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")


model_app = typer.Typer(
    help=(
        "Versioned model registry (sha256-verified, hot-swappable). With STREAMFER_MODEL_KEY "
        "set, manifests are signed at register and verified at activate and by workers."
    )
)


def _model_key() -> str | None:
    """STREAMFER_MODEL_KEY, read with the other connection settings."""
    from streams.spec import Connections

    return Connections.from_env().model_secret


@model_app.command("register")
def model_register(
    name: str,
    file: Path,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    activate: Annotated[bool, typer.Option(help="make it the active version")] = True,
) -> None:
    """Add FILE as the next version of NAME (sha256 recorded; manifest signed with
    STREAMFER_MODEL_KEY, or registered unsigned with a WARNING when it is not set)."""
    from inference.model_ref import ModelLoadError
    from inference.registry import ModelRegistry, RegistryError

    setup_logging(False)  # the UNSIGNED warning, formatted like every other log line
    try:
        ref = ModelRegistry(registry, key=_model_key()).register(name, file, activate=activate)
    except (RegistryError, ModelLoadError) as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    out.print(f"{ref.name} v{ref.version} sha256={ref.sha256}{' (active)' if activate else ''}")


@model_app.command("activate")
def model_activate(name: str, version: str, registry: RegistryOpt = DEFAULT_REGISTRY) -> None:
    """Point workers at VERSION of NAME; they swap between batches. With STREAMFER_MODEL_KEY
    set, a version whose manifest is unsigned or does not verify is refused."""
    from inference.model_ref import ModelLoadError
    from inference.registry import ModelRegistry, RegistryError

    try:
        ref = ModelRegistry(registry, key=_model_key()).activate(name, version)
    except (RegistryError, ModelLoadError) as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    out.print(f"{ref.name} v{ref.version} is active")


@model_app.command("list")
def model_list(registry: RegistryOpt = DEFAULT_REGISTRY) -> None:
    """Models, versions, hashes, whether each manifest is signed (and, with
    STREAMFER_MODEL_KEY, verifies) and which one is active."""
    from inference.model_ref import ModelIntegrityError, ModelLoadError
    from inference.registry import ModelRegistry
    from inference.signed_manifest import is_signed

    try:
        reg = ModelRegistry(registry, key=_model_key())
    except ModelLoadError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    table = Table("model", "version", "sha256", "signed", "active")
    for name in reg.names():
        active = reg.active_version(name)
        for version in reg.versions(name):
            manifest = reg.manifest(name, version)
            signed = "yes" if is_signed(manifest) else "no"
            if reg.verifies:
                try:
                    reg.resolve(name, version)
                    signed = "verified"
                except ModelIntegrityError:
                    signed = "REFUSED"
            table.add_row(
                name, version, manifest["sha256"][:16], signed, "yes" if version == active else ""
            )
    out.print(table)


def register(app: typer.Typer) -> None:
    app.command()(schema)
    app.add_typer(model_app, name="model")
