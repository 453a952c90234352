"""The learner's metrics table: prequential sums per (label partition × window) and the
counters of expired and malformed labels, each entry with the label offsets it counted.

`DictTable` holds it in memory (unit tests, the report's view of the changelog); `FaustTable`
is the Faust table of the running learner. The readers (`merged_windows`, `window_rows`,
`totals`) merge the partitions' entries per window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from inference.prequential import OUTPUTS, WindowMetrics

TABLE = "prequential"  # the Faust table's name; its changelog is `<app id>-prequential-changelog`


class MetricsTable(Protocol):
    """Key → JSON value, each write sent to the changelog partition of its label partition."""

    def get(self, key: str) -> dict[str, Any] | None: ...
    def put(self, partition: int, key: str, value: dict[str, Any]) -> None: ...
    def items(self) -> list[tuple[str, dict[str, Any]]]: ...


class DictTable:
    """In-memory MetricsTable (unit tests, and the report's view of a changelog)."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    def put(self, partition: int, key: str, value: dict[str, Any]) -> None:
        self.data[key] = value

    def items(self) -> list[tuple[str, dict[str, Any]]]:
        return list(self.data.items())


def window_key(partition: int, start_ms: int) -> str:
    """The table key of one label partition's window (`w|<partition>|<start ms>`)."""
    return f"w|{partition}|{start_ms}"


def merged_windows(
    items: Sequence[tuple[str, Mapping[str, Any]]], task: str
) -> dict[int, dict[str, WindowMetrics]]:
    """Table entries (per partition × window) merged per window start."""
    out: dict[int, dict[str, WindowMetrics]] = {}
    for key, value in items:
        if not key.startswith("w|") or value is None:
            continue
        start = int(key.rsplit("|", 1)[1])
        merged = out.setdefault(start, {o: WindowMetrics.new(task) for o in OUTPUTS})  # type: ignore[arg-type]
        for name in OUTPUTS:
            if name in value["outputs"]:
                merged[name] = merged[name].merge(
                    WindowMetrics.from_json(task, value["outputs"][name])  # type: ignore[arg-type]
                )
    return dict(sorted(out.items()))


def counter_total(items: Sequence[tuple[str, Mapping[str, Any]]], prefix: str) -> int:
    """A counter summed over partitions (`x|` expired, `b|` malformed labels)."""
    return sum(int(v["n"]) for k, v in items if k.startswith(prefix) and v is not None)


class FaustTable:
    """MetricsTable over a Faust table: values set in memory, the changelog record sent to
    the partition of the label partition (so the table is co-partitioned with the labels,
    also when written from the retry timer, outside stream iteration)."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, key: str) -> dict[str, Any] | None:
        value = self._table.data.get(key)
        return value if isinstance(value, dict) else None

    def put(self, partition: int, key: str, value: dict[str, Any]) -> None:
        self._table.data[key] = value
        self._table.send_changelog(partition, key, value)

    def items(self) -> list[tuple[str, dict[str, Any]]]:
        return [(k, v) for k, v in self._table.data.items() if isinstance(v, dict)]


def window_rows(items: Sequence[tuple[str, Mapping[str, Any]]], task: str) -> list[dict[str, Any]]:
    """One row per window: start, end, labels and each output's metrics."""
    rows = []
    for start, outputs in merged_windows(items, task).items():
        size = next(
            (int(v["size"]) for k, v in items if k.startswith("w|") and v and v["start"] == start),
            0,
        )
        rows.append(
            {
                "start_ms": start,
                "end_ms": start + size,
                "labels": outputs["onnx"].n,
                **{name: m.result() for name, m in outputs.items()},
            }
        )
    return rows


def totals(items: Sequence[tuple[str, Mapping[str, Any]]], task: str) -> dict[str, dict[str, Any]]:
    """Each output's metrics over every window."""
    out = {o: WindowMetrics.new(task) for o in OUTPUTS}  # type: ignore[arg-type]
    for outputs in merged_windows(items, task).values():
        for name, m in outputs.items():
            out[name] = out[name].merge(m)
    return {name: m.result() for name, m in out.items()}
