"""`streamfer learn`: the feedback service, a faust-streaming app.

    [labels] ─► librdkafka batch consume (N, within T) ─► join with the prediction log
        (one MGET) ─► River predict-then-learn ─► prequential metrics (Faust table, per
        window) ─► drift detectors ─► [alerts]    every K labels / T s ─► signed snapshot

Faust runs the app: the changelog-backed metrics table and its recovery, the web views,
the timers, producing alerts, signals. The labels themselves are read by a confluent-kafka
consumer inside the app, because faust-streaming's aiokafka consumer was seen skipping
records right after partition assignment (docs/adaptation.md shows the failure).

Exactly-once learning across a SIGKILL without Kafka transactions: each snapshot carries the
label offsets it includes (per partition: the next offset, and the offsets still waiting in
retry). On start the learner loads the newest snapshot, assigns the labels partitions at
those offsets, and skips what the snapshot already learned; so every label is learned once
into the model that serves. Metrics are deduplicated on their own: each table entry (one
label partition × one window) stores the label offsets it counted, in the same changelog
record as the sums, so a replayed label is never counted twice and a lost write is redone.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson
import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from inference.adaptation import (
    AdaptationMode,
    AdaptationSpec,
    AdaptationTask,
    LearnerState,
    OnlineLearner,
    SnapshotKeyMissing,
    SnapshotRejected,
    SnapshotStore,
    snapshot_key_from_env,
)
from inference.drift import DriftAlert, DriftMonitor
from inference.prequential import OUTPUTS, WindowMetrics, window_start
from streams.spec import Connections, PipelineSpec
from streams.worker.prediction_log import LoggedPrediction, PredictionLog

log = logging.getLogger(__name__)

TABLE = "prequential"


class LearnerError(Exception):
    """The learner cannot start as configured; the message says what to change."""


# -- offsets -------------------------------------------------------------------------------
class OffsetRanges:
    """A set of offsets as sorted disjoint [start, end) ranges (compact for runs)."""

    def __init__(self, ranges: Sequence[Sequence[int]] = ()) -> None:
        self.ranges: list[list[int]] = [[int(a), int(b)] for a, b in ranges]

    def __contains__(self, offset: int) -> bool:
        i = bisect.bisect_right(self.ranges, [offset, float("inf")]) - 1
        return i >= 0 and self.ranges[i][0] <= offset < self.ranges[i][1]

    def add(self, offset: int) -> None:
        if offset in self:
            return
        i = bisect.bisect_right(self.ranges, [offset, float("inf")])
        joins_left = i > 0 and self.ranges[i - 1][1] == offset
        joins_right = i < len(self.ranges) and self.ranges[i][0] == offset + 1
        if joins_left and joins_right:
            self.ranges[i - 1][1] = self.ranges[i][1]
            del self.ranges[i]
        elif joins_left:
            self.ranges[i - 1][1] = offset + 1
        elif joins_right:
            self.ranges[i][0] = offset
        else:
            self.ranges.insert(i, [offset, offset + 1])

    def __len__(self) -> int:
        return sum(b - a for a, b in self.ranges)


@dataclass
class PartitionProgress:
    """What the model has taken from one label partition."""

    next: int = 0  # one past the highest offset consumed
    pending: set[int] = field(default_factory=set)  # consumed, waiting for their prediction

    def resume_offset(self) -> int:
        return min(self.pending | {self.next})

    def already_learned(self, offset: int) -> bool:
        return offset < self.next and offset not in self.pending

    def to_json(self) -> dict[str, Any]:
        return {"next": self.next, "pending": sorted(self.pending)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PartitionProgress:
        return cls(int(data["next"]), {int(o) for o in data.get("pending", ())})


# -- labels --------------------------------------------------------------------------------
@dataclass
class LabelRecord:
    event_id: str
    label: float
    label_time_ms: int
    partition: int
    offset: int
    attempts: int = 0
    due: float = 0.0


def parse_label(raw: bytes | None, partition: int, offset: int) -> LabelRecord | None:
    """`{event_id, label, label_time}` → a record; None for anything malformed."""
    try:
        data = orjson.loads(raw or b"")
        label = data["label"]
        if isinstance(label, bool):
            label = float(label)
        return LabelRecord(
            str(data["event_id"]),
            float(label),
            int(data.get("label_time") or 0),
            partition,
            offset,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


# -- the tables the processor writes -------------------------------------------------------
class MetricsTable(Protocol):
    """Key → JSON value, each write sent to the changelog partition of its label partition."""

    def get(self, key: str) -> dict[str, Any] | None: ...
    def put(self, partition: int, key: str, value: dict[str, Any]) -> None: ...
    def items(self) -> list[tuple[str, dict[str, Any]]]: ...


class DictTable:
    """In-memory MetricsTable (unit tests, and the report's view of a changelog)."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    def put(self, partition: int, key: str, value: dict[str, Any]) -> None:
        self.data[key] = value

    def items(self) -> list[tuple[str, dict[str, Any]]]:
        return list(self.data.items())


def window_key(partition: int, start_ms: int) -> str:
    return f"w|{partition}|{start_ms}"


def merged_windows(
    items: Sequence[tuple[str, Mapping[str, Any]]], task: str
) -> dict[int, dict[str, WindowMetrics]]:
    """Table entries (per partition × window) merged per window start."""
    out: dict[int, dict[str, WindowMetrics]] = {}
    for key, value in items:
        if not key.startswith("w|") or value is None:
            continue
        start = int(key.rsplit("|", 1)[1])
        merged = out.setdefault(start, {o: WindowMetrics.new(task) for o in OUTPUTS})  # type: ignore[arg-type]
        for name in OUTPUTS:
            if name in value["outputs"]:
                merged[name] = merged[name].merge(
                    WindowMetrics.from_json(task, value["outputs"][name])  # type: ignore[arg-type]
                )
    return dict(sorted(out.items()))


def counter_total(items: Sequence[tuple[str, Mapping[str, Any]]], prefix: str) -> int:
    return sum(int(v["n"]) for k, v in items if k.startswith(prefix) and v is not None)


# -- the processor (no Kafka) --------------------------------------------------------------
@dataclass
class BatchResult:
    learned: int = 0
    retried: int = 0
    expired: int = 0
    skipped: int = 0
    bad: int = 0
    alerts: list[DriftAlert] = field(default_factory=list)
    windows: set[int] = field(default_factory=set)


class LabelProcessor:
    """Join → learn → metrics → drift for batches of labels; offsets bookkeeping included.

    Pure apart from the prediction-log read, so unit tests drive it with a dict table.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        prediction_log: PredictionLog,
        table: MetricsTable,
        learner: OnlineLearner,
        progress: dict[int, PartitionProgress],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.adaptation: AdaptationSpec = spec.adaptation
        self.log = prediction_log
        self.table = table
        self.learner = learner
        self.progress = progress
        self.clock = clock
        self.retry: list[LabelRecord] = []
        self.names = tuple(spec.features.names)
        self.task = self.adaptation.task.value
        self.threshold = spec.model.threshold
        drift = learner.state.drift
        if drift is None:
            d = self.adaptation.drift
            drift = DriftMonitor(
                d.detector,
                outputs=d.outputs,
                features=d.features,
                task=self.task,
                threshold=self.threshold,
            )
            learner.state.drift = drift
        self.drift: DriftMonitor = drift

    def consume(self, records: Sequence[LabelRecord | tuple[int, int]]) -> BatchResult:
        """A batch from the topic: labels, or (partition, offset) of malformed ones."""
        result = BatchResult()
        fresh: list[LabelRecord] = []
        for r in records:
            partition, offset = (r.partition, r.offset) if isinstance(r, LabelRecord) else r
            progress = self.progress.setdefault(partition, PartitionProgress())
            if progress.already_learned(offset):
                result.skipped += 1
                continue
            progress.next = max(progress.next, offset + 1)
            if isinstance(r, LabelRecord):
                fresh.append(r)
            else:
                result.bad += 1
                self._count(partition, offset, "b")
        self._join_and_learn(fresh, result)
        return result

    def due_retries(self) -> BatchResult:
        """Labels whose wait is over get another join attempt."""
        now = self.clock()
        due = [r for r in self.retry if r.due <= now]
        if not due:
            return BatchResult()
        self.retry = [r for r in self.retry if r.due > now]
        result = BatchResult()
        self._join_and_learn(due, result)
        return result

    def _join_and_learn(self, records: list[LabelRecord], result: BatchResult) -> None:
        if not records:
            return
        logged = self.log.read([r.event_id for r in records])
        found: list[tuple[LabelRecord, LoggedPrediction]] = []
        retry = self.adaptation.label_retry
        for record, entry in zip(records, logged, strict=True):
            progress = self.progress[record.partition]
            if entry is not None:
                found.append((record, entry))
                progress.pending.discard(record.offset)
            elif record.attempts < retry.attempts:
                record.due = self.clock() + retry.backoff / 1000 * 2**record.attempts
                record.attempts += 1
                self.retry.append(record)
                progress.pending.add(record.offset)
                result.retried += 1
            else:
                progress.pending.discard(record.offset)
                self._count(record.partition, record.offset, "x")
                result.expired += 1
        if found:
            self._learn(found, result)

    def _learn(
        self, found: list[tuple[LabelRecord, LoggedPrediction]], result: BatchResult
    ) -> None:
        n = len(found)
        names = self.names
        features = np.array(
            [[e.features.get(c, 0.0) for c in names] for _r, e in found], dtype=np.float64
        ).reshape(n, len(names))
        onnx = np.array([float(e.scores.get("onnx", 0.0)) for _r, e in found])
        y = np.array([r.label for r, _e in found])
        times = np.array([int(e.event_time_ms) for _r, e in found], dtype=np.int64)
        outcome = self.learner.learn(features, onnx, y)
        logged_final = np.array([e.scores.get("final", np.nan) for _r, e in found], dtype=float)
        final = np.where(np.isnan(logged_final), outcome.final, logged_final)
        outputs = {"onnx": onnx, "river": outcome.river, "final": final}
        self._update_windows(found, y, outputs, times, result)
        watched = {c: features[:, names.index(c)] for c in self.drift_features if c in names}
        result.alerts.extend(
            self.drift.update(
                y, outputs, watched, times, labels_seen_before=outcome.labels_seen_before
            )
        )
        result.learned += n

    @property
    def drift_features(self) -> tuple[str, ...]:
        return self.adaptation.drift.features

    def _update_windows(
        self,
        found: list[tuple[LabelRecord, LoggedPrediction]],
        y: np.ndarray,
        outputs: Mapping[str, np.ndarray],
        times: np.ndarray,
        result: BatchResult,
    ) -> None:
        size = self.adaptation.metrics_window
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (record, _entry) in enumerate(found):
            groups.setdefault((record.partition, window_start(int(times[i]), size)), []).append(i)
        for (partition, start), rows in groups.items():
            key = window_key(partition, start)
            value = self.table.get(key)
            covered = OffsetRanges(value["cov"] if value else ())
            fresh = [i for i in rows if found[i][0].offset not in covered]
            if not fresh:
                continue
            metrics = {
                name: WindowMetrics.from_json(self.task, value["outputs"][name])  # type: ignore[arg-type]
                if value
                else WindowMetrics.new(self.task)  # type: ignore[arg-type]
                for name in OUTPUTS
            }
            idx = np.asarray(fresh)
            for name in OUTPUTS:
                metrics[name].update(y[idx], outputs[name][idx], threshold=self.threshold)
            for i in fresh:
                covered.add(found[i][0].offset)
            self.table.put(
                partition,
                key,
                {
                    "start": start,
                    "size": size,
                    "outputs": {name: m.to_json() for name, m in metrics.items()},
                    "cov": covered.ranges,
                },
            )
            result.windows.add(start)

    def _count(self, partition: int, offset: int, kind: str) -> None:
        key = f"{kind}|{partition}"
        value = self.table.get(key) or {"n": 0, "cov": []}
        covered = OffsetRanges(value["cov"])
        if offset in covered:
            return
        covered.add(offset)
        self.table.put(partition, key, {"n": int(value["n"]) + 1, "cov": covered.ranges})

    def offsets_meta(self, topic: str) -> dict[str, Any]:
        return {
            "topic": topic,
            "partitions": {str(p): pr.to_json() for p, pr in sorted(self.progress.items())},
        }


def restore_progress(meta: Mapping[str, Any] | None, topic: str) -> dict[int, PartitionProgress]:
    """The per-partition progress a snapshot recorded (empty for another topic)."""
    offsets = (meta or {}).get("offsets") or {}
    if offsets.get("topic") != topic:
        return {}
    return {
        int(p): PartitionProgress.from_json(v) for p, v in offsets.get("partitions", {}).items()
    }


# -- Kafka-side helpers --------------------------------------------------------------------
class LabelConsumer:
    """The labels topic through librdkafka's batch consume, assigned (no group membership)
    at the offsets the restored model stopped at.

    Its group id only records the snapshot offsets (committed after each snapshot), so
    `streamfer lag` shows how far the learner is behind.
    """

    def __init__(
        self,
        connections: Connections,
        topic: str,
        group: str,
        progress: Mapping[int, PartitionProgress],
    ) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.topic = topic
        self._consumer = Consumer(
            connections.kafka_config(
                **{
                    "group.id": group,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "earliest",
                    "isolation.level": "read_committed",
                }
            )
        )
        meta = self._consumer.list_topics(topic, timeout=10).topics[topic]
        self.partitions = sorted(meta.partitions)
        self._consumer.assign(
            [
                TopicPartition(
                    topic, p, progress[p].resume_offset() if p in progress else OFFSET_BEGINNING
                )
                for p in self.partitions
            ]
        )

    def consume(self, max_size: int, max_wait_s: float) -> list[LabelRecord | tuple[int, int]]:
        """Up to `max_size` labels within `max_wait_s` (blocking: run it in a thread)."""
        out: list[LabelRecord | tuple[int, int]] = []
        for message in self._consumer.consume(max_size, max_wait_s):
            if message.error() is not None:
                log.warning("labels consumer: %s", message.error())
                continue
            partition, offset = message.partition(), message.offset()
            if partition is None or offset is None:
                continue
            parsed = parse_label(message.value(), partition, offset)
            out.append(parsed if parsed is not None else (partition, offset))
        return out

    def commit(self, offsets: Mapping[int, int]) -> None:
        """Record the snapshot's resume offsets under the group (for lag tooling only)."""
        from confluent_kafka import KafkaException, TopicPartition

        if not offsets:
            return
        try:
            self._consumer.commit(
                offsets=[TopicPartition(self.topic, p, o) for p, o in offsets.items()],
                asynchronous=True,
            )
        except KafkaException as exc:
            log.info("could not record label offsets for lag tooling: %s", exc)

    def close(self) -> None:
        self._consumer.close()


# The librdkafka security settings (STREAMFER_RDKAFKA_*) that the faust side maps; any other
# sasl.*/ssl.* setting would be silently dropped there, so it is refused instead.
_FAUST_SECURITY = frozenset(
    {
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "sasl.kerberos.service.name",
        "ssl.ca.location",
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.key.password",
        "ssl.endpoint.identification.algorithm",
        "enable.ssl.certificate.verification",
    }
)


def faust_broker_credentials(kafka: Mapping[str, str]) -> Any:
    """The librdkafka security settings of `Connections.kafka` as faust credentials, so the
    app's own aiokafka clients (metrics table changelog, alerts) reach the same secured
    brokers as the librdkafka labels consumer. None for PLAINTEXT."""
    import ssl

    import faust

    unmapped = sorted(
        k
        for k in kafka
        if (k.startswith(("sasl.", "ssl.")) or k == "enable.ssl.certificate.verification")
        and k not in _FAUST_SECURITY
    )
    if unmapped:
        raise LearnerError(
            f"the learner's faust clients cannot use {unmapped} (from STREAMFER_RDKAFKA_*); "
            f"supported: {sorted(_FAUST_SECURITY)}"
        )
    protocol = kafka.get("security.protocol", "plaintext").upper()
    if protocol == "PLAINTEXT":
        return None
    if protocol not in ("SSL", "SASL_PLAINTEXT", "SASL_SSL"):
        raise LearnerError(
            f"security.protocol {protocol!r}: use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
        )
    context: ssl.SSLContext | None = None
    if protocol in ("SSL", "SASL_SSL"):
        try:
            context = ssl.create_default_context(cafile=kafka.get("ssl.ca.location"))
            if "ssl.certificate.location" in kafka:
                context.load_cert_chain(
                    kafka["ssl.certificate.location"],
                    keyfile=kafka.get("ssl.key.location"),
                    password=kafka.get("ssl.key.password"),
                )
        except (OSError, ssl.SSLError) as exc:
            raise LearnerError(
                f"TLS settings for the learner's faust clients: {exc} (check "
                "STREAMFER_RDKAFKA_SSL_CA_LOCATION, _SSL_CERTIFICATE_LOCATION, _SSL_KEY_LOCATION)"
            ) from None
        if kafka.get("ssl.endpoint.identification.algorithm", "https").lower() == "none":
            context.check_hostname = False
        if kafka.get("enable.ssl.certificate.verification", "true").lower() in ("false", "0"):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    mechanism = (kafka.get("sasl.mechanism") or kafka.get("sasl.mechanisms") or "GSSAPI").upper()
    if mechanism == "GSSAPI":
        return faust.GSSAPICredentials(
            kerberos_service_name=kafka.get("sasl.kerberos.service.name", "kafka"),
            ssl_context=context,
        )
    if mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        raise LearnerError(
            f"sasl.mechanism {mechanism!r}: the learner's faust clients support PLAIN, "
            "SCRAM-SHA-256, SCRAM-SHA-512 and GSSAPI"
        )
    missing = [k for k in ("sasl.username", "sasl.password") if not kafka.get(k)]
    if missing:
        names = [f"STREAMFER_RDKAFKA_{k.upper().replace('.', '_')}" for k in missing]
        raise LearnerError(f"sasl.mechanism {mechanism} needs {', '.join(names)}")
    return faust.SASLCredentials(
        username=kafka["sasl.username"],
        password=kafka["sasl.password"],
        mechanism=mechanism,
        ssl_context=context,
    )


# -- the app -------------------------------------------------------------------------------
@dataclass
class LearnerOptions:
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    idle_exit_s: float | None = None
    session_timeout_s: float = 10.0
    loglevel: str = "warning"


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


class FaustTable:
    """MetricsTable over a Faust table: values set in memory, the changelog record sent to
    the partition of the label partition (so the table is co-partitioned with the labels,
    also when written from the retry timer, outside stream iteration)."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, key: str) -> dict[str, Any] | None:
        value = self._table.data.get(key)
        return value if isinstance(value, dict) else None

    def put(self, partition: int, key: str, value: dict[str, Any]) -> None:
        self._table.data[key] = value
        self._table.send_changelog(partition, key, value)

    def items(self) -> list[tuple[str, dict[str, Any]]]:
        return [(k, v) for k, v in self._table.data.items() if isinstance(v, dict)]


class Learner:
    """The faust app of one pipeline's learner and the state it works on."""

    def __init__(
        self, spec: PipelineSpec, connections: Connections, options: LearnerOptions
    ) -> None:
        adaptation: AdaptationSpec = spec.adaptation
        if adaptation.mode is AdaptationMode.OFF:
            raise LearnerError("adaptation.mode is off in this spec: set stack or challenger")
        if not spec.topics.labels:
            raise LearnerError("the spec names no labels topic: set topics.labels")
        unknown = [f for f in adaptation.drift.features if f not in spec.features.names]
        if unknown:
            raise LearnerError(
                f"adaptation.drift.features {unknown} are not feature columns; known: "
                f"{list(spec.features.names)}"
            )
        try:
            key = snapshot_key_from_env()
        except SnapshotKeyMissing as exc:
            raise LearnerError(str(exc)) from None
        self.spec = spec
        self.adaptation = adaptation
        self.connections = connections
        self.options = options
        self.app_id = f"streamfer-learn-{spec.namespace}"
        self.redis = redis.Redis.from_url(connections.redis_url, socket_timeout=10)
        self.store = SnapshotStore(self.redis, spec.namespace, key)
        self.metrics = LearnerMetrics()
        self.topic_name = spec.topics.labels
        self.resumed_from: dict[str, Any] | None = None
        self.learner, progress = self._restore()
        self.metrics.labels_seen.set(self.learner.labels_seen)
        self.prediction_log = PredictionLog(
            self.redis, spec.namespace, spec.features.names, spec.prediction_log.horizon
        )
        self.progress = progress
        self._lock = asyncio.Lock()
        self._since_snapshot = 0
        self._last_snapshot = time.monotonic()
        self._last_label = time.monotonic()
        self._dirty = False
        self.labels: LabelConsumer | None = None
        self.app = self._build_app()

    # -- start-up: continue from the newest snapshot -------------------------------------
    def _restore(self) -> tuple[OnlineLearner, dict[int, PartitionProgress]]:
        names = tuple(self.spec.features.names)
        version = self.store.latest_version()
        snapshot = None
        if version is not None:
            try:
                snapshot = self.store.load(version, with_state=True)
            except SnapshotRejected as exc:
                raise LearnerError(
                    f"{exc}. Remove the snapshot keys sf:{{{self.spec.namespace}}}:adapt:* to "
                    "start learning afresh, or fix the key."
                ) from None
        if snapshot is None:
            return OnlineLearner(self.adaptation, names, self.spec.model.threshold), {}
        state = snapshot.state if isinstance(snapshot.state, LearnerState) else LearnerState()
        learner = OnlineLearner(
            self.adaptation, names, self.spec.model.threshold, snapshot.model, state
        )
        self.resumed_from = {"version": snapshot.version, "labels_seen": learner.labels_seen}
        log.warning(
            "continuing from snapshot %d (%d labels learned)", snapshot.version, learner.labels_seen
        )
        return learner, restore_progress(snapshot.meta, self.topic_name)

    def prepare_kafka(self) -> None:
        """The pipeline's topics exist (labels and alerts included)."""
        from streams.ops.topics import ensure_topics

        ensure_topics(self.connections, self.spec)

    def _partitions(self) -> int:
        """The labels topic's partition count, which the metrics table's changelog must match.

        The topics are created first: asking the broker for the metadata of a missing topic
        auto-creates it with the broker's default count (4 on the local stack), which would
        leave the changelog with fewer partitions than the labels it is co-partitioned with.
        """
        from streams.ops.topics import admin_for

        self.prepare_kafka()
        admin = admin_for(self.connections)
        meta = admin.list_topics(self.topic_name, timeout=10).topics.get(self.topic_name)
        if meta is None or not meta.partitions:
            return self.spec.topics.partitions
        return len(meta.partitions)

    # -- the faust app -------------------------------------------------------------------
    def _build_app(self) -> Any:
        import faust

        partitions = self._partitions()
        brokers = [f"kafka://{b.strip()}" for b in self.connections.bootstrap.split(",")]
        o = self.options
        app = faust.App(
            self.app_id,
            broker=brokers,
            broker_credentials=faust_broker_credentials(self.connections.kafka),
            store="memory://",
            topic_partitions=partitions,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=o.session_timeout_s,
            broker_heartbeat_interval=min(3.0, o.session_timeout_s / 3),
            web_enabled=True,
            web_bind=o.web_host,
            web_host=o.web_host,
            web_port=o.web_port,
            web_in_thread=False,
        )
        self.alerts_topic = (
            app.topic(self.spec.topics.alerts, key_serializer="raw", value_serializer="raw")
            if self.spec.topics.alerts
            else None
        )
        table = app.Table(
            TABLE,
            default=dict,
            partitions=partitions,
            schema=faust.Schema(key_type=str, key_serializer="json", value_serializer="json"),
        )
        self.table = FaustTable(table)
        self.processor = LabelProcessor(
            self.spec, self.prediction_log, self.table, self.learner, self.progress
        )
        batching = self.adaptation.batch
        learner = self

        async def consume_labels() -> None:
            """librdkafka batches (the take(N, within=T) of the learner), handled in order."""
            await learner._wait_for_tables(app)
            consumer = LabelConsumer(
                learner.connections,
                learner.topic_name,
                f"{learner.app_id}-labels",
                learner.progress,
            )
            learner.labels = consumer
            while not app.should_stop:
                records = await asyncio.to_thread(
                    consumer.consume, batching.max_size, batching.max_wait / 1000
                )
                if records:
                    await learner._wait_for_tables(app)
                    await learner.handle(records)

        app.task(consume_labels)

        retry_every = min(max(self.adaptation.label_retry.backoff / 2000, 0.5), 1.0)

        async def retry_timer() -> None:
            await learner.retry_and_snapshot()

        app.timer(retry_every, name="retry")(retry_timer)

        async def before_shutdown(*_args: Any, **_kwargs: Any) -> None:
            async with learner._lock:
                if learner._dirty:
                    await learner._snapshot()

        app.on_before_shutdown.connect(before_shutdown)
        self._add_views(app)
        return app

    def _add_views(self, app: Any) -> None:
        import faust

        learner = self

        class Status(faust.web.View):
            async def get(self, request: Any) -> Any:
                return _json_response(self, learner.status())

        class Windows(faust.web.View):
            async def get(self, request: Any) -> Any:
                return _json_response(self, {"windows": learner.window_rows()})

        class Metrics(faust.web.View):
            async def get(self, request: Any) -> Any:
                return self.bytes(
                    generate_latest(learner.metrics.registry),
                    content_type="text/plain; version=0.0.4",
                )

        app.page("/adaptation/")(Status)
        app.page("/adaptation/windows/")(Windows)
        app.page("/metrics")(Metrics)

    # -- processing ----------------------------------------------------------------------
    async def _wait_for_tables(self, app: Any) -> None:
        """Hold labels while Faust restores the metrics table (at start, after a rebalance):
        counting into a table that is being reloaded would lose counts."""
        recovery = app.tables.recovery
        while not recovery.completed.is_set() or app.in_recovery:
            await asyncio.sleep(0.1)

    async def handle(self, records: list[LabelRecord | tuple[int, int]]) -> None:
        async with self._lock:
            result = self.processor.consume(records)
            self._last_label = time.monotonic()
            await self._after(result)

    async def retry_and_snapshot(self) -> None:
        if self._lock.locked():  # a batch is being handled; its end checks the snapshot too
            return
        async with self._lock:
            result = self.processor.due_retries()
            await self._after(result)
            if self._dirty and (
                time.monotonic() - self._last_snapshot >= self.adaptation.snapshot.every / 1000
            ):
                await self._snapshot()
            idle = self.options.idle_exit_s
            if (
                idle is not None
                and not self.processor.retry
                and time.monotonic() - self._last_label > idle
            ):
                if self._dirty:
                    await self._snapshot()
                log.warning("idle for %.0f s: stopping", idle)
                self.options.idle_exit_s = None
                os.kill(os.getpid(), signal.SIGTERM)

    async def _after(self, result: BatchResult) -> None:
        m = self.metrics
        for outcome in ("learned", "retried", "expired", "skipped", "bad"):
            value = getattr(result, outcome)
            if value:
                m.labels.labels(outcome).inc(value)
        m.pending.set(len(self.processor.retry))
        m.labels_seen.set(self.learner.labels_seen)
        m.promoted.set(1 if self.learner.promoted else 0)
        for alert in result.alerts:
            m.drift.labels(alert.detector, f"{alert.kind}:{alert.name}").inc()
            log.info("drift: %s on %s %s", alert.detector, alert.kind, alert.name)
            if self.alerts_topic is not None:
                await self.alerts_topic.send(
                    key=f"drift:{alert.name}".encode(), value=orjson.dumps(alert.to_json())
                )
        if result.windows:
            self._export_window_gauges(max(result.windows))
        if result.learned or result.expired or result.bad:
            self._dirty = True
            self._since_snapshot += result.learned + result.expired + result.bad
        if self._since_snapshot >= self.adaptation.snapshot.every_labels:
            await self._snapshot()

    async def _snapshot(self) -> None:
        """Make the metrics durable, then publish model + state + offsets (in that order:
        a snapshot never includes labels whose metrics could still be lost)."""
        await self.app.producer.flush()
        meta = {**self.learner.meta(), "offsets": self.processor.offsets_meta(self.topic_name)}
        version = await asyncio.to_thread(
            self.store.publish, self.learner.model, meta, self.learner.state
        )
        self._since_snapshot = 0
        self._last_snapshot = time.monotonic()
        self._dirty = False
        if self.labels is not None:
            self.labels.commit({p: pr.resume_offset() for p, pr in self.progress.items()})
        self.metrics.snapshots.inc()
        self.metrics.info.clear()
        self.metrics.info.labels(str(version), self.adaptation.mode.value).set(1)
        log.info("snapshot %d published (%d labels)", version, self.learner.labels_seen)

    # -- reading -------------------------------------------------------------------------
    def window_rows(self) -> list[dict[str, Any]]:
        return window_rows(self.table.items(), self.adaptation.task.value)

    def status(self) -> dict[str, Any]:
        items = self.table.items()
        return {
            "pipeline": self.spec.name,
            "mode": self.adaptation.mode.value,
            "labels_seen": self.learner.labels_seen,
            "promoted": self.learner.promoted,
            "pending": len(self.processor.retry),
            "expired": counter_total(items, "x|"),
            "bad": counter_total(items, "b|"),
            "snapshot_version": self.store.latest_version(),
            "resumed_from": self.resumed_from,
            "offsets": self.processor.offsets_meta(self.topic_name),
            "total": totals(items, self.adaptation.task.value),
        }

    def _export_window_gauges(self, start: int) -> None:
        items = self.table.items()
        task = self.adaptation.task.value
        windows = merged_windows(items, task)
        for name, metrics in windows.get(start, {}).items():
            for metric, value in metrics.result().items():
                if metric != "n" and value is not None:
                    self.metrics.window[metric].labels(name).set(value)
        for name, result in totals(items, task).items():
            for metric, value in result.items():
                if metric != "n" and value is not None:
                    self.metrics.overall.labels(name, metric).set(value)

    def run(self) -> None:
        """Run until SIGTERM/SIGINT (or idle exit); blocks."""
        import faust

        for partition, progress in sorted(self.progress.items()):
            log.info(
                "labels partition %d: resuming at offset %d", partition, progress.resume_offset()
            )
        worker = faust.Worker(self.app, loglevel=self.options.loglevel, quiet=True)
        with contextlib.suppress(SystemExit):  # mode's worker exits the interpreter when done
            worker.execute_from_commandline()


def _json_response(view: Any, body: Any) -> Any:
    return view.bytes(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS),
        content_type="application/json",
    )


