"""Create a pipeline's topics when they are missing (idempotent, safe to race)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from inference.adaptation.snapshots import SNAPSHOT_GRACE_S
from streams.spec import Connections, PipelineSpec
from streams.worker.kafka_log import (
    COMMAND_LINK,
    BrokerLink,
    BrokerRefused,
    BrokerUnreachable,
    quiet_admin,
    quiet_consumer,
)

# Importers name these from here; they live with the link that detects them.
__all__ = [
    "BrokerRefused",
    "BrokerUnreachable",
    "admin_for",
    "ensure_topics",
    "examples_log_config",
    "read_topic",
]

# The examples log keeps this many checkpoint lifetimes (interval + the grace an older
# checkpoint stays loadable), and never less than an hour: a learner that crashed is
# restarted, or a replica that fell behind catches up, well within that.
EXAMPLES_KEEP_CHECKPOINTS = 6
EXAMPLES_MIN_RETENTION_MS = 3_600_000


def admin_for(
    connections: Connections, timeout_s: float = 10.0, link: BrokerLink | None = None
) -> AdminClient:
    """An AdminClient that has reached the cluster: BrokerUnreachable after `timeout_s`,
    BrokerRefused as soon as the broker refuses the credentials or the certificate."""
    import time

    link = link or COMMAND_LINK
    admin = AdminClient(quiet_admin(connections.kafka_config(), link))
    deadline = time.monotonic() + timeout_s
    with link.checking():  # what it meets ends in one line: the refusal or the error below
        while True:
            try:
                # Short tries: a refused login is seen between them, not after the whole wait.
                admin.list_topics(timeout=min(1.0, max(deadline - time.monotonic(), 0.1)))
                link.up()  # a broker answered: an outage met meanwhile is over, unsaid
                return admin
            except KafkaException as exc:
                failure = exc
            admin.poll(0)  # serves error_cb, which notes a refusal on the link
            refused = link.refusal
            if refused is not None:
                raise refused from None
            if time.monotonic() >= deadline:
                raise BrokerUnreachable(
                    f"no Kafka broker answered at {connections.bootstrap} within "
                    f"{timeout_s:.0f}s ({failure}). Start the local stack with `streamfer up`, "
                    "or set STREAMFER_BOOTSTRAP."
                ) from None


def ensure_topics(
    connections: Connections, spec: PipelineSpec, *, events_only: bool = False
) -> None:
    t = spec.topics
    names = [t.events] if events_only else [t.events, t.predictions, t.dead_letter]
    if not events_only:
        names += [n for n in (t.labels, t.alerts, t.features) if n]
    admin = admin_for(connections)
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [
        NewTopic(n, num_partitions=t.partitions, replication_factor=-1)
        for n in names
        if n not in existing
    ]
    if not events_only and t.examples and t.examples not in existing:
        # One partition: the examples' order is the learn order every replica repeats.
        wanted.append(
            NewTopic(
                t.examples,
                num_partitions=1,
                replication_factor=-1,
                config=examples_log_config(spec.adaptation.snapshot.every),
            )
        )
    create_topics(admin, wanted)


def examples_log_config(checkpoint_every_ms: int) -> dict[str, str]:
    """Retention of the examples log, from the checkpoint interval.

    A new replica starts from the newest checkpoint and a worker that read the pointer just
    before a newer one may still load the previous one (it stays `SNAPSHOT_GRACE_S`); a
    restarted learner adopts what follows its last checkpoint. So the log needs only what
    follows the oldest loadable checkpoint: at most one interval + the grace old while the
    learner runs. It keeps `EXAMPLES_KEEP_CHECKPOINTS` times that (at least an hour), in
    segments of a sixth of it, since Kafka deletes whole segments only (a segment goes
    once its newest record is older than the retention). A record trimmed anyway is not
    lost: a replica reports the gap, a restarted learner learns its label again.
    """
    lifetime_ms = int(checkpoint_every_ms) + SNAPSHOT_GRACE_S * 1000
    retention_ms = max(EXAMPLES_KEEP_CHECKPOINTS * lifetime_ms, EXAMPLES_MIN_RETENTION_MS)
    return {
        "cleanup.policy": "delete",
        "retention.ms": str(retention_ms),
        "retention.bytes": "-1",  # by time only: a replica's position is a time question
        "segment.ms": str(retention_ms // 6),
    }


def create_topics(admin: AdminClient, wanted: Sequence[NewTopic]) -> None:
    """Create `wanted`, waiting for each; one that already exists (a concurrent creator,
    the broker's auto-create) is fine, any other failure is raised with the topic's name."""
    if not wanted:
        return
    for name, future in admin.create_topics(list(wanted), operation_timeout=30).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"could not create topic {name}: {exc}") from None


def read_topic(
    connections: Connections,
    topic: str,
    *,
    expected: int | None = None,
    timeout_s: float = 60.0,
    idle_s: float = 3.0,
) -> list[Any]:
    """Every committed record of `topic` from the beginning (read_committed).

    Stops when `expected` records were read, or after `idle_s` without records once the end
    of every partition was reached, or at `timeout_s`.
    """
    import time
    import uuid

    from confluent_kafka import Consumer

    consumer = Consumer(
        quiet_consumer(
            connections.kafka_config(
                **{
                    "group.id": f"streamfer-reader-{uuid.uuid4().hex[:8]}",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,
                }
            )
        )
    )
    consumer.subscribe([topic])
    records: list[Any] = []
    eof: set[int] = set()
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            if expected is not None and len(records) >= expected:
                break
            batch = consumer.consume(10_000, 0.5)
            for msg in batch:
                err = msg.error()
                if err is None:
                    records.append(msg)
                    eof.discard(msg.partition())
                    last = time.monotonic()
                elif err.code() == KafkaError._PARTITION_EOF:
                    eof.add(msg.partition())
            COMMAND_LINK.raise_if_refused()
            assigned = {p.partition for p in consumer.assignment()}
            if (
                expected is None
                and assigned
                and eof >= assigned
                and time.monotonic() - last > idle_s
            ):
                break
    finally:
        consumer.close()
    return records
