"""Prometheus metrics of one worker process, on its own registry and HTTP endpoint.

Metrics are observed once per batch (counts added in bulk), never per event.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
# Freshness targets (docs/adaptation.md): p50 ≤ 20 ms, p99 ≤ 100 ms (linear) / 500 ms (ARF).
_FRESHNESS_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 120.0)


class WorkerMetrics:
    """The catalog in docs/operations.md; one instance per worker process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_in = Counter(
            "streamfer_events_in", "Messages consumed from the events topic", registry=r
        )
        self.predictions_out = Counter(
            "streamfer_predictions_out", "Predictions acknowledged by the broker", registry=r
        )
        self.dead_letters = Counter(
            "streamfer_dead_letters",
            "Messages sent to the dead-letter topic",
            ["reason"],
            registry=r,
        )
        self.late_events = Counter(
            "streamfer_late_events", "Events beyond the allowed lateness (not applied)", registry=r
        )
        self.replayed_events = Counter(
            "streamfer_replayed_events",
            "Redelivered events answered from recorded features",
            registry=r,
        )
        self.batch_size = Histogram(
            "streamfer_batch_size", "Messages per micro-batch", buckets=_SIZE_BUCKETS, registry=r
        )
        self.batch_wait = Histogram(
            "streamfer_batch_wait_seconds",
            "Time spent filling a micro-batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stage = Histogram(
            "streamfer_stage_seconds",
            "Time per batch in each stage",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end = Histogram(
            "streamfer_end_to_end_seconds",
            "Event time to prediction produced (batch median)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "streamfer_consumer_lag",
            "Messages behind the log end",
            ["topic", "partition"],
            registry=r,
        )
        self.model_info = Gauge(
            "streamfer_model_info",
            "Model in use (value 1)",
            ["model", "version", "provider"],
            registry=r,
        )
        self.shadow_model_info = Gauge(
            "streamfer_shadow_model_info",
            "Shadow candidate scored beside the model, to the prediction log only (value 1)",
            ["model", "version"],
            registry=r,
        )
        self.model_swap_failures = Counter(
            "streamfer_model_swap_failures", "New model versions refused", registry=r
        )
        self.adaptation_info = Gauge(
            "streamfer_adaptation_info",
            "Adaptation snapshot in use (value 1)",
            ["version", "mode"],
            registry=r,
        )
        self.freshness = Histogram(
            "streamfer_adaptation_freshness_seconds",
            "Label production to the first batch scored by a model that learned it",
            buckets=_FRESHNESS_BUCKETS,
            registry=r,
        )
        self.labels_behind = Gauge(
            "streamfer_adaptation_labels_behind",
            "Examples in the log the served River replica has not applied yet",
            registry=r,
        )
        self.snapshot_rejections = Counter(
            "streamfer_snapshot_rejections",
            "Adaptation snapshots refused (bad signature)",
            registry=r,
        )
        self.redis_errors = Counter(
            "streamfer_redis_errors", "Failed Redis calls (retried)", registry=r
        )
        self.model_errors = Counter(
            "streamfer_model_errors", "Failed inference runs (retried)", registry=r
        )
        self.rebalances = Counter(
            "streamfer_rebalances", "Partition assignment changes", ["kind"], registry=r
        )
        self.producers_replaced = Counter(
            "streamfer_producers_replaced",
            "Producers replaced after their records went unacknowledged while the broker "
            "answered (their batch is consumed again)",
            registry=r,
        )
        self.paused = Gauge(
            "streamfer_paused", "1 while consumption is paused for backpressure", registry=r
        )
        self.feature_state_lost = Gauge(
            "streamfer_feature_state_lost",
            "1 while the feature state is lost (Redis lost data): not scoring until rebuilt",
            registry=r,
        )
        self.stalled = Gauge(
            "streamfer_stalled",
            "1 once no batch finished within the stall deadline (the worker then exits)",
            registry=r,
        )
        self._model_labels: tuple[str, str, str] | None = None
        self._shadow_labels: tuple[str, str] | None = None
        self._lag_series: set[tuple[str, str]] = set()

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics endpoint; returns the bound port (port 0 picks a free one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)

    def set_model(self, name: str, version: str, provider: str) -> None:
        if self._model_labels is not None:
            self.model_info.remove(*self._model_labels)
        self._model_labels = (name, version, provider)
        self.model_info.labels(*self._model_labels).set(1)

    def set_shadow(self, name: str, version: str | None) -> None:
        """The shadow candidate now scoring beside the model (None: no shadow)."""
        if self._shadow_labels is not None:
            self.shadow_model_info.remove(*self._shadow_labels)
            self._shadow_labels = None
        if version is not None:
            self._shadow_labels = (name, version)
            self.shadow_model_info.labels(*self._shadow_labels).set(1)

    def observe_freshness(self, ages_s: np.ndarray, behind: int) -> None:
        """A batch's freshness, in bulk: the ages of the labels it is the first to be scored
        with (one histogram update per batch, not one per label), and the labels behind."""
        if len(ages_s):
            hist = self.freshness
            # prometheus_client keeps per-bucket (not cumulative) counts, one per upper bound,
            # and has no bulk observe: add each bucket's count once.
            bounds = np.asarray(hist._upper_bounds)
            index = np.searchsorted(bounds, np.maximum(ages_s, 0.0), side="left")
            for i, count in zip(*np.unique(index, return_counts=True), strict=True):
                hist._buckets[int(i)].inc(int(count))
            hist._sum.inc(float(np.maximum(ages_s, 0.0).sum()))
        self.labels_behind.set(behind)

    def set_adaptation(self, version: str | None, mode: str) -> None:
        self.adaptation_info.clear()
        self.adaptation_info.labels(version or "none", str(mode)).set(1)

    def on_stats(self, stats_json: str) -> None:
        """librdkafka statistics callback: per-partition consumer lag, no extra round trips.

        Series of partitions no longer fetched (revoked) are removed, so lag summed over the
        workers of a group never counts a partition twice after a rebalance.
        """
        stats: dict[str, Any] = orjson.loads(stats_json)
        seen: set[tuple[str, str]] = set()
        for topic, tstats in stats.get("topics", {}).items():
            for partition, pstats in tstats.get("partitions", {}).items():
                lag = pstats.get("consumer_lag", -1)
                active = pstats.get("fetch_state") == "active"
                if partition != "-1" and active and lag is not None and lag >= 0:
                    self.consumer_lag.labels(topic, partition).set(lag)
                    seen.add((topic, partition))
        for gone in self._lag_series - seen:
            self.consumer_lag.remove(*gone)
        self._lag_series = seen
