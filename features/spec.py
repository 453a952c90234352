"""Typed feature declarations: windowed/decayed aggregations per entity, stateless transforms.

`FeatureSpec` is the `features:` section of a pipeline spec. Every duration is held as
integer milliseconds (event time is integer milliseconds everywhere in `features`); the
YAML accepts "500ms", "30s", "10m", "1h", "7d" or a plain number of seconds. Validation
errors name the offending field and say how to fix it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from features.duration import DurationMs, format_duration

AggKind = Literal[
    "count",
    "sum",
    "mean",
    "min",
    "max",
    "last",
    "seconds_since_last",
    "count_distinct",
    "decayed_sum",
    "decayed_mean",
]
DECAYED: frozenset[str] = frozenset({"decayed_sum", "decayed_mean"})
# Which aggregations read a value field, and which take a `fill` for "no value in window".
_NEEDS_FIELD = frozenset({"sum", "mean", "min", "max", "last", "count_distinct"} | DECAYED)
_TAKES_FILL = frozenset({"min", "max", "last", "seconds_since_last"})

TransformOp = Literal["raw", "log1p", "bucketize", "one_hot", "hash"]


def _categories_as_text(value: Any) -> Any:
    # Events are matched by str(value), so `categories: [5411, 5812]` means "5411", "5812".
    if isinstance(value, list | tuple):
        return tuple(v if isinstance(v, str | bool) else str(v) for v in value)
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Aggregation(_Frozen):
    """One aggregation of one entity: windowed over fixed buckets, or exponentially decayed."""

    name: str = Field(min_length=1)
    entity: str = Field(min_length=1, description="event field whose value keys the state")
    agg: AggKind
    field: str | None = Field(default=None, description="event field aggregated")
    window: DurationMs | None = None
    bucket: DurationMs | None = None
    half_life: DurationMs | None = None
    fill: float | None = Field(default=None, description="value when the window is empty")

    @model_validator(mode="after")
    def _check(self) -> Aggregation:
        agg = f"agg '{self.agg}'"
        if self.agg in _NEEDS_FIELD and self.field is None:
            raise ValueError(f"{agg} needs 'field' (the event field to aggregate)")
        if self.agg not in _NEEDS_FIELD and self.field is not None:
            raise ValueError(f"{agg} takes no 'field'; remove field: {self.field}")
        if self.fill is not None and self.agg not in _TAKES_FILL:
            raise ValueError(
                f"{agg} takes no 'fill' (it reads 0 when empty); 'fill' is for "
                f"{', '.join(sorted(_TAKES_FILL))}"
            )
        if self.agg in DECAYED:
            if self.window is not None or self.bucket is not None:
                raise ValueError(f"{agg} has no window or bucket; remove them and set half_life")
            if not self.half_life:
                raise ValueError(f"{agg} needs a positive 'half_life', e.g. half_life: 30m")
            return self
        if self.half_life is not None:
            raise ValueError(f"half_life is only for decayed_sum/decayed_mean, not {agg}")
        if not self.window or not self.bucket:
            raise ValueError(
                f"{agg} needs positive 'window' and 'bucket', e.g. window: 1h, bucket: 5m"
            )
        if self.window % self.bucket:
            raise ValueError(
                f"window ({format_duration(self.window)}) must be a whole multiple of bucket "
                f"({format_duration(self.bucket)}); change window or bucket"
            )
        return self

    @property
    def windowed(self) -> bool:
        """True for bucketed aggregations, False for decayed ones."""
        return self.agg not in DECAYED

    @property
    def n_buckets(self) -> int:
        """Buckets per window (`window / bucket`); 0 for decayed aggregations."""
        return self.window // self.bucket if self.window and self.bucket else 0

    @property
    def fill_value(self) -> float:
        """The value read for an empty window (`fill`, default 0)."""
        return 0.0 if self.fill is None else self.fill

    def state_ttl_ms(self, lateness_ms: int) -> int:
        """How long state must live: the retention horizon, or 10 half-lives (1/1024 left)."""
        if self.half_life:
            return 10 * self.half_life
        assert self.window and self.bucket
        return self.window + lateness_ms + self.bucket


class Transform(_Frozen):
    """A stateless per-event column (or columns) computed from one event field."""

    name: str = Field(min_length=1)
    field: str = Field(min_length=1)
    op: TransformOp
    boundaries: tuple[float, ...] | None = None
    categories: Annotated[tuple[str, ...] | None, BeforeValidator(_categories_as_text)] = None
    buckets: int | None = None
    fill: float | None = Field(default=None, description="value when the field is missing")

    @model_validator(mode="after")
    def _check(self) -> Transform:
        op = f"op '{self.op}'"
        needs = {"bucketize": "boundaries", "one_hot": "categories", "hash": "buckets"}
        for param in ("boundaries", "categories", "buckets"):
            if getattr(self, param) is not None and needs.get(self.op) != param:
                raise ValueError(f"{op} takes no '{param}'; remove it")
        if self.op in needs and getattr(self, needs[self.op]) is None:
            example = {"bucketize": "[10, 50, 200]", "one_hot": "[web, pos]", "hash": "8"}
            raise ValueError(
                f"{op} needs '{needs[self.op]}', e.g. {needs[self.op]}: {example[self.op]}"
            )
        if self.fill is not None and self.op in ("one_hot", "hash"):
            raise ValueError(f"{op} takes no 'fill' (a missing value gives all-zero columns)")
        if self.boundaries is not None and (
            not self.boundaries
            or any(not b < c for b, c in zip(self.boundaries, self.boundaries[1:], strict=False))
        ):
            raise ValueError("boundaries must be a non-empty, strictly increasing list")
        if self.categories is not None and (
            not self.categories or len(set(self.categories)) != len(self.categories)
        ):
            raise ValueError("categories must be a non-empty list without repeats")
        if self.buckets is not None and self.buckets < 1:
            raise ValueError(f"buckets must be at least 1, not {self.buckets}")
        return self

    @property
    def columns(self) -> tuple[str, ...]:
        """Output column names: `name=category` per category, `name#i` per hash bucket."""
        if self.op == "one_hot":
            assert self.categories is not None
            return tuple(f"{self.name}={c}" for c in self.categories)
        if self.op == "hash":
            assert self.buckets is not None
            return tuple(f"{self.name}#{i}" for i in range(self.buckets))
        return (self.name,)

    @property
    def fill_value(self) -> float:
        """The value for a missing field (`fill`, default 0)."""
        return 0.0 if self.fill is None else self.fill


# Entity fields per spec (features.lua packs a replay record's field number in a byte).
MAX_ENTITIES = 255


class FeatureSpec(_Frozen):
    """All features of a pipeline: aggregations (stateful) then transforms (stateless)."""

    lateness: DurationMs = 0
    replay_ttl: DurationMs = 86_400_000
    aggregations: tuple[Aggregation, ...] = ()
    transforms: tuple[Transform, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> FeatureSpec:
        if self.replay_ttl <= 0:
            raise ValueError("replay_ttl must be positive, e.g. replay_ttl: 24h")
        if len(self.entities) > MAX_ENTITIES:
            raise ValueError(
                f"{len(self.entities)} entity fields; at most {MAX_ENTITIES} (a replay record "
                "names its entity field in one byte)"
            )
        seen: dict[str, str] = {}
        places = [(f"aggregations[{i}]", (a.name,)) for i, a in enumerate(self.aggregations)]
        places += [(f"transforms[{i}]", t.columns) for i, t in enumerate(self.transforms)]
        for place, columns in places:
            for column in columns:
                if column in seen:
                    raise ValueError(
                        f"{place}: feature name '{column}' is already used by {seen[column]}; "
                        "give each feature a unique name"
                    )
                seen[column] = place
        return self

    @property
    def aggregation_names(self) -> tuple[str, ...]:
        """Aggregation columns, in declared order."""
        return tuple(a.name for a in self.aggregations)

    @property
    def transform_names(self) -> tuple[str, ...]:
        """Transform columns, in declared order (one-hot and hash expand to several)."""
        return tuple(c for t in self.transforms for c in t.columns)

    @property
    def names(self) -> tuple[str, ...]:
        """All output columns: aggregations, then transforms."""
        return self.aggregation_names + self.transform_names

    @property
    def entities(self) -> tuple[str, ...]:
        """Entity fields used, in order of first use."""
        return tuple(dict.fromkeys(a.entity for a in self.aggregations))

    @property
    def fields_used(self) -> tuple[str, ...]:
        """Every event field read (entities, aggregated fields, transform fields), in order."""
        fields = [a.entity for a in self.aggregations]
        fields += [a.field for a in self.aggregations if a.field is not None]
        fields += [t.field for t in self.transforms]
        return tuple(dict.fromkeys(fields))
