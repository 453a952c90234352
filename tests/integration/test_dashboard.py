"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against a live
worker: the page loads without console errors and its charts follow the stream.

Set STREAMFER_DASHBOARD_SCREENSHOT=docs/dashboard.png to also save a screenshot (the run
then streams for longer, so the charts have a few minutes of history: the README's image).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from inference.onnx_model import ModelRef
from streams.ops.dashboard.collector import DashboardConfig
from streams.ops.dashboard.scrape import (
    Scrape,
    histogram_quantile,
    interval_between,
    parse_metrics,
)
from streams.ops.dashboard.server import DashboardThread
from streams.ops.topics import ensure_topics
from streams.spec import Connections, PipelineSpec
from streams.workloads.synthetic import CardPayments
from tests.integration.harness import make_spec, start_worker

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling Google on a closed network.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = os.environ.get("STREAMFER_DASHBOARD_SCREENSHOT")


# -- the arithmetic behind the charts ---------------------------------------------------------
def test_histogram_quantile_interpolates_like_prometheus():
    buckets = {0.1: 10.0, 0.5: 30.0, 1.0: 40.0, math.inf: 40.0}
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * 10 / 20)
    assert histogram_quantile(0.99, {1.0: 0.0, math.inf: 5.0}) == 1.0
    assert histogram_quantile(0.5, {1.0: 0.0, math.inf: 0.0}) is None


def test_rates_survive_a_worker_restart():
    def scrape(t: float, events: float) -> Scrape:
        text = f"# TYPE streamfer_events_in counter\nstreamfer_events_in_total {events}\n"
        return parse_metrics(text, t)

    steady = interval_between([(scrape(0, 100), scrape(2, 300))])
    assert steady.counters["events_in"] == 200 and steady.seconds == 2
    restarted = interval_between([(scrape(2, 300), scrape(4, 50))])
    assert restarted.counters["events_in"] == 50


# -- the page in a browser --------------------------------------------------------------------
class Feed:
    """Produces a wave of fresh events (and one undecodable message) every half second."""

    def __init__(self, conn: Connections, spec: PipelineSpec, seconds: float) -> None:
        self._producer = Producer(conn.kafka_config(**{"linger.ms": 5}))
        self._spec = spec
        self._until = time.monotonic() + seconds
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def seconds_left(self) -> float:
        return self._until - time.monotonic()

    def _run(self) -> None:
        wave = 0
        while not self.stop.is_set() and time.monotonic() < self._until:
            wave += 1
            # Busier and quieter moments, so the charts have a shape.
            n = int(300 + 250 * math.sin(wave / 6))
            now = int(time.time() * 1000)
            events = CardPayments(
                n, seed=wave, n_cards=500, rate=2 * n, end_ms=now, run_id=f"w{wave}"
            )
            for event in events.events():
                self._producer.produce(
                    self._spec.topics.events, orjson.dumps(event), event["card_id"].encode()
                )
            if wave % 3 == 0:
                self._producer.produce(self._spec.topics.events, b'{"event_id": "broken')
            self._producer.flush(10)
            self.sent += n
            self.stop.wait(0.5)


def chart(page: Any, name: str) -> dict[str, Any]:
    return page.eval_on_selector(
        f"#chart-{name}",
        """el => ({
            points: Number(el.dataset.points || 0),
            updates: Number(el.dataset.updates || 0),
            last: JSON.parse(el.dataset.last || "{}"),
            paths: [...el.querySelectorAll("path.series")].map(p => p.getAttribute("d")),
        })""",
    )


