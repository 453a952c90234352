"""A model version's way to production: publish (checked), shadow, promote, roll back.

Beside `ModelRegistry`'s files, per model name::

    <name>/SHADOW     the version workers score beside the active one (absent: none)
    <name>/HISTORY    JSON list of the versions promoted, oldest first (rollback pops it)

`publish` refuses a model whose inputs do not match the spec (the same check a worker makes
at load, so what is published can be served); promote and rollback move ACTIVE, which the
workers follow between batches (`ModelSwitch`).
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from inference.model_ref import ModelLoadError, ModelRef
from inference.onnx_model import OnnxModel
from inference.registry import ModelRegistry, RegistryError
from inference.spec import ModelSpec

SHADOW_FILE = "SHADOW"
HISTORY_FILE = "HISTORY"


class PublishRefused(RegistryError):
    """A model that the spec's workers could not serve (its inputs or output do not match)."""


def check_servable(file: Path | str, spec: ModelSpec, feature_names: Sequence[str]) -> None:
    """Load `file` as a worker would (signature against `spec`, one warm-up run) on CPU.

    Raises `PublishRefused` with the loader's message, which names every mismatch.
    """
    # CPU is enough to check; the pin is about the version served, not this candidate.
    cpu = spec.model_copy(update={"providers": "cpu", "sha256": None})
    try:
        OnnxModel.load(ModelRef.for_file(spec.name, file), cpu, feature_names)
    except ModelLoadError as exc:
        raise PublishRefused(f"{file} cannot be served by this spec: {exc}") from exc


class ModelRollout:
    """Publish, shadow, promote and roll back versions of models in one registry."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def publish(
        self,
        name: str,
        file: Path | str,
        spec: ModelSpec,
        feature_names: Sequence[str],
        *,
        version: str | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> ModelRef:
        """Register `file` as a new version of `name`, not active: checked against the
        spec first, with the trainer's `metrics` and who published it in the manifest."""
        check_servable(file, spec, feature_names)
        extra = {
            "published_by": os.environ.get("USER") or getpass.getuser(),
            "metrics": dict(metrics or {}),
            "input_columns": list(feature_names),
        }
        return self.registry.register(name, file, activate=False, version=version, extra=extra)

    # -- ACTIVE and its history -------------------------------------------------------

    def history(self, name: str) -> list[str]:
        """The versions promoted, oldest first (seeded with ACTIVE when there is none)."""
        text = self.registry.read_pointer(name, HISTORY_FILE)
        if text:
            return [str(v) for v in json.loads(text)]
        active = self.registry.active_version(name)
        return [active] if active is not None else []

    def promote(self, name: str, version: str) -> ModelRef:
        """Make `version` the active one; a shadow of that version is cleared."""
        history = self.history(name)
        ref = self.registry.activate(name, version)
        if not history or history[-1] != ref.version:
            history.append(ref.version)
        self.registry.write_pointer(name, HISTORY_FILE, json.dumps(history) + "\n")
        if self.shadow_version(name) == ref.version:
            self.clear_shadow(name)
        return ref

    def rollback(self, name: str) -> ModelRef:
        """Re-activate the version promoted before the current one."""
        history = self.history(name)
        if len(history) < 2:
            raise RegistryError(
                f"model {name!r} has no earlier promoted version to roll back to "
                f"(history: {history or 'empty'}); activate one with `model promote`"
            )
        history.pop()
        ref = self.registry.activate(name, history[-1])
        self.registry.write_pointer(name, HISTORY_FILE, json.dumps(history) + "\n")
        return ref

    # -- SHADOW -------------------------------------------------------------------------

    def shadow(self, name: str, version: str) -> ModelRef:
        """Have workers score `version` beside the active model (resolved, so verified)."""
        ref = self.registry.resolve(name, version)
        self.registry.write_pointer(name, SHADOW_FILE, f"{ref.version}\n")
        return ref

    def clear_shadow(self, name: str) -> None:
        """Stop shadow scoring of `name`."""
        self.registry.write_pointer(name, SHADOW_FILE, "\n")

    def shadow_version(self, name: str) -> str | None:
        """The version in shadow, or None."""
        text = (self.registry.read_pointer(name, SHADOW_FILE) or "").strip()
        return text or None
