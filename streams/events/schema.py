"""The event schema: how one event is validated, and the JSON Schemas we publish.

Validation is the only per-event Python work besides JSON decoding, so it is compiled once
into a flat list of field checks and kept free of allocations beyond the record itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.duration import DurationMs
from streams.events.dead_letters import Reason


class FieldType(StrEnum):
    STRING = "string"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"


class TimeUnit(StrEnum):
    S = "s"
    MS = "ms"
    US = "us"
    NS = "ns"
    ISO8601 = "iso8601"


_MS_PER_UNIT: dict[TimeUnit, float] = {
    TimeUnit.S: 1000.0,
    TimeUnit.MS: 1.0,
    TimeUnit.US: 0.001,
    TimeUnit.NS: 0.000001,
}


class FieldSpec(BaseModel):
    """One typed field of an event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: FieldType
    required: bool = True
    default: Any = None
    description: str | None = None

    @model_validator(mode="after")
    def _default_matches_type(self) -> FieldSpec:
        if self.default is not None and _type_error(self.type, self.default) is not None:
            raise ValueError(
                f"default {self.default!r} is not a {self.type.value}: "
                f"give a {self.type.value} default or remove it"
            )
        if self.required and self.default is not None:
            raise ValueError("a required field cannot have a default: set required: false")
        return self


class EventTime(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str
    unit: TimeUnit = TimeUnit.MS


class EventSchema(BaseModel):
    """What an event looks like on the events topic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="field holding the unique event id")
    time: EventTime
    entities: tuple[str, ...] = Field(min_length=1, description="entity key fields")
    key: str | None = Field(
        default=None,
        description="field used as the prediction's Kafka key (default: the event's key)",
    )
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    max_bytes: int = Field(default=65536, gt=0)
    max_past: DurationMs | None = Field(
        default=None, description="oldest accepted event time vs now"
    )
    max_future: DurationMs | None = Field(
        default=None, description="newest accepted event time vs now"
    )

    @model_validator(mode="after")
    def _known_fields(self) -> EventSchema:
        for name in (self.id, *self.entities, *([self.key] if self.key else [])):
            if name == self.time.field:
                raise ValueError(f"'{name}' is the event-time field and cannot also be an id/key")
        for entity in self.entities:
            spec = self.fields.get(entity)
            if spec is not None and not spec.required:
                raise ValueError(
                    f"fields.{entity}: entity keys are always required; remove 'required: false'"
                )
        return self

    def all_fields(self) -> dict[str, FieldSpec]:
        """Declared fields plus the implied ones (id, entities as strings)."""
        implied = {self.id: FieldSpec(type=FieldType.STRING)}
        for entity in self.entities:
            implied[entity] = self.fields.get(entity, FieldSpec(type=FieldType.STRING))
        return {**implied, **self.fields}


class InvalidEvent(Exception):
    """An event that cannot be scored; it goes to the dead-letter topic with this reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# Models take float32: a larger value would reach them as inf (and its window aggregates
# with it), so it is rejected at the door like NaN.
FLOAT32_MAX = 3.4028234663852886e38

# Exact types that need no further check (a float must also be finite): the common case
# skips _type_error's isinstance chain; anything else (bool for int, subclasses, NaN) takes it.
_EXACT_TYPES: dict[FieldType, frozenset[type]] = {
    FieldType.STRING: frozenset({str}),
    FieldType.INT: frozenset({int}),
    FieldType.FLOAT: frozenset({float, int}),
    FieldType.BOOL: frozenset({bool}),
}

_PY_TYPES: dict[FieldType, tuple[type, ...]] = {
    FieldType.STRING: (str,),
    FieldType.INT: (int,),
    FieldType.FLOAT: (int, float),
    FieldType.BOOL: (bool,),
}


def _type_error(kind: FieldType, value: Any) -> str | None:
    if isinstance(value, bool) and kind is not FieldType.BOOL:
        return f"expected {kind.value}, got bool"
    if not isinstance(value, _PY_TYPES[kind]):
        return f"expected {kind.value}, got {type(value).__name__}"
    if isinstance(value, float) and not math.isfinite(value):
        return "non-finite number"
    if kind is FieldType.FLOAT and not -FLOAT32_MAX <= value <= FLOAT32_MAX:
        return (
            f"non-finite as float32: {value!r} is beyond ±{FLOAT32_MAX:.4g}, the range of the "
            "model's float32 inputs"
        )
    return None


class EventValidator:
    """Checks one decoded event against the schema and returns (record, event_time_ms)."""

    def __init__(self, schema: EventSchema, *, clock_ms: Any = None) -> None:
        self._schema = schema
        self._fields = [
            (name, spec.type, _EXACT_TYPES[spec.type], spec.required, spec.default)
            for name, spec in schema.all_fields().items()
            if name != schema.time.field
        ]
        self._time_field = schema.time.field
        self._unit = schema.time.unit
        self._scale = _MS_PER_UNIT.get(schema.time.unit, 1.0)
        self._max_past_ms = None if schema.max_past is None else schema.max_past
        self._max_future_ms = None if schema.max_future is None else schema.max_future
        self._entities = schema.entities

    @property
    def schema(self) -> EventSchema:
        """The schema events are checked against (its id, entity and key fields too)."""
        return self._schema

    def validate(self, event: Any, now_ms: int) -> tuple[dict[str, Any], int]:
        if not isinstance(event, dict):
            raise InvalidEvent(
                Reason.NOT_AN_OBJECT, f"event is a JSON {type(event).__name__}, not an object"
            )
        for name, kind, exact, required, default in self._fields:
            value = event.get(name)
            if value is None:
                if required:
                    raise InvalidEvent(
                        Reason.MISSING_FIELD, f"required field '{name}' is missing or null"
                    )
                if default is not None:
                    event[name] = default
                continue
            t = type(value)
            if t in exact and (t is not float or -FLOAT32_MAX <= value <= FLOAT32_MAX):
                continue  # (a NaN fails both comparisons, ±inf one of them)
            problem = _type_error(kind, value)
            if problem is not None:
                reason = (
                    Reason.INVALID_VALUE
                    if problem.startswith("non-finite")
                    else Reason.INVALID_TYPE
                )
                raise InvalidEvent(reason, f"field '{name}': {problem}")
        for entity in self._entities:
            if event[entity] == "":
                raise InvalidEvent(Reason.INVALID_VALUE, f"entity '{entity}' is empty")
        return event, self._event_time_ms(event, now_ms)

    def _event_time_ms(self, event: dict[str, Any], now_ms: int) -> int:
        raw = event.get(self._time_field)
        if raw is None:
            raise InvalidEvent(
                Reason.MISSING_FIELD, f"event-time field '{self._time_field}' is missing"
            )
        if self._unit is TimeUnit.ISO8601:
            if not isinstance(raw, str):
                raise InvalidEvent(
                    Reason.INVALID_TYPE, f"'{self._time_field}' must be an ISO-8601 string"
                )
            try:
                parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError as exc:
                raise InvalidEvent(Reason.INVALID_VALUE, f"'{self._time_field}': {exc}") from None
            if parsed.tzinfo is None:
                raise InvalidEvent(Reason.INVALID_VALUE, f"'{self._time_field}' has no UTC offset")
            time_ms = int(parsed.timestamp() * 1000)
        else:
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise InvalidEvent(Reason.INVALID_TYPE, f"'{self._time_field}' must be a number")
            if not math.isfinite(raw):
                raise InvalidEvent(Reason.INVALID_VALUE, f"'{self._time_field}' is not finite")
            time_ms = int(raw * self._scale)
        if self._max_past_ms is not None and time_ms < now_ms - self._max_past_ms:
            raise InvalidEvent(
                Reason.EVENT_TIME_OUT_OF_RANGE, f"event time {time_ms} ms is older than max_past"
            )
        if self._max_future_ms is not None and time_ms > now_ms + self._max_future_ms:
            raise InvalidEvent(
                Reason.EVENT_TIME_OUT_OF_RANGE, f"event time {time_ms} ms is later than max_future"
            )
        return time_ms


_JSON_TYPES: dict[FieldType, str] = {
    FieldType.STRING: "string",
    FieldType.INT: "integer",
    FieldType.FLOAT: "number",
    FieldType.BOOL: "boolean",
}


def event_json_schema(schema: EventSchema, title: str) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the events a producer may send."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, spec in schema.all_fields().items():
        prop: dict[str, Any] = {"type": _JSON_TYPES[spec.type]}
        if spec.description:
            prop["description"] = spec.description
        if spec.default is not None:
            prop["default"] = spec.default
        if name in schema.entities:
            prop["description"] = "entity key"
            if spec.type is FieldType.STRING:
                prop["minLength"] = 1
        if name == schema.id:
            prop["description"] = "unique event id"
        properties[name] = prop
        if spec.required:
            required.append(name)
    time_type: dict[str, Any] = (
        {"type": "string", "format": "date-time"}
        if schema.time.unit is TimeUnit.ISO8601
        else {"type": "number"}
    )
    time_type["description"] = f"event time ({schema.time.unit.value} since the Unix epoch)"
    properties[schema.time.field] = time_type
    required.append(schema.time.field)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{title} event",
        "type": "object",
        "properties": properties,
        "required": sorted(set(required)),
        "additionalProperties": True,
    }


