"""Building blocks of the integration tests: a test spec, a worker in a thread or a process,
reading topics back, and the independent recomputation of every feature value.

Test aggregations are keyed by card_id, and events are keyed by card_id, so each entity's
events live in one partition: the reference recomputation in per-partition offset order is
then exactly what any correct worker must have computed, however partitions interleave.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from features.backends import open_store
from features.store import FeatureBatch
from inference.model_ref import file_sha256
from streams.ops.topics import ensure_topics, read_topic
from streams.spec import SNAPSHOT_KEY_ENV, Connections, PipelineSpec, parse_spec
from streams.stack.local import LocalStack, StackConfig
from streams.worker.pipeline import RunStats, Worker
from streams.workloads.producing import produce_events
from streams.workloads.synthetic import CardPayments

FEATURES = {
    "lateness": "10m",
    "replay_ttl": "24h",
    "aggregations": [
        {
            "name": "card_count_1h",
            "entity": "card_id",
            "agg": "count",
            "window": "1h",
            "bucket": "5m",
        },
        {
            "name": "card_amount_sum_1h",
            "entity": "card_id",
            "agg": "sum",
            "field": "amount",
            "window": "1h",
            "bucket": "5m",
        },
        {
            "name": "card_amount_mean_1h",
            "entity": "card_id",
            "agg": "mean",
            "field": "amount",
            "window": "1h",
            "bucket": "5m",
        },
        {
            "name": "card_amount_min_1h",
            "entity": "card_id",
            "agg": "min",
            "field": "amount",
            "window": "1h",
            "bucket": "5m",
            "fill": 0,
        },
        {
            "name": "card_amount_max_24h",
            "entity": "card_id",
            "agg": "max",
            "field": "amount",
            "window": "24h",
            "bucket": "1h",
            "fill": 0,
        },
        {
            "name": "card_last_amount",
            "entity": "card_id",
            "agg": "last",
            "field": "amount",
            "window": "24h",
            "bucket": "1h",
            "fill": 0,
        },
        {
            "name": "card_since_last",
            "entity": "card_id",
            "agg": "seconds_since_last",
            "window": "24h",
            "bucket": "1h",
            "fill": -1,
        },
        {
            "name": "card_merchants_24h",
            "entity": "card_id",
            "agg": "count_distinct",
            "field": "merchant_id",
            "window": "24h",
            "bucket": "1h",
        },
        {
            "name": "card_amount_dsum",
            "entity": "card_id",
            "agg": "decayed_sum",
            "field": "amount",
            "half_life": "10m",
        },
        {
            "name": "card_amount_ewm",
            "entity": "card_id",
            "agg": "decayed_mean",
            "field": "amount",
            "half_life": "30m",
        },
    ],
    "transforms": [
        {"name": "amount_log", "field": "amount", "op": "log1p"},
        {
            "name": "channel",
            "field": "channel",
            "op": "one_hot",
            "categories": ["web", "pos", "atm"],
        },
    ],
}


def spec_dict(
    unique: str, model: dict[str, Any], *, partitions: int = 4, **top: Any
) -> dict[str, Any]:
    names = [a["name"] for a in FEATURES["aggregations"]] + [
        "amount_log",
        "channel=web",
        "channel=pos",
        "channel=atm",
    ]
    return {
        "name": f"t-{unique}",
        "topics": {
            "events": f"ev-{unique}",
            "predictions": f"pred-{unique}",
            "dead_letter": f"dlq-{unique}",
            "features": f"feat-{unique}",
            "partitions": partitions,
        },
        "event": {
            "id": "event_id",
            "time": {"field": "event_time", "unit": "ms"},
            "entities": ["card_id", "merchant_id"],
            "key": "card_id",
            "fields": {
                "amount": {"type": "float"},
                "channel": {"type": "string", "required": False, "default": "pos"},
                "mcc": {"type": "int"},
                "currency": {"type": "string", "required": False},
                "country": {"type": "string", "required": False},
            },
            "max_bytes": 4096,
            "max_past": "7d",
            "max_future": "5m",
        },
        "features": FEATURES,
        "model": {
            "name": "card-fraud",
            "inputs": {"features": names},
            "threads": 1,
            **pinned(model),
        },
        "batching": {"max_size": 500, "max_wait": "50ms"},
        "retry": {"initial": "50ms", "max": "1s"},
        "metrics": {"port": 0},
        **top,
    }


def pinned(model: dict[str, Any]) -> dict[str, Any]:
    """The model section with `sha256` pinned to the file its `path` names, as an operator
    would deploy it (an unpinned path is served with a WARNING); a file not written yet, a
    registry or an explicit `sha256` are left as they are."""
    path = model.get("path")
    if path is None or "sha256" in model or not Path(path).is_file():
        return model
    return {**model, "sha256": file_sha256(path)}


def make_spec(unique: str, model: dict[str, Any], **kw: Any) -> PipelineSpec:
    return parse_spec(spec_dict(unique, model, **kw))


def write_spec(path: Path, unique: str, model: dict[str, Any], **kw: Any) -> Path:
    path.write_text(yaml.safe_dump(spec_dict(unique, model, **kw)))
    return path


def produce(conn: Connections, spec: PipelineSpec, events: Iterable[dict[str, Any]]) -> int:
    ensure_topics(conn, spec)
    return produce_events(conn, spec.topics.events, events, key_field="card_id").count


def synthetic(n: int, seed: int = 5, **kw: Any) -> list[dict[str, Any]]:
    kw.setdefault("n_cards", 300)
    kw.setdefault("n_merchants", 200)
    return list(CardPayments(n, seed=seed, run_id=f"r{seed}", **kw).events())


@dataclass
class ThreadedWorker:
    """A Worker running in a thread of the test process (stop() = SIGTERM semantics)."""

    worker: Worker
    max_events: int | None = None
    idle_exit_s: float | None = None
    stats: RunStats | None = None
    error: BaseException | None = None
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.stats = self.worker.run(max_events=self.max_events, idle_exit_s=self.idle_exit_s)
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def stop(self) -> None:
        self.worker.stop.set()

    def join(self, timeout: float = 300) -> RunStats:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker did not finish in time"
        if self.error is not None:
            raise self.error
        assert self.stats is not None
        return self.stats


def start_worker(spec: PipelineSpec, conn: Connections, **kw: Any) -> ThreadedWorker:
    """A worker in a thread. Its snapshot key is the test's STREAMFER_SNAPSHOT_KEY when
    `conn` has none, as `streamfer run` reads it (`Connections.from_env`)."""
    conn = with_snapshot_key(conn)
    exactly_once = kw.pop("exactly_once", None)
    worker = Worker(spec, conn, worker_id=kw.pop("worker_id", 0), exactly_once=exactly_once)
    return ThreadedWorker(worker, **kw)


def with_snapshot_key(conn: Connections) -> Connections:
    """`conn` with STREAMFER_SNAPSHOT_KEY from the environment when it has no key."""
    import os

    from pydantic import SecretStr

    key = os.environ.get(SNAPSHOT_KEY_ENV)
    if conn.snapshot_key is not None or not key:
        return conn
    return conn.model_copy(update={"snapshot_key": SecretStr(key)})


# Every `worker_process` started, so a test that fails before it stops its workers leaves
# none running into the next tests (tests/integration/conftest.py kills what is left).
STARTED: list[subprocess.Popen[bytes]] = []


def kill_leftover_workers() -> None:
    """SIGKILL every `worker_process` still running (a supervisor's workers die with it)."""
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def worker_process(spec_file: Path, conn: Connections, *extra: str) -> subprocess.Popen[bytes]:
    """`streamfer run` as a real OS process (for SIGKILL and scale-out tests)."""
    env = {
        **os.environ,
        "STREAMFER_BOOTSTRAP": conn.bootstrap,
        "STREAMFER_REDIS_URL": conn.redis_url,
        # A killed member leaves the group after this, not after the default 45 s.
        "STREAMFER_RDKAFKA_SESSION_TIMEOUT_MS": "6000",
        "STREAMFER_RDKAFKA_HEARTBEAT_INTERVAL_MS": "1000",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streams",
            "run",
            "-s",
            str(spec_file),
            "--metrics-port",
            "0",
            *extra,
        ],
        env=env,
    )
    STARTED.append(proc)
    return proc


