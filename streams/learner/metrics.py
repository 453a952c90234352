"""The learner's Prometheus metrics, served by the app's web server at /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class LearnerMetrics:
    """Prometheus metrics of the learner, served on the app's web server at /metrics.

    The first three follow the dashboard's contract (docs/operations.md, "Learner metrics").
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.window = {
            metric: Gauge(
                f"streamfer_prequential_{metric}",
                f"prequential {metric} over the current tumbling window",
                ["output"],
                registry=r,
            )
            for metric in ("accuracy", "roc_auc", "log_loss", "mae", "rmse")
        }
        self.drift = Counter(
            "streamfer_drift_alerts", "drift detections", ["detector", "subject"], registry=r
        )
        self.info = Gauge(
            "streamfer_adaptation_info", "last published snapshot", ["version", "mode"], registry=r
        )
        self.labels = Counter(
            "streamfer_learner_labels", "labels by outcome", ["outcome"], registry=r
        )
        self.snapshots = Counter("streamfer_learner_snapshots", "snapshots published", registry=r)
        self.pending = Gauge("streamfer_learner_pending_labels", "labels in retry", registry=r)
        self.labels_seen = Gauge("streamfer_learner_labels_seen", "labels learned", registry=r)
        self.promoted = Gauge("streamfer_learner_promoted", "challenger promoted", registry=r)
        self.overall = Gauge(
            "streamfer_learner_prequential_overall",
            "prequential metric over all windows",
            ["output", "metric"],
            registry=r,
        )