def prediction_json_schema(
    schema: EventSchema, title: str, *, decision: Literal["boolean"] = "boolean"
) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the predictions a downstream consumer reads."""
    version = {"type": ["string", "null"]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{title} prediction",
        "type": "object",
        "properties": {
            "event_id": {"type": "string", "description": f"the event's '{schema.id}'"},
            "keys": {
                "type": "object",
                "properties": {e: {"type": "string"} for e in schema.entities},
                "required": list(schema.entities),
            },
            "score": {"type": "number", "description": "final score (after adaptation)"},
            "scores": {
                "type": "object",
                "description": "score of each output: onnx, and river when adaptation is on",
                "additionalProperties": {"type": "number"},
            },
            "decision": {"type": decision, "description": "score >= threshold"},
            "model": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
                "required": ["name", "version"],
            },
            "adaptation_version": version,
            "event_time": {"type": "integer", "description": "event time, ms since the epoch"},
            "scored_at": {"type": "integer", "description": "scoring time, ms since the epoch"},
            "late": {"type": "boolean", "description": "arrived after the allowed lateness"},
            "replayed": {
                "type": "boolean",
                "description": "a redelivery; features as first scored",
            },
        },
        "required": [
            "event_id",
            "keys",
            "score",
            "scores",
            "decision",
            "model",
            "adaptation_version",
            "event_time",
            "scored_at",
            "late",
            "replayed",
        ],
        "additionalProperties": False,
    }


def entity_keys(record: Mapping[str, Any], entities: tuple[str, ...]) -> dict[str, str]:
    return {e: str(record[e]) for e in entities}
