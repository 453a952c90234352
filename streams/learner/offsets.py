"""The learner's exactly-once bookkeeping, pure: which label offsets a model has taken.

Each snapshot carries, per label partition, the next offset and the offsets still waiting in
retry; a restarted learner resumes there and skips what the snapshot already learned. The
metrics table records the offsets each entry counted as `OffsetRanges`.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class OffsetRanges:
    """A set of offsets as sorted disjoint [start, end) ranges (compact for runs)."""

    def __init__(self, ranges: Sequence[Sequence[int]] = ()) -> None:
        self.ranges: list[list[int]] = [[int(a), int(b)] for a, b in ranges]

    def __contains__(self, offset: int) -> bool:
        i = bisect.bisect_right(self.ranges, [offset, float("inf")]) - 1
        return i >= 0 and self.ranges[i][0] <= offset < self.ranges[i][1]

    def add(self, offset: int) -> None:
        if offset in self:
            return
        i = bisect.bisect_right(self.ranges, [offset, float("inf")])
        joins_left = i > 0 and self.ranges[i - 1][1] == offset
        joins_right = i < len(self.ranges) and self.ranges[i][0] == offset + 1
        if joins_left and joins_right:
            self.ranges[i - 1][1] = self.ranges[i][1]
            del self.ranges[i]
        elif joins_left:
            self.ranges[i - 1][1] = offset + 1
        elif joins_right:
            self.ranges[i][0] = offset
        else:
            self.ranges.insert(i, [offset, offset + 1])

    def __len__(self) -> int:
        return sum(b - a for a, b in self.ranges)


@dataclass
class PartitionProgress:
    """What the model has taken from one label partition."""

    next: int = 0  # one past the highest offset consumed
    pending: set[int] = field(default_factory=set)  # consumed, waiting for their prediction

    def resume_offset(self) -> int:
        return min(self.pending | {self.next})

    def already_learned(self, offset: int) -> bool:
        return offset < self.next and offset not in self.pending

    def to_json(self) -> dict[str, Any]:
        return {"next": self.next, "pending": sorted(self.pending)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PartitionProgress:
        return cls(int(data["next"]), {int(o) for o in data.get("pending", ())})


def restore_progress(meta: Mapping[str, Any] | None, topic: str) -> dict[int, PartitionProgress]:
    """The per-partition progress a snapshot recorded (empty for another topic)."""
    offsets = (meta or {}).get("offsets") or {}
    if offsets.get("topic") != topic:
        return {}
    return {
        int(p): PartitionProgress.from_json(v) for p, v in offsets.get("partitions", {}).items()
    }


def offsets_meta(topic: str, progress: Mapping[int, PartitionProgress]) -> dict[str, Any]:
    """The progress as a snapshot records it (read back by `restore_progress`)."""
    return {
        "topic": topic,
        "partitions": {str(p): pr.to_json() for p, pr in sorted(progress.items())},
    }
