"""Durations in specs: "500ms", "30s", "10m", "1h", "7d" or a plain number of seconds.

Every duration is held as whole milliseconds (`DurationMs`), the unit of event time inside
streamfer, so window arithmetic stays in integers.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration_ms(value: Any) -> int:
    """A duration ("500ms", "30s", "10m", "1h", "7d", or a number of seconds) → whole ms."""
    if isinstance(value, bool):
        raise ValueError(f"duration must be like '30s', '10m', '1h' or seconds, not {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
        unit_ms = 1_000
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1))
        unit_ms = _UNIT_MS[match.group(2) or "s"]
    else:
        raise ValueError(
            f"duration {value!r} not understood: write e.g. '500ms', '30s', '10m', '1h', '7d' "
            "or a number of seconds"
        )
    ms = seconds * unit_ms
    if not math.isfinite(ms) or ms < 0 or ms != round(ms):
        raise ValueError(f"duration {value!r} must be a whole, non-negative number of ms")
    return round(ms)


def format_duration(ms: int) -> str:
    """Whole ms → the shortest exact text ("300000" → "5m"), for error messages."""
    for unit in ("d", "h", "m", "s"):
        if ms and ms % _UNIT_MS[unit] == 0:
            return f"{ms // _UNIT_MS[unit]}{unit}"
    return f"{ms}ms"


DurationMs = Annotated[
    int, BeforeValidator(parse_duration_ms), PlainSerializer(format_duration, return_type=str)
]
"""Integer milliseconds, parsed from a duration text or a number of seconds; dumped as text
("5m"), so a dumped spec validates back to the same spec."""


__all__ = ["DurationMs", "format_duration", "parse_duration_ms"]
