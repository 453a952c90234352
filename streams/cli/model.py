"""`streamfer schema` and `streamfer model publish | list | promote | rollback | shadow`
(with `register` and `activate`, the older names)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.table import Table

from streams.cli.errors import UserError, err, out, setup_logging, user_errors
from streams.cli.options import SpecOpt

if TYPE_CHECKING:
    from inference.rollout import ModelRollout

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
    from inference.rollout import ModelRollout

    rollout = ModelRollout(reg)
    table = Table("model", "version", "sha256", "signed", "active", "shadow", "trainer metrics")
    for name in reg.names():
        active = reg.active_version(name)
        shadow = rollout.shadow_version(name)
        for version in reg.versions(name):
            manifest = reg.manifest(name, version)
            signed = "yes" if is_signed(manifest) else "no"
            if reg.verifies:
                try:
                    reg.resolve(name, version)
                    signed = "verified"
                except ModelIntegrityError:
                    signed = "REFUSED"
            metrics = manifest.get("metrics") or {}
            table.add_row(
                name,
                version,
                manifest["sha256"][:16],
                signed,
                "yes" if version == active else "",
                "yes" if version == shadow else "",
                " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()) if _is_number(v)),
            )
    out.print(table)


@model_app.command("evaluate")
def model_evaluate(
    spec: SpecOpt,
    name: Annotated[str | None, typer.Option(help="model name (default: the spec's)")] = None,
    promote: Annotated[
        bool, typer.Option("--promote", help="promote the shadow when the policy says so")
    ] = False,
    metric: Annotated[str, typer.Option(help="accuracy | roc_auc | log_loss | mae | rmse")] = (
        "roc_auc"
    ),
    margin: Annotated[float, typer.Option(help="how much better the shadow must be")] = 0.01,
    min_labels: Annotated[int, typer.Option(help="labels both must have scored first")] = 500,
    registry: Annotated[
        Path | None, typer.Option(help="registry root (default: the spec's model.registry)")
    ] = None,
    timeout: Annotated[float, typer.Option(min=1.0, help="seconds to read the metrics")] = 60.0,
) -> None:
    """The learner's prequential metrics of each shadow version beside the active model on the
    same events; with --promote, the promotion policy (beat it by --margin over --min-labels
    labels) promotes the current shadow. Run it from cron to automate the rollout."""
    from inference.promotion import PromotionPolicy
    from streams.learner.report import read_table
    from streams.learner.shadow_metrics import shadow_comparisons
    from streams.spec import Connections, load_spec

    with user_errors():
        pipeline = load_spec(spec)
        model_name = name or pipeline.model.name
        try:
            policy = PromotionPolicy(metric, margin, min_labels)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        items = read_table(Connections.from_env(), pipeline, timeout_s=timeout)
        comparisons = shadow_comparisons(items, pipeline.adaptation.task.value)
        rollout = _rollout(_registry_of(spec, registry))
        current = rollout.shadow_version(model_name)
        table = Table("shadow", "labels", f"{metric} shadow", f"{metric} active", "in shadow")
        for version, c in comparisons.items():
            table.add_row(
                version,
                str(c.labels),
                _fmt(c.shadow.get(metric)),
                _fmt(c.active.get(metric)),
                "yes" if version == current else "",
            )
        out.print(table)
        if current is None:
            out.print(f"{model_name}: no version in shadow")
            return
        chosen = comparisons.get(current)
        labels = chosen.labels if chosen else 0
        go, why = policy.decide(
            labels, chosen.shadow if chosen else {}, chosen.active if chosen else {}
        )
        out.print(f"v{current}: {why}")
        if go and promote:
            _move(lambda r: r.promote(model_name, current), rollout.registry.root, "is active")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _registry_of(spec: Path | None, registry: Path | None) -> Path:
    """--registry, else the spec's model.registry, else the default folder."""
    if registry is not None:
        return registry
    if spec is not None:
        from streams.spec import load_spec

        root = load_spec(spec).model.registry
        if root is not None:
            return root
    return DEFAULT_REGISTRY


def _rollout(registry: Path) -> ModelRollout:
    from inference.registry import ModelRegistry
    from inference.rollout import ModelRollout

    return ModelRollout(ModelRegistry(registry, key=_model_key()))


@model_app.command("publish")
def model_publish(
    path: Path,
    spec: SpecOpt,
    name: Annotated[str | None, typer.Option(help="model name (default: the spec's)")] = None,
    version: Annotated[str | None, typer.Option(help="version number (default: next)")] = None,
    metrics: Annotated[
        Path | None, typer.Option(help="JSON file of the trainer's metrics, kept in the manifest")
    ] = None,
    registry: Annotated[
        Path | None, typer.Option(help="registry root (default: the spec's model.registry)")
    ] = None,
    shadow: Annotated[
        bool, typer.Option("--shadow", help="put the new version in shadow at once")
    ] = False,
) -> None:
    """Register PATH as a new, inactive version, after checking that the spec's workers can
    serve it (its inputs against the spec's columns); promote or shadow it next."""
    from inference.model_ref import ModelLoadError
    from inference.registry import RegistryError
    from streams.spec import load_spec

    setup_logging(False)
    with user_errors():
        pipeline = load_spec(spec)
        trainer_metrics = orjson.loads(metrics.read_bytes()) if metrics is not None else {}
        rollout = _rollout(_registry_of(spec, registry))
        try:
            ref = rollout.publish(
                name or pipeline.model.name,
                path,
                pipeline.model,
                pipeline.features.names,
                version=version,
                metrics=trainer_metrics,
            )
        except (RegistryError, ModelLoadError) as exc:
            err.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2) from None
        if shadow:
            rollout.shadow(ref.name, ref.version)
        state = "in shadow" if shadow else "not active"
        out.print(f"{ref.name} v{ref.version} published sha256={ref.sha256} ({state})")


@model_app.command("promote")
def model_promote(name: str, version: str, registry: RegistryOpt = DEFAULT_REGISTRY) -> None:
    """Make VERSION the active one (workers swap between batches); kept for rollback."""
    _move(lambda r: r.promote(name, version), registry, "is active")


@model_app.command("rollback")
def model_rollback(name: str, registry: RegistryOpt = DEFAULT_REGISTRY) -> None:
    """Re-activate the version promoted before the current one."""
    _move(lambda r: r.rollback(name), registry, "is active again")


@model_app.command("shadow")
def model_shadow(
    name: str,
    version: Annotated[str, typer.Argument(help="a version, or 'off'")],
    registry: RegistryOpt = DEFAULT_REGISTRY,
) -> None:
    """Score VERSION beside the active model on live traffic (prediction log only, never
    the predictions topic), so the learner measures both; 'off' stops it."""
    if version == "off":
        _rollout(registry).clear_shadow(name)
        out.print(f"{name}: no shadow")
        return
    _move(lambda r: r.shadow(name, version), registry, "is in shadow")


def _move(action: Callable[[ModelRollout], Any], registry: Path, what: str) -> None:
    from inference.model_ref import ModelLoadError
    from inference.registry import RegistryError

    try:
        ref = action(_rollout(registry))
    except (RegistryError, ModelLoadError) as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    out.print(f"{ref.name} v{ref.version} {what}")


def register(app: typer.Typer) -> None:
    app.command()(schema)
    app.add_typer(model_app, name="model")
