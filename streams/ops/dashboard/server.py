"""`streamfer dashboard`: a local web page with live charts of the workers and the learner.

The server does the collecting; the page only draws. Every `interval_s` the server scrapes
each target's Prometheus `/metrics` (workers, and the learner when it runs), reads
consumer lag straight from Kafka (`streams.ops.lag`), turns counters into rates and histogram
buckets into percentiles over the last interval (as Prometheus' `rate()` and
`histogram_quantile()` would), and appends one point to a bounded history. The page
(`static/`, vanilla JS drawing SVG: no CDN, works offline) polls
`/api/state?since=<seq>` once a second for the new points.

The learner's panels read a metrics contract (docs/operations.md, "Learner metrics"):
gauges `streamfer_prequential_<metric>{output=…}`, the counter
`streamfer_drift_alerts_total{detector=…,subject=…}` and the gauge
`streamfer_adaptation_info{version=…,mode=…}`. While no target exports any of them the
panels say "no learner".
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from streams.ops.lag import LagReader, LagReport, LagWindow
from streams.spec import Connections, PipelineSpec

if TYPE_CHECKING:  # aiohttp is imported where it is used: `streamfer --help` stays fast
    from aiohttp import ClientSession, web

log = logging.getLogger(__name__)

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
        for hist in ("streamfer_end_to_end_seconds", "streamfer_batch_size"):
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


# -- the collector ---------------------------------------------------------------------------
@dataclass
class TargetStatus:
    """What the page shows about one /metrics endpoint."""

    url: str
    up: bool = False
    error: str | None = None
    last_scrape: float | None = None
    models: list[dict[str, str]] = field(default_factory=list)
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
                self.lag, self.lag_error = None, str(exc)
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
            status.up, status.error = False, f"{type(exc).__name__}: {exc}"
            return None
        status.up, status.error, status.last_scrape = True, None, scrape.taken_at
        return scrape

    @staticmethod
    def _describe_target(status: TargetStatus, scrape: Scrape) -> None:
        status.models = [dict(labels) for labels in scrape.samples.get("streamfer_model_info", {})]
        status.adaptation = [dict(labels) for labels in scrape.samples.get(ADAPTATION_INFO, {})]
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
            "targets": [vars(t) for t in self.targets.values()],
            "lag": self.lag.to_json() if self.lag is not None else None,
            "lag_error": self.lag_error,
            "learner": self.learner,
            "drift": self.drift,
        }


# -- the web server --------------------------------------------------------------------------
STATIC = importlib.resources.files("streams.ops.dashboard").joinpath("static")


class DashboardServer:
    """aiohttp app: `/` the page, `/static/…` its assets, `/api/state` the data."""

    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self.collector = Collector(config)
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None

    def app(self) -> web.Application:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/healthz", self._health)
        app.router.add_static("/static/", Path(str(STATIC)), show_index=False)
        return app

    async def start(self, host: str, port: int) -> int:
        """Serve on host:port (0: any free port) and start collecting; returns the port."""
        from aiohttp import web

        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self._task = asyncio.create_task(self._collect())
        server = site._server
        assert server is not None
        return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._runner is not None:
            await self._runner.cleanup()

    async def _collect(self) -> None:
        from aiohttp import ClientSession, ClientTimeout

        timeout = ClientTimeout(total=max(min(self.config.interval_s, 5.0), 0.5))
        async with ClientSession(timeout=timeout) as session:
            while True:
                started = time.monotonic()
                try:
                    await self.collector.tick(session)
                except Exception:  # never let one bad round stop the dashboard
                    log.exception("dashboard collection round failed")
                elapsed = time.monotonic() - started
                await asyncio.sleep(max(self.config.interval_s - elapsed, 0.05))

    async def _index(self, _request: web.Request) -> web.Response:
        from aiohttp import web

        html = STATIC.joinpath("index.html").read_text()
        return web.Response(text=html, content_type="text/html")

    async def _state(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            since = 0
        from aiohttp import web

        body = orjson.dumps(self.collector.state(since), option=orjson.OPT_SERIALIZE_NUMPY)
        return web.Response(body=body, content_type="application/json")

    async def _health(self, _request: web.Request) -> web.Response:
        from aiohttp import web

        return web.Response(text="ok")


class DashboardThread:
    """The dashboard on its own event loop in a daemon thread (tests, notebooks)."""

    def __init__(self, config: DashboardConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = DashboardServer(config)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, args=(host, port), daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error

    def _run(self, host: str, port: int) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self.port = self._loop.run_until_complete(self.server.start(host, port))
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)


def default_targets(spec: PipelineSpec | None, workers: int) -> tuple[str, ...]:
    """Where `streamfer run -s SPEC --workers N` serves /metrics: port, port+1, …"""
    if spec is None or spec.metrics.port == 0:
        return ()
    host = "127.0.0.1" if spec.metrics.host in ("0.0.0.0", "::") else spec.metrics.host
    return tuple(f"http://{host}:{spec.metrics.port + i}/metrics" for i in range(workers))