def read_json(
    conn: Connections, topic: str, *, expected: int | None = None, timeout_s: float = 120
) -> list[dict[str, Any]]:
    return [
        orjson.loads(m.value())
        for m in read_topic(conn, topic, expected=expected, timeout_s=timeout_s)
    ]


def recompute_features(conn: Connections, spec: PipelineSpec) -> dict[str, list[float]]:
    """Reference values per event id, from the events as stored in the topic, per partition."""
    by_partition: dict[int, list[Any]] = {}
    for msg in read_topic(conn, spec.topics.events, timeout_s=120):
        by_partition.setdefault(msg.partition(), []).append(msg)
    store = open_store(spec.features, "memory://", "recompute")
    out: dict[str, list[float]] = {}
    for msgs in by_partition.values():
        msgs.sort(key=lambda m: m.offset())
        events = [orjson.loads(m.value()) for m in msgs]
        events = [e for e in events if isinstance(e, dict) and "event_id" in e]
        for start in range(0, len(events), 1000):
            chunk = events[start : start + 1000]
            for e in chunk:
                e.setdefault("channel", "pos")
            result = store.update_and_read(
                FeatureBatch(chunk, [int(e["event_time"]) for e in chunk], None)
            )
            for e, row in zip(chunk, result.values.tolist(), strict=True):
                out[e["event_id"]] = row
    return out


