"""The dashboard's collector: every interval it scrapes each target's /metrics, reads
consumer lag from Kafka and appends one point to a bounded history the page draws."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streams.ops.dashboard.scrape import (
    ADAPTATION_INFO,
    DRIFT_ALERTS,
    Scrape,
    interval_between,
    parse_metrics,
    point_from,
)
from streams.ops.lag import LagReader, LagReport, LagWindow
from streams.security.redaction import redact, redact_url
from streams.spec import Connections, PipelineSpec

if TYPE_CHECKING:  # aiohttp is imported where it is used: `streamfer --help` stays fast
    from aiohttp import ClientSession


# -- the collector ---------------------------------------------------------------------------
@dataclass
class TargetStatus:
    """What the page shows about one /metrics endpoint."""

    url: str
    up: bool = False
    error: str | None = None
    last_scrape: float | None = None
    models: list[dict[str, str]] = field(default_factory=list)
    shadows: list[dict[str, str]] = field(default_factory=list)
    adaptation: list[dict[str, str]] = field(default_factory=list)
    paused: bool = False


@dataclass(frozen=True)
class DashboardConfig:
    """What to watch: metrics endpoints, consumer groups (empty: discovered), how often.

    Rates and percentiles span the last `rate_window_s` seconds of scrapes (like a
    Prometheus range of `[5s]`): per-interval values of bursty batch work are mostly noise.
    """

    targets: tuple[str, ...]
    connections: Connections | None
    groups: tuple[str, ...] = ()
    spec: PipelineSpec | None = None
    interval_s: float = 1.0
    rate_window_s: float = 5.0
    history: int = 900
    rediscover_s: float = 30.0


class Collector:
    """Scrapes targets and reads lag every interval; holds the points the page draws."""

    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self.points: deque[dict[str, Any]] = deque(maxlen=config.history)
        self.targets = {url: TargetStatus(url) for url in config.targets}
        self.lag: LagReport | None = None
        self.lag_error: str | None = None
        self.drift: dict[str, float] = {}
        self.learner = False
        self._recent: dict[str, deque[Scrape]] = {}
        self._seq = 0
        self._reader: LagReader | None = None
        self._rates = LagWindow(window_s=15.0)
        self._groups: list[str] = list(config.groups)
        self._discovered_at = -math.inf

    async def tick(self, session: ClientSession) -> None:
        """One round: scrape every target, read lag, derive one point."""
        now = time.time()
        scrapes = await asyncio.gather(*(self._scrape(session, url) for url in self.targets))
        pairs, current = [], []
        for url, scrape in zip(self.targets, scrapes, strict=True):
            if scrape is None:
                self._recent.pop(url, None)
                continue
            current.append(scrape)
            baseline = self._baseline(url, scrape)
            if baseline is not None:
                pairs.append((baseline, scrape))
            self._describe_target(self.targets[url], scrape)
        self.learner = any(scrape.has_learner_metrics for scrape in current)
        self.drift = {}
        for scrape in current:
            for labels, value in scrape.samples.get(DRIFT_ALERTS, {}).items():
                key = ", ".join(f"{k}={v}" for k, v in labels) or "all"
                self.drift[key] = self.drift.get(key, 0.0) + value
        if self.config.connections is not None:
            loop = asyncio.get_running_loop()
            try:
                self.lag = await loop.run_in_executor(None, self._read_lag)
                self.lag_error = None
            except Exception as exc:  # shown on the page; the next tick tries again
                self.lag, self.lag_error = None, redact(str(exc))
                self._reader = None
        self._seq += 1
        self.points.append(point_from(self._seq, now, interval_between(pairs), current, self.lag))

    def _baseline(self, url: str, scrape: Scrape) -> Scrape | None:
        """The oldest scrape of `url` within the rate window (keeping one that spans it)."""
        recent = self._recent.setdefault(url, deque())
        recent.append(scrape)
        window = max(self.config.rate_window_s, self.config.interval_s)
        while len(recent) > 2 and scrape.taken_at - recent[1].taken_at >= window:
            recent.popleft()
        return recent[0] if len(recent) > 1 else None

    async def _scrape(self, session: ClientSession, url: str) -> Scrape | None:
        status = self.targets[url]
        try:
            async with session.get(url) as response:
                response.raise_for_status()
                text = await response.text()
            scrape = parse_metrics(text, time.time())
        except Exception as exc:  # a target being down is data, not a crash
            status.up, status.error = False, redact(f"{type(exc).__name__}: {exc}")
            return None
        status.up, status.error, status.last_scrape = True, None, scrape.taken_at
        return scrape

    @staticmethod
    def _describe_target(status: TargetStatus, scrape: Scrape) -> None:
        status.models = [dict(labels) for labels in scrape.samples.get("streamfer_model_info", {})]
        status.adaptation = [dict(labels) for labels in scrape.samples.get(ADAPTATION_INFO, {})]
        shadows = scrape.samples.get("streamfer_shadow_model_info", {})
        status.shadows = [dict(labels) for labels in shadows]
        status.paused = scrape.total("streamfer_paused") > 0

    def _read_lag(self) -> LagReport:
        """Runs in a thread: the AdminClient calls block."""
        if self._reader is None:
            assert self.config.connections is not None
            self._reader = LagReader(self.config.connections, timeout_s=5.0)
        if not self.config.groups and time.monotonic() - self._discovered_at > (
            self.config.rediscover_s
        ):
            self._groups = self._discover(self._reader)
            self._discovered_at = time.monotonic()
        return self._rates.push(self._reader.snapshot(self._groups or None))

    def _discover(self, reader: LagReader) -> list[str]:
        """The spec's group and every group reading one of its topics; else all groups."""
        spec = self.config.spec
        if spec is None:
            return []
        topics = {spec.topics.events, spec.topics.predictions}
        topics |= {t for t in (spec.topics.labels, spec.topics.alerts) if t}
        found = {spec.group}
        snapshot = reader.snapshot(None, sorted(topics))
        found |= set(snapshot.committed)
        return sorted(found)

    def state(self, since: int = 0) -> dict[str, Any]:
        """The JSON the page polls: new points since `since`, and what is true right now."""
        spec = self.config.spec
        return {
            "seq": self._seq,
            "interval_s": self.config.interval_s,
            "title": f"streamfer · {spec.name}" if spec is not None else "streamfer",
            "points": [p for p in self.points if p["seq"] > since],
            # A target URL may carry basic-auth credentials: the page shows it masked.
            "targets": [{**vars(t), "url": redact_url(t.url)} for t in self.targets.values()],
            "lag": self.lag.to_json() if self.lag is not None else None,
            "lag_error": self.lag_error,
            "learner": self.learner,
            "drift": self.drift,
        }
