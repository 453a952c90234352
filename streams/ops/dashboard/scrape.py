"""Prometheus scrapes and the pure arithmetic over two of them: counters into rates,
histogram buckets into percentiles (as Prometheus' `rate()` and `histogram_quantile()`
would), one dashboard point per interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.ops.lag import LagReport

Labels = tuple[tuple[str, str], ...]
"""A sample's labels as a sorted tuple, so they can key a dict."""

PREQUENTIAL_PREFIX = "streamfer_prequential_"
DRIFT_FAMILY = "streamfer_drift_alerts"
DRIFT_ALERTS = f"{DRIFT_FAMILY}_total"
ADAPTATION_INFO = "streamfer_adaptation_info"
QUANTILES = (0.5, 0.95, 0.99)


# -- one scrape ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scrape:
    """The samples of one target's /metrics: sample name → labels → value."""

    taken_at: float
    samples: dict[str, dict[Labels, float]]
    families: frozenset[str] = frozenset()
    """Metric family names (counters without `_total`), present even with no samples yet."""

    @property
    def has_learner_metrics(self) -> bool:
        # Workers always declare the adaptation family; it means a learner only once it
        # has a sample (a snapshot in use). The learner's own families mean one as such.
        return bool(self.samples.get(ADAPTATION_INFO)) or any(
            f.startswith(PREQUENTIAL_PREFIX) or f == DRIFT_FAMILY for f in self.families
        )

    def total(self, name: str) -> float:
        return sum(self.samples.get(name, {}).values())

    def by(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for labels, value in self.samples.get(name, {}).items():
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0.0) + value
        return out

    def buckets(self, name: str, **match: str) -> dict[float, float]:
        """Cumulative counts of a histogram by upper bound, summed over other labels."""
        out: dict[float, float] = {}
        for labels, value in self.samples.get(f"{name}_bucket", {}).items():
            found = dict(labels)
            if any(found.get(k) != v for k, v in match.items()):
                continue
            le = float(found["le"])
            out[le] = out.get(le, 0.0) + value
        return out


