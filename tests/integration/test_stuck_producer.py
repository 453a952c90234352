"""An at-least-once producer whose records go unacknowledged while the broker answers is
replaced, and the batch it held is handed back to be consumed again (when that counts as
stuck, and that an outage never does: tests/unit/streams/worker/test_ack_watch.py).

The records held are real: the producer's topic does not exist and may not be created
(`allow.auto.create.topics` false), so librdkafka keeps them queued while it waits for the
topic, as it would for a state it does not leave, and the broker answers all along.
"""

from __future__ import annotations

import pytest

from streams.spec import Connections
from streams.worker.consumer import BatchConsumer, MessageBatch
from streams.worker.delivery import AtLeastOnceOutput, BatchAborted, OutputBatch, OutputTopics
from streams.worker.metrics import WorkerMetrics
from tests.integration.test_learner import create_topic
from tests.unit.streams.worker.test_overlap import RecordedOffsets
from tests.unit.streams.worker.test_scoring import Msg

pytestmark = pytest.mark.integration


def one_batch() -> OutputBatch:
    source = MessageBatch([Msg(b"{}", b"k", 0, 41)], 0.0)  # type: ignore[list-item]
    return OutputBatch(source=source, predictions=[(b"k", b'{"score": 0.5}')])


def test_a_producer_stuck_while_the_broker_answers_is_replaced_and_its_batch_replays(
    conn: Connections, unique: str
) -> None:
    predictions = f"stuck-{unique}"  # never created
    create_topic(conn, f"{predictions}-dlq", 1)
    consumer = BatchConsumer(
        conn.kafka_config(**{"group.id": f"stuck-{unique}"}),
        [f"{predictions}-dlq"],
        max_size=10,
        max_wait_s=0.1,
    )
    offsets = RecordedOffsets([], consumer.broker_answers)
    metrics = WorkerMetrics()
    # The timeouts bound the test: without the replacement, flush() would return only
    # when librdkafka gives the records up (a delivery failure, not a replay).
    waits = {"topic.metadata.propagation.max.ms": 120_000, "message.timeout.ms": 120_000}
    output = AtLeastOnceOutput(
        conn.kafka_config(**{"allow.auto.create.topics": False, **waits}),
        offsets,
        OutputTopics(predictions, f"{predictions}-dlq"),
        metrics,
        stuck_acks_s=3.0,
    )
    batch = one_batch()
    try:
        output.send(batch)
        with pytest.raises(BatchAborted, match="producer replaced") as aborted:
            output.idle()
    finally:
        output.close()
        consumer.close()

    assert aborted.value.replay is batch.source  # the pipeline seeks back to it
    assert offsets.stored == []  # nothing the stuck producer held counts as done
    assert metrics.producers_replaced._value.get() == 1
