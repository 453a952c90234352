"""River components and models from names in the spec, resolved inside `river` only.

`linear_model.LogisticRegression` or `{optim.SGD: {lr: 0.05}}` become objects by attribute
walks from the `river` package: no `eval`, no import outside `river`, no private names.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import re
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from inference.adaptation.modes import AdaptationTask


class RiverSpecError(ValueError):
    """A model or detector declaration naming something that is not a usable River class."""


_DOTTED = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$")


def is_component_name(value: Any) -> bool:
    """Whether a YAML key looks like `module.Class` (and so names a River component)."""
    return isinstance(value, str) and bool(_DOTTED.match(value))


def resolve_river(name: str, where: str = "model") -> type:
    """`linear_model.LogisticRegression` → the class, by attribute walks inside `river` only.

    No `eval`, no import outside the `river` package, no private names: each step must be a
    public attribute of a `river` module, and the result a class defined in `river`.
    """
    if not is_component_name(name):
        raise RiverSpecError(
            f"{where}: {name!r} is not a River component name; write it as module.Class, "
            "e.g. linear_model.LogisticRegression"
        )
    import river

    obj: Any = river
    for part in name.split("."):
        if not isinstance(obj, ModuleType):
            raise RiverSpecError(f"{where}: {name!r}: {obj.__name__} is not a module")
        if not hasattr(obj, part):
            with contextlib.suppress(ImportError):  # river's subpackages load on first use
                importlib.import_module(f"{obj.__name__}.{part}")
        if part.startswith("_") or not hasattr(obj, part):
            raise RiverSpecError(_unknown(name, part, obj, where))
        obj = getattr(obj, part)
        if isinstance(obj, ModuleType) and not _in_river(obj.__name__):
            raise RiverSpecError(f"{where}: {name!r} leads outside the river package")
    if not isinstance(obj, type) or not _in_river(obj.__module__):
        raise RiverSpecError(f"{where}: {name!r} is not a class of the river package")
    return obj


def _in_river(module: str) -> bool:
    return module == "river" or module.startswith("river.")


def _unknown(name: str, part: str, module: ModuleType, where: str) -> str:
    public = [n for n in dir(module) if not n.startswith("_")]
    close = difflib.get_close_matches(part, public, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return f"{where}: {name!r}: {module.__name__} has no public member {part!r}{hint}"


def build_river_component(decl: str | Mapping[str, Any], where: str, *, kind: str = "") -> Any:
    """One component: `Name` or `{Name: {kwarg: value, ...}}`, kwargs built recursively."""
    params: Any
    if isinstance(decl, str):
        name, params = decl, {}
    elif isinstance(decl, Mapping) and len(decl) == 1:
        name, params = next(iter(decl.items()))
        params = {} if params is None else params
        if not isinstance(params, Mapping):
            raise RiverSpecError(
                f"{where}: the arguments of {name} must be a mapping of keyword arguments, "
                f"got {params!r}"
            )
    else:
        raise RiverSpecError(
            f"{where}: write a component as `module.Class` or `{{module.Class: {{kwargs}}}}`, "
            f"got {decl!r}"
        )
    cls = resolve_river(str(name), where)
    if kind == "drift":
        from river.base import DriftDetector

        if not issubclass(cls, DriftDetector):
            raise RiverSpecError(f"{where}: {name} is not a River drift detector (drift.ADWIN…)")
    kwargs = {str(k): _build_value(v, f"{where}.{name}.{k}") for k, v in params.items()}
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        accepted = ", ".join(p for p in inspect.signature(cls).parameters if p != "self")
        raise RiverSpecError(f"{where}: {name}: {exc}; it accepts: {accepted}") from None
    try:
        return cls(**kwargs)
    except Exception as exc:  # River validates its own arguments
        raise RiverSpecError(f"{where}: {name}({kwargs}) failed: {exc}") from None


def _build_value(value: Any, where: str) -> Any:
    if isinstance(value, Mapping) and len(value) == 1 and is_component_name(next(iter(value))):
        return build_river_component(value, where)
    if isinstance(value, list):
        return [_build_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def build_river_model(
    steps: Sequence[str | Mapping[str, Any]], task: AdaptationTask | str = "classification"
) -> Any:
    """The pipeline of `steps` (composed with `|`), checked to be a classifier or regressor."""
    from river import base, compose

    if not steps:
        raise RiverSpecError("adaptation.model: declare at least one step")
    built = [build_river_component(s, f"adaptation.model[{i}]") for i, s in enumerate(steps)]
    for i, step in enumerate(built[:-1]):
        if not isinstance(step, base.Transformer | base.SupervisedTransformer):
            raise RiverSpecError(
                f"adaptation.model[{i}]: {type(step).__name__} is not a transformer; only the "
                "last step may be an estimator"
            )
    last = built[-1]
    want = (
        base.Classifier if AdaptationTask(task) is AdaptationTask.CLASSIFICATION else base.Regressor
    )
    if not isinstance(last, want):
        raise RiverSpecError(
            f"adaptation.model[{len(built) - 1}]: {type(last).__name__} is not a River "
            f"{want.__name__.lower()}, as task '{AdaptationTask(task).value}' needs"
        )
    return compose.Pipeline(*built) if len(built) > 1 else last