def window_rows(items: Sequence[tuple[str, Mapping[str, Any]]], task: str) -> list[dict[str, Any]]:
    """One row per window: start, end, labels and each output's metrics."""
    rows = []
    for start, outputs in merged_windows(items, task).items():
        size = next(
            (int(v["size"]) for k, v in items if k.startswith("w|") and v and v["start"] == start),
            0,
        )
        rows.append(
            {
                "start_ms": start,
                "end_ms": start + size,
                "labels": outputs["onnx"].n,
                **{name: m.result() for name, m in outputs.items()},
            }
        )
    return rows


def totals(items: Sequence[tuple[str, Mapping[str, Any]]], task: str) -> dict[str, dict[str, Any]]:
    """Each output's metrics over every window."""
    out = {o: WindowMetrics.new(task) for o in OUTPUTS}  # type: ignore[arg-type]
    for outputs in merged_windows(items, task).values():
        for name, m in outputs.items():
            out[name] = out[name].merge(m)
    return {name: m.result() for name, m in out.items()}


__all__ = [
    "AdaptationTask",
    "DictTable",
    "LabelConsumer",
    "LabelProcessor",
    "LabelRecord",
    "Learner",
    "LearnerOptions",
    "OffsetRanges",
    "PartitionProgress",
    "faust_broker_credentials",
    "merged_windows",
    "parse_label",
    "restore_progress",
    "totals",
    "window_rows",
]
