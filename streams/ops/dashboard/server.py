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
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from streams.ops.dashboard.collector import (
    Collector,
    DashboardConfig,
)
from streams.spec import PipelineSpec

if TYPE_CHECKING:  # aiohttp is imported where it is used: `streamfer --help` stays fast
    from aiohttp import web

log = logging.getLogger(__name__)

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
