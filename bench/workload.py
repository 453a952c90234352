"""The benchmark's workload and its footprint on the broker and Redis.

Every system runs the demo spec (`examples/card-payments.yaml`): its event schema, its
features and its model, on card payments with Zipf-distributed cards and merchants. Each
system run gets topics, a consumer group and a Redis namespace of its own, and gives them
back afterwards (`Footprint.release`), so runs never see each other's state.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from features.redis_connect import connect
from streams.ops.topics import create_topics
from streams.spec import Connections, load_spec, parse_spec
from streams.workloads.producing import produce_events
from streams.workloads.synthetic import CardPayments

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEMO_SPEC = REPO / "examples" / "card-payments.yaml"
PARTITIONS = 4


def demo_spec_dict() -> dict[str, Any]:
    """The demo spec as a plain mapping, model path resolved against its folder."""
    raw: dict[str, Any] = yaml.safe_load(DEMO_SPEC.read_text())
    path = raw["model"].get("path")
    if path and not Path(path).is_absolute():
        raw["model"]["path"] = str((DEMO_SPEC.parent / path).resolve())
    return raw


def ensure_model(model_dir: Path) -> Path:
    """The demo spec's model file: the checked-out one if it fits the spec, else built here.

    `examples/models/` is not committed (it is built by `streamfer demo-model`), so a fresh
    clone trains the demo network into `model_dir` (a few seconds, no download).
    """
    from inference.onnx_model import ModelLoadError, ModelRef, OnnxModel

    spec = load_spec(DEMO_SPEC)
    assert spec.model.path is not None
    existing = Path(spec.model.path)
    if existing.exists():
        try:
            OnnxModel.load(
                ModelRef.for_file(spec.model.name, existing),
                spec.model.model_copy(update={"providers": "cpu"}),
                spec.features.names,
            )
            return existing
        except ModelLoadError as exc:
            log.warning("the checked-out demo model does not fit the spec (%s): rebuilding", exc)
    built = model_dir / "card-fraud.onnx"
    if not built.exists():
        from streams.workloads.demo_model import build_demo_model

        raw = demo_spec_dict()
        raw["model"]["path"] = str(built)
        build_demo_model(parse_spec(raw))
    return built


def safe_name(label: str) -> str:
    """A label as a Kafka topic / group name part (ASCII letters, digits, '.', '_', '-')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-")


def system_spec(
    *,
    token: str,
    system: str,
    events_topic: str,
    model_path: Path,
    max_size: int | None = None,
    max_wait_ms: int | None = None,
) -> dict[str, Any]:
    """The demo spec for one system run: own predictions topic, group and namespace."""
    raw = demo_spec_dict()
    name = f"bench-{token}-{safe_name(system)}"
    raw["name"] = name
    raw["topics"] = {
        "events": events_topic,
        "predictions": f"{name}-pred",
        "dead_letter": f"{name}-dlq",
        "partitions": PARTITIONS,
    }
    raw["redis_namespace"] = name
    raw["model"]["path"] = str(model_path)
    raw["model"]["providers"] = "cpu"
    raw["metrics"] = {"port": 0}
    batching = dict(raw.get("batching", {}))
    if max_size is not None:
        batching["max_size"] = max_size
    if max_wait_ms is not None:
        batching["max_wait"] = f"{max_wait_ms}ms"
    raw["batching"] = batching
    parse_spec(raw)  # fail here, not in a subprocess, if an override is wrong
    return raw


@dataclass
class Footprint:
    """Topics and Redis namespaces created by the benchmark, released at the end."""

    connections: Connections
    topics: set[str] = field(default_factory=set)
    topic_prefixes: set[str] = field(default_factory=set)
    namespaces: dict[str, str] = field(default_factory=dict)  # namespace → its Redis URL

    def admin(self) -> AdminClient:
        return AdminClient(self.connections.kafka_config())

    def create_topics(self, names: Iterable[str], *, log_append_time: bool = False) -> None:
        """Create topics with PARTITIONS partitions; LogAppendTime stamps broker append time."""
        config = {"message.timestamp.type": "LogAppendTime"} if log_append_time else {}
        wanted = [
            NewTopic(n, num_partitions=PARTITIONS, replication_factor=1, config=config)
            for n in names
        ]
        self.topics.update(t.topic for t in wanted)
        create_topics(self.admin(), wanted)

    def release_topics(self, names: Iterable[str] | None = None) -> None:
        """Delete the named topics (default: all of ours, and those with our prefixes)."""
        admin = self.admin()
        existing = set(admin.list_topics(timeout=10).topics)
        if names is None:
            doomed = (
                self.topics
                | {t for t in existing if any(t.startswith(p) for p in self.topic_prefixes)}
            ) & existing
        else:
            doomed = set(names) & existing
        self.topics -= set(names) if names is not None else set(self.topics)
        if not doomed:
            return
        for name, future in admin.delete_topics(sorted(doomed), operation_timeout=30).items():
            try:
                future.result()
            except KafkaException as exc:
                log.warning("could not delete topic %s: %s", name, exc)

    def release_namespace(self, namespace: str) -> int:
        """Unlink every Redis key of one namespace (features, replay records, prediction log)
        on the Redis it was used on (the stack's, or the bench's cluster)."""
        client = connect(self.namespaces.get(namespace) or self.connections.redis_url)
        removed = 0
        try:
            for pattern in (f"sf:{namespace}:*", f"sf:{{{namespace}}}:*", f"bench:{namespace}:*"):
                batch: list[bytes] = []
                for key in client.scan_iter(match=pattern, count=10_000):
                    batch.append(key)
                    if len(batch) >= 10_000:
                        removed += client.unlink(*batch)
                        batch = []
                if batch:
                    removed += client.unlink(*batch)
        finally:
            client.close()
        self.namespaces.pop(namespace, None)
        return removed

    def release(self) -> None:
        for namespace in list(self.namespaces):
            self.release_namespace(namespace)
        self.release_topics()


def prefill(
    connections: Connections, topic: str, n_events: int, *, seed: int = 7, run_id: str
) -> float:
    """Write `n_events` demo payments keyed by card; returns the producer's events/s."""
    workload = CardPayments(n_events, seed=seed, run_id=run_id)
    result = produce_events(connections, topic, workload.events(), key_field="card_id")
    if result.count != n_events:
        raise RuntimeError(f"prefill wrote {result.count} of {n_events} events")
    return result.rate


def topic_end(connections: Connections, topic: str) -> dict[int, int]:
    """High watermark per partition."""
    consumer = Consumer(connections.kafka_config(**{"group.id": "bench-probe"}))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        }
    finally:
        consumer.close()


def last_append_time(connections: Connections, topic: str) -> float | None:
    """Broker append time (s) of the newest record of a LogAppendTime topic."""
    ends = topic_end(connections, topic)
    consumer = Consumer(
        connections.kafka_config(
            **{"group.id": "bench-probe", "enable.auto.commit": False, "fetch.wait.max.ms": 50}
        )
    )
    try:
        wanted = {p: high - 1 for p, high in ends.items() if high > 0}
        consumer.assign([TopicPartition(topic, p, o) for p, o in wanted.items()])
        newest: float | None = None
        deadline = time.monotonic() + 30
        while wanted and time.monotonic() < deadline:
            for msg in consumer.consume(100, 0.5):
                if msg.error() is not None or msg.offset() != wanted.get(msg.partition()):
                    continue
                wanted.pop(msg.partition())
                stamp = msg.timestamp()[1] / 1000
                newest = stamp if newest is None else max(newest, stamp)
        return newest
    finally:
        consumer.close()
