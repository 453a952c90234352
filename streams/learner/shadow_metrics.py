"""The learner's prequential metrics of shadow candidates, each beside the active ONNX model
on the same labelled events (`shadow:<version>` and `shadow:<version>|active` in the table).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from inference.prequential import WindowMetrics
from streams.worker.scoring import SHADOW_PREFIX

ACTIVE_SUFFIX = "|active"


@dataclass(frozen=True)
class ShadowComparison:
    """One shadow version against the active model, over the events it scored."""

    version: str
    shadow: dict[str, float | None]
    active: dict[str, float | None]

    @property
    def labels(self) -> int:
        return int(self.shadow.get("n") or 0)


def shadow_comparisons(
    items: Sequence[tuple[str, Mapping[str, Any]]], task: str, *, start: int | None = None
) -> dict[str, ShadowComparison]:
    """Per shadow version, its metrics and the active model's, summed over every window (or
    over the window beginning at `start`)."""
    sums: dict[str, WindowMetrics] = {}
    for key, value in items:
        if not key.startswith("w|") or value is None:
            continue
        if start is not None and value.get("start") != start:
            continue
        for name, data in value["outputs"].items():
            if name.startswith(SHADOW_PREFIX):
                m = WindowMetrics.from_json(task, data)  # type: ignore[arg-type]
                sums[name] = sums[name].merge(m) if name in sums else m
    out: dict[str, ShadowComparison] = {}
    for name, metrics in sums.items():
        if name.endswith(ACTIVE_SUFFIX):
            continue
        active = sums.get(name + ACTIVE_SUFFIX)
        version = name[len(SHADOW_PREFIX) :]
        out[version] = ShadowComparison(
            version,
            metrics.result(),
            active.result() if active is not None else WindowMetrics.new(task).result(),  # type: ignore[arg-type]
        )
    return dict(sorted(out.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0))