def wait_until(page: Any, predicate: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(250)


@contextmanager
def browser_page() -> Iterator[tuple[Any, list[str]]]:
    """A page in headless Debian Chromium, and the console errors/warnings it logs."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on(
            "console",
            lambda m: (
                problems.append(f"console {m.type}: {m.text}")
                if m.type in ("error", "warning")
                else None
            ),
        )
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        try:
            yield page, problems
        finally:
            browser.close()


@pytest.mark.integration
def test_page_loads_cleanly_and_charts_follow_the_stream(conn, model_file, unique):
    spec = make_spec(
        unique, {"path": str(model_file)}, batching={"max_size": 200, "max_wait": "100ms"}
    )
    ensure_topics(conn, spec)
    worker = start_worker(spec, conn)
    metrics_port = worker.worker.metrics.serve("127.0.0.1", 0)
    dashboard = DashboardThread(
        DashboardConfig(
            targets=(f"http://127.0.0.1:{metrics_port}/metrics",),
            connections=conn,
            spec=spec,
            interval_s=0.5,
        )
    )
    feed = Feed(conn, spec, seconds=240 if SCREENSHOT else 30)
    try:
        with browser_page() as (page, problems):
            page.goto(f"http://127.0.0.1:{dashboard.port}/", wait_until="load")

            wait_until(
                page,
                lambda: chart(page, "throughput")["last"].get("events in", 0) > 0,
                "throughput to show events flowing",
            )
            before = chart(page, "throughput")
            wait_until(
                page,
                lambda: chart(page, "throughput")["points"] > before["points"] + 4,
                "more throughput points",
            )
            after = chart(page, "throughput")
            assert after["updates"] > before["updates"] and after["paths"] != before["paths"]

            wait_until(page, lambda: chart(page, "lag")["points"] > 0, "lag of the group")
            assert spec.group in chart(page, "lag")["last"]
            assert spec.group in page.inner_text("#lag-table")
            wait_until(
                page, lambda: chart(page, "latency")["last"].get("p50", 0) > 0, "latency p50"
            )
            wait_until(
                page,
                lambda: "decode_error" in chart(page, "dead-letters")["last"],
                "dead letters by reason",
            )
            wait_until(page, lambda: chart(page, "batch")["last"].get("mean", 0) > 0, "batches")
            assert chart(page, "stages")["last"].get("features", 0) > 0

            version = ModelRef.for_file("card-fraud", model_file).version
            assert f"card-fraud v{version}" in page.inner_text("#models-table")
            assert "no learner" in page.inner_text("#models-table")
            assert page.is_visible("#panel-prequential .no-learner")
            assert page.is_visible("#panel-drift .no-learner")
            assert page.inner_text("#status") == "live"
            assert "up" in page.inner_text("#targets-table")

            if SCREENSHOT:  # while events still flow, a few minutes into the run
                feed.thread.join(max(feed.seconds_left - 5, 0))
                page.screenshot(path=str(Path(SCREENSHOT)), full_page=True)
    finally:
        feed.stop.set()
        feed.thread.join(30)
        dashboard.stop()
        worker.stop()
        worker.join()
    assert not problems, problems


@pytest.mark.integration
def test_learner_panels_read_the_learner_metrics_contract():
    """A stand-in learner exporting the documented metrics lights up the learner panels."""
    registry = CollectorRegistry()
    accuracy = Gauge("streamfer_prequential_accuracy", "", ["output"], registry=registry)
    for output, value in (("onnx", 0.81), ("river", 0.9), ("final", 0.89)):
        accuracy.labels(output).set(value)
    alerts = Counter("streamfer_drift_alerts", "", ["detector", "subject"], registry=registry)
    alerts.labels("adwin", "final").inc(2)
    info = Gauge("streamfer_adaptation_info", "", ["version", "mode"], registry=registry)
    info.labels("7", "stack").set(1)
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    dashboard = DashboardThread(DashboardConfig(targets=(url,), connections=None, interval_s=0.3))
    try:
        with browser_page() as (page, problems):
            page.goto(f"http://127.0.0.1:{dashboard.port}/", wait_until="load")
            wait_until(page, lambda: chart(page, "prequential")["points"] >= 6, "prequential")
            last = chart(page, "prequential")["last"]
            assert last == {
                "accuracy (onnx)": 0.81,
                "accuracy (river)": 0.9,
                "accuracy (final)": 0.89,
            }
            assert chart(page, "drift")["last"] == {"drift alerts": 2}
            assert "detector=adwin, subject=final" in page.inner_text("#drift-table")
            assert "v7 (stack)" in page.inner_text("#models-table")
            assert not page.is_visible("#panel-prequential .no-learner")
            assert not page.is_visible("#panel-drift .no-learner")
    finally:
        dashboard.stop()
        server.shutdown()
    assert not problems, problems
