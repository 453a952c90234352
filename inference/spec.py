"""`ModelSpec`: the typed `model:` section of a pipeline spec.

It says which ONNX model to serve (a file, or a registry name + version selector), how
feature columns feed its inputs, which output is the score, and how to run it. Validation
happens once, at the edge; errors name the field and the fix.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from features.duration import DurationMs

Providers = Literal["auto", "cuda", "cpu"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_model_name(name: str) -> str:
    """A model name is one safe path component (it names a registry directory)."""
    if not _NAME.match(name):
        raise ValueError(
            f"model name {name!r} is not allowed: use letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. 'card-fraud')"
        )
    return name


def check_version_selector(version: str) -> str:
    """`latest`, `active` or a positive integer version such as "3"."""
    if version in ("latest", "active"):
        return version
    if version.isdigit() and int(version) > 0:
        return str(int(version))
    raise ValueError(
        f"model version {version!r} is not valid: write 'active' (follow the registry's "
        "ACTIVE pointer), 'latest' (newest registered version) or a version number like '3'"
    )


class ModelSpec(BaseModel):
    """Which model to serve and how.

    Exactly one of `path` (a plain ONNX file, served as-is, never swapped) or `registry`
    (a `ModelRegistry` root; `version` selects `active`, `latest` or a pinned number, and
    workers re-resolve it every `swap_poll` to hot-swap a new version). `sha256` pins the
    file: one with another digest is refused at start and at every swap.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="model name; the registry directory when `registry` is set")
    path: Path | None = Field(default=None, description="an ONNX file to serve")
    registry: Path | None = Field(default=None, description="a model registry root")
    version: str = Field(default="active", description="active | latest | a version number")
    sha256: str | None = Field(
        default=None,
        description=(
            "the sha256 (64 hex digits) the model file must have; any other file is refused "
            "at start and at hot swap. Unset with `path`: served with a WARNING (unpinned)"
        ),
    )
    inputs: dict[str, tuple[str, ...]] = Field(
        description="ONNX input name -> feature columns, in order (fed as float32)"
    )
    output: str = Field(default="score", description="output tensor holding the score")
    output_index: int | None = Field(
        default=None, description="column of a (n, m) output to take; null = last column"
    )
    threshold: float = Field(default=0.5, description="decision = score >= threshold")
    providers: Providers = "auto"
    threads: int = Field(default=0, ge=0, description="intra-op threads; 0 = ORT default")
    tf32: bool = Field(
        default=False,
        description=(
            "let CUDA run float32 matmuls in TensorFloat-32 (faster on Ampere and newer GPUs, "
            "~1e-3 relative error); off, CUDA scores match the CPU's to float32 precision"
        ),
    )
    warmup_batches: int = Field(default=3, ge=0)
    warmup_batch_size: int = Field(default=256, ge=1, description="rows per warm-up batch")
    swap_poll: DurationMs = Field(default=1000, description="how often to re-check the registry")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_model_name(value)

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: object) -> object:
        # YAML reads `version: 3` as an int; accept it as the string "3".
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            return check_version_selector(value.strip())
        return value

    @field_validator("sha256", mode="before")
    @classmethod
    def _sha256(cls, value: object) -> object:
        if value is None:
            return None
        text = str(value).strip().lower()
        if not _SHA256.match(text):
            raise ValueError(
                f"model.sha256 {value!r} is not a sha256: write the file's 64 hex digits "
                "(`sha256sum model.onnx`)"
            )
        return text

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        if not value:
            raise ValueError(
                "model.inputs is empty: map each ONNX input name to its feature columns, "
                "e.g. {features: [card_count_1h, amount_log]}"
            )
        for name, columns in value.items():
            if not columns:
                raise ValueError(
                    f"model.inputs.{name} has no columns: list the feature columns it takes"
                )
            dupes = sorted(c for c, k in Counter(columns).items() if k > 1)
            if dupes:
                raise ValueError(
                    f"model.inputs.{name} lists {dupes} more than once: list each column once"
                )
        return value

    @field_validator("swap_poll")
    @classmethod
    def _swap_poll(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("model.swap_poll must be > 0, e.g. '1s' or '500ms'")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.path is None) == (self.registry is None):
            raise ValueError(
                "model: set exactly one of `path` (an ONNX file) or `registry` (a registry "
                f"root, with `version`); got path={self.path}, registry={self.registry}"
            )
        if self.path is not None and "version" in self.model_fields_set:
            raise ValueError(
                "model.version only applies with `registry`: remove it, or replace `path` "
                "with `registry`"
            )
        return self

    @property
    def feature_columns(self) -> tuple[str, ...]:
        """Every mapped feature column, in input order (a column may feed several inputs)."""
        return tuple(dict.fromkeys(c for cols in self.inputs.values() for c in cols))

    @property
    def swap_poll_s(self) -> float:
        return self.swap_poll / 1000.0
