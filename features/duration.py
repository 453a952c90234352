"""Durations in specs: "500ms", "30s", "10m", "1h", "7d" or a plain number of seconds.

Every duration is held as whole milliseconds (`DurationMs`), the unit of event time inside
streamfer, so window arithmetic stays in integers.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration_ms(value: Any) -> int:
    """Parse a duration into milliseconds; raise ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"duration {value!r} must be a finite number of seconds >= 0")
        return round(value * 1000)
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            return round(float(match.group(1)) * _UNITS_MS[match.group(2)])
    raise ValueError(
        f"{value!r} is not a duration: write e.g. '500ms', '30s', '10m', '1h', '7d' or seconds"
    )


def format_duration_ms(ms: int) -> str:
    for unit in ("d", "h", "m", "s"):
        size = _UNITS_MS[unit]
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


DurationMs = Annotated[
    int, BeforeValidator(parse_duration_ms), PlainSerializer(format_duration_ms, return_type=str)
]