def assert_features_exact(
    served: list[dict[str, Any]], expected: dict[str, list[float]], names: tuple[str, ...]
) -> None:
    """Every served feature vector equals the recomputation (duplicates included)."""
    assert served, "no feature records were served"
    mismatches = []
    for record in served:
        want = expected[record["event_id"]]
        got = [record["features"][n] for n in names]
        for name, g, w in zip(names, got, want, strict=True):
            if not math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-9):
                mismatches.append((record["event_id"], name, g, w))
    assert not mismatches, f"{len(mismatches)} feature values differ, e.g. {mismatches[:5]}"


def prediction_counts(predictions: list[dict[str, Any]]) -> Counter[str]:
    return Counter(p["event_id"] for p in predictions)


def topic_size(conn: Connections, topic: str) -> int:
    """Sum of high watermarks over the topic's partitions (cheap progress probe)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(conn.kafka_config(**{"group.id": "streamfer-probe"}))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        )
    finally:
        consumer.close()


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    """Poll a readiness condition (never a fixed sleep standing in for one)."""
    import time

    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def group_lag(conn: Connections, group: str, topic: str) -> int:
    """Log-end minus committed offset, summed over partitions (without joining the group)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(conn.kafka_config(**{"group.id": group, "enable.auto.commit": False}))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p) for p in meta.partitions]
        committed = consumer.committed(parts, timeout=10)
        lag = 0
        for tp in committed:
            high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)[
                1
            ]
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        consumer.close()


def group_description(conn: Connections, group: str) -> Any | None:
    """The broker's description of `group`, or None while it can't say yet (a fresh
    coordinator, a retriable error)."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(conn.kafka_config())
    try:
        return admin.describe_consumer_groups([group])[group].result(timeout=10)
    except KafkaException as exc:
        if exc.args[0].retriable() or exc.args[0].code() == KafkaError.NOT_COORDINATOR:
            return None
        raise


def group_members(conn: Connections, group: str) -> int:
    """Members of `group`; -1 while the broker can't say yet."""
    description = group_description(conn, group)
    return -1 if description is None else len(description.members)


def partition_owners(conn: Connections, group: str) -> int:
    """Members of a stable `group` that own partitions; -1 while the broker can't say yet
    or the group is still rebalancing."""
    from confluent_kafka import ConsumerGroupState

    description = group_description(conn, group)
    if description is None or description.state != ConsumerGroupState.STABLE:
        return -1
    return sum(1 for m in description.members if m.assignment.topic_partitions)


@contextlib.contextmanager
def own_stack(home: Path) -> Iterator[LocalStack]:
    """A Kafka + redis-server of the caller's only, on free ports: its faults (broker stopped,
    Redis wiped) disturb no other test and no one else's stack; always taken down at the end,
    also when the caller failed, so no broker outlives the run."""
    from tests.integration.test_stack import _free_ports

    kafka_port, controller_port, redis_port = _free_ports(3)
    stack = LocalStack(
        StackConfig(
            home=home,
            kafka_port=kafka_port,
            controller_port=controller_port,
            redis_port=redis_port,
        )
    )
    try:
        stack.up()
        yield stack
    finally:
        stack.down()