def parse_metrics(text: str, taken_at: float) -> Scrape:
    """Prometheus text exposition → Scrape (raises ValueError on malformed text)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, dict[Labels, float]] = {}
    families: set[str] = set()
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = float(s.value)
    return Scrape(taken_at, samples, frozenset(families))


# -- pure arithmetic over two scrapes ---------------------------------------------------------
def histogram_quantile(q: float, cumulative: Mapping[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative bucket counts (None: no observations).

    Linear interpolation inside the bucket holding the q-th observation; the lowest bucket
    starts at 0; a quantile in the +Inf bucket is the highest finite bound.
    """
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    total = cumulative[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = cumulative[le]
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def _delta(now: float, before: float | None) -> float:
    """Counter increase; a smaller value means the process restarted (counted from 0)."""
    if before is None:
        return 0.0
    return now - before if now >= before else now


def _bucket_delta(now: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    if not now:
        return {}
    top = max(now)
    if before and now.get(top, 0.0) < before.get(top, 0.0):
        return dict(now)  # restarted: everything since the restart
    return {le: max(v - before.get(le, 0.0), 0.0) for le, v in now.items()}


@dataclass
class _Interval:
    """Increases over one interval, summed over targets."""

    seconds: float = 0.0
    counters: dict[str, float] = field(default_factory=dict)
    labelled: dict[str, dict[str, float]] = field(default_factory=dict)
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)

    def add_counter(self, name: str, value: float) -> None:
        self.counters[name] = self.counters.get(name, 0.0) + value

    def add_labelled(self, name: str, key: str, value: float) -> None:
        into = self.labelled.setdefault(name, {})
        into[key] = into.get(key, 0.0) + value

    def add_buckets(self, name: str, delta: dict[float, float]) -> None:
        into = self.buckets.setdefault(name, {})
        for le, v in delta.items():
            into[le] = into.get(le, 0.0) + v


_COUNTERS = {
    "events_in": "streamfer_events_in_total",
    "predictions_out": "streamfer_predictions_out_total",
    "late": "streamfer_late_events_total",
    "replayed": "streamfer_replayed_events_total",
    "redis_errors": "streamfer_redis_errors_total",
    "model_errors": "streamfer_model_errors_total",
}
_STAGES = ("decode", "features", "inference", "prediction_log", "encode", "produce")


def interval_between(pairs: Sequence[tuple[Scrape, Scrape]]) -> _Interval:
    """Counter and histogram increases between (before, now) scrapes of each target."""
    out = _Interval()
    spans = []
    for before, now in pairs:
        spans.append(now.taken_at - before.taken_at)
        for key, name in _COUNTERS.items():
            out.add_counter(key, _delta(now.total(name), before.total(name)))
        old = before.by("streamfer_dead_letters_total", "reason")
        for reason, value in now.by("streamfer_dead_letters_total", "reason").items():
            out.add_labelled("dead_letters", reason, _delta(value, old.get(reason, 0.0)))
        for hist in (
            "streamfer_end_to_end_seconds",
            "streamfer_batch_size",
            "streamfer_adaptation_freshness_seconds",
        ):
            out.add_buckets(hist, _bucket_delta(now.buckets(hist), before.buckets(hist)))
            out.sums[hist] = out.sums.get(hist, 0.0) + _delta(
                now.total(f"{hist}_sum"), before.total(f"{hist}_sum")
            )
        stage_sum = now.by("streamfer_stage_seconds_sum", "stage")
        stage_count = now.by("streamfer_stage_seconds_count", "stage")
        old_sum = before.by("streamfer_stage_seconds_sum", "stage")
        old_count = before.by("streamfer_stage_seconds_count", "stage")
        for stage in stage_sum:
            out.add_labelled("stage_sum", stage, _delta(stage_sum[stage], old_sum.get(stage, 0)))
            out.add_labelled(
                "stage_count", stage, _delta(stage_count.get(stage, 0), old_count.get(stage, 0))
            )
    out.seconds = sum(spans) / len(spans) if spans else 0.0
    return out


def _per_s(value: float, seconds: float) -> float | None:
    return value / seconds if seconds > 0 else None


def _mean(total: float, count: float) -> float | None:
    return total / count if count > 0 else None


def point_from(
    seq: int,
    now: float,
    interval: _Interval,
    current: Sequence[Scrape],
    lag: LagReport | None,
) -> dict[str, Any]:
    """One chart point: rates and percentiles over the interval, gauges as they are now."""
    s = interval.seconds
    e2e = interval.buckets.get("streamfer_end_to_end_seconds", {})
    fresh = interval.buckets.get("streamfer_adaptation_freshness_seconds", {})
    sizes = interval.buckets.get("streamfer_batch_size", {})
    batches = max(sizes.values()) if sizes else 0.0
    dead = interval.labelled.get("dead_letters", {})
    stage_sum = interval.labelled.get("stage_sum", {})
    stage_count = interval.labelled.get("stage_count", {})
    prequential: dict[str, float] = {}
    drift_total: float | None = None
    for scrape in current:
        for name, series in scrape.samples.items():
            if name.startswith(PREQUENTIAL_PREFIX) and not name.endswith("_created"):
                metric = name.removeprefix(PREQUENTIAL_PREFIX)
                for labels, value in series.items():
                    where = dict(labels).get("output") or ",".join(f"{k}={v}" for k, v in labels)
                    prequential[f"{metric} ({where})" if where else metric] = value
        if DRIFT_FAMILY in scrape.families:
            drift_total = (drift_total or 0.0) + scrape.total(DRIFT_ALERTS)
    return {
        "seq": seq,
        "t": now,
        "events_in": _per_s(interval.counters.get("events_in", 0.0), s),
        "predictions_out": _per_s(interval.counters.get("predictions_out", 0.0), s),
        "late": _per_s(interval.counters.get("late", 0.0), s),
        "replayed": _per_s(interval.counters.get("replayed", 0.0), s),
        "dead_letters": {r: _per_s(v, s) for r, v in sorted(dead.items())},
        "dead_letters_total": _per_s(sum(dead.values()), s),
        "e2e": {f"p{round(q * 100)}": histogram_quantile(q, e2e) for q in QUANTILES},
        # label produced → first batch scored by a model that learned it (replica serving)
        "freshness": {f"p{q}": histogram_quantile(q / 100, fresh) for q in (50, 99)},
        "labels_behind": sum(
            (sc.total("streamfer_adaptation_labels_behind") for sc in current), 0.0
        )
        if any("streamfer_adaptation_labels_behind" in sc.samples for sc in current)
        else None,
        "batch": {
            "mean": _mean(interval.sums.get("streamfer_batch_size", 0.0), batches),
            "p50": histogram_quantile(0.5, sizes),
            "p95": histogram_quantile(0.95, sizes),
        },
        "stages": {
            stage: _mean(stage_sum[stage], stage_count.get(stage, 0.0))
            for stage in _STAGES
            if stage in stage_sum
        },
        "lag": {g.group: g.lag for g in lag.groups} if lag is not None else {},
        "prequential": prequential,
        "drift_alerts": drift_total,
    }
