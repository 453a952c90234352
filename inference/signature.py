"""The model's signature against the spec: every input mapped to feature columns of the
right width, a float score output; the result is the precomputed input plan `predict` uses.

All problems are collected and reported at once, each with its fix, before anything runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from inference.model_ref import ModelLoadError, ModelRef
from inference.spec import ModelSpec

_FLOAT_OUTPUTS = ("tensor(float)", "tensor(double)", "tensor(float16)")


class ModelSignatureError(ModelLoadError):
    """The model's inputs/outputs do not match `model.inputs` / `model.output` / features."""


# A column selection: a slice when the columns are contiguous (a view, no gather).
Selection = slice | np.ndarray


def _selection(indices: Sequence[int]) -> Selection:
    start = indices[0]
    if list(indices) == list(range(start, start + len(indices))):
        return slice(start, start + len(indices))
    return np.asarray(indices, dtype=np.intp)


@dataclass(frozen=True)
class InputPlan:
    """Per ONNX input, the feature columns it takes; the output and which column is the score."""

    inputs: tuple[tuple[str, Selection], ...]
    output: str
    output_index: int | None


def check_signature(
    ref: ModelRef,
    spec: ModelSpec,
    session: ort.InferenceSession,
    feature_names: Sequence[str],
) -> InputPlan:
    """Check the model's signature; return the precomputed column selection per input."""
    problems: list[str] = []
    position: dict[str, int] = {}
    for i, column in enumerate(feature_names):
        position.setdefault(column, i)
    model_inputs = {arg.name: arg for arg in session.get_inputs()}

    plan_inputs: list[tuple[str, Selection]] = []
    for name, columns in spec.inputs.items():
        arg = model_inputs.get(name)
        if arg is None:
            problems.append(
                f"model.inputs maps {name!r}, which the model does not have; its inputs "
                f"are {sorted(model_inputs)}: rename the key in model.inputs"
            )
            continue
        if arg.type != "tensor(float)":
            problems.append(
                f"input {name!r} is {arg.type}, expected tensor(float) (float32): "
                "export the model with a float32 input"
            )
        shape = arg.shape
        if shape is None or len(shape) != 2:
            problems.append(
                f"input {name!r} has shape {shape}, expected (batch, {len(columns)}): "
                "export a rank-2 input"
            )
        else:
            batch, width = shape
            if isinstance(width, int) and width != len(columns):
                problems.append(
                    f"input {name!r} takes {width} columns but model.inputs.{name} maps "
                    f"{len(columns)}: map exactly {width} feature columns"
                )
            if isinstance(batch, int) and batch > 0:
                problems.append(
                    f"input {name!r} has a fixed batch size {batch}: export it with a "
                    "dynamic (symbolic) batch dimension"
                )
        unknown = [c for c in columns if c not in position]
        if unknown:
            known = list(feature_names)
            shown = ", ".join(known[:20]) + (", …" if len(known) > 20 else "")
            problems.append(
                f"model.inputs.{name} maps {unknown}, which are not feature columns "
                f"(known: {shown}): declare them in features or fix the names"
            )
        else:
            plan_inputs.append((name, _selection([position[c] for c in columns])))

    unmapped = sorted(set(model_inputs) - set(spec.inputs))
    if unmapped:
        problems.append(
            f"model inputs {unmapped} are not mapped: add them to model.inputs with their "
            "feature columns"
        )

    outputs = {arg.name: arg for arg in session.get_outputs()}
    out = outputs.get(spec.output)
    output_index = spec.output_index
    if out is None:
        problems.append(
            f"model.output is {spec.output!r}, which the model does not have; its outputs "
            f"are {sorted(outputs)}: set model.output to one of them"
        )
    else:
        if out.type not in _FLOAT_OUTPUTS:
            problems.append(
                f"output {spec.output!r} is {out.type}, expected a float tensor of scores: "
                "pick the probability/score output"
            )
        shape = out.shape
        if shape is not None and len(shape) not in (1, 2):
            problems.append(
                f"output {spec.output!r} has shape {shape}, expected (n,), (n, 1) or (n, 2)"
            )
        elif shape is not None and len(shape) == 1 and output_index is not None:
            problems.append(
                f"output {spec.output!r} is (n,) so model.output_index does not apply: remove it"
            )
        elif shape is not None and len(shape) == 2 and isinstance(shape[1], int):
            width = shape[1]
            index = width - 1 if output_index is None else output_index
            if not -width <= index < width:
                problems.append(
                    f"model.output_index {output_index} is out of range for output "
                    f"{spec.output!r} of width {width}: use 0..{width - 1}"
                )

    if problems:
        lines = "\n  - ".join(problems)
        raise ModelSignatureError(f"model {ref} ({ref.path}) does not match the spec:\n  - {lines}")
    return InputPlan(tuple(plan_inputs), spec.output, output_index)
