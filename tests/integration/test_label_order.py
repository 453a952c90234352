"""Labels come out of the learner's consumer in label-time order, however many partitions.

Real librdkafka hands a topic out partition chunk by partition chunk; the learner merges
them back into time order (streams/learner/ordering.py). The same labels produced to a
1-partition and to a 4-partition topic must be handed to the learner in the same order —
so the model it trains, and its accuracy, do not depend on the partition count.
"""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.learner.consumer import LabelConsumer
from streams.learner.labels import LabelRecord
from streams.spec import Connections
from tests.integration.harness import wait_for

pytestmark = pytest.mark.integration

LABELS = 3000


def _topic(conn: Connections, name: str, partitions: int) -> None:
    admin = AdminClient(conn.kafka_config())
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(timeout=30)


def _produce(conn: Connections, topic: str, partitions: int) -> None:
    producer = Producer(conn.kafka_config())
    for i in range(LABELS):
        # Keyed by card as a labeller would: partitions fill unevenly, each in time order.
        body = {"event_id": f"e{i}", "label": i % 2, "label_time": 1_000_000 + 10 * i}
        producer.produce(topic, orjson.dumps(body), partition=(i * 7919 // 13) % partitions)
    assert producer.flush(30) == 0


def _learned_order(conn: Connections, topic: str, unique: str) -> list[str]:
    # The hold bound is for a partition whose fetch lags (unit-tested with a clock); here
    # every partition reaches its end, so a long bound only rules out a loaded machine's
    # slow fetch releasing labels early — the order itself is what is under test.
    consumer = LabelConsumer(conn, topic, f"order-{unique}-{topic}", {}, max_hold_ms=60_000)
    out: list[LabelRecord] = []
    try:

        def drained() -> bool:
            out.extend(r for r in consumer.consume(500, 0.2) if isinstance(r, LabelRecord))
            return len(out) >= LABELS

        wait_for(drained, 60, f"{LABELS} labels from {topic}")
    finally:
        consumer.close()
    return [r.event_id for r in out]


def test_label_order_does_not_depend_on_the_partition_count(conn: Connections, unique: str) -> None:
    orders = {}
    for partitions in (1, 4):
        topic = f"labels-order-{partitions}-{unique}"
        _topic(conn, topic, partitions)
        _produce(conn, topic, partitions)
        orders[partitions] = _learned_order(conn, topic, unique)
    assert orders[1] == [f"e{i}" for i in range(LABELS)]
    assert orders[4] == orders[1], "4 partitions gave another learning order than 1"
