"""The benchmark job written idiomatically for Quix Streams: a StreamingDataFrame pipeline.

Quix Streams hands user code one message at a time (`sdf.apply`), so the job scores each
event with its own feature-store call and its own ONNX run, exactly what a Quix user
calling the same libraries gets. The producer gets the same batching settings as
streamfer's (linger 5 ms, lz4, 10,000 records per batch), at-least-once as streamfer.

Runs in its own virtual environment (`bench/peers.py` builds it): Quix Streams pins an
older confluent-kafka than streamfer.
"""

from __future__ import annotations

import sys
import tempfile
from typing import Any

from bench.systems.common import Report, RunnerConfig
from bench.systems.peer_job import PeerJob
from streams.spec import load_spec


def main(config_path: str) -> None:
    from quixstreams import Application, message_context

    config = RunnerConfig.load(config_path)
    spec = load_spec(config.spec_path)
    report = Report(config.report_path, config.system, config.worker_id)
    job = PeerJob(spec, config.redis_url)
    app = Application(
        broker_address=config.bootstrap,
        consumer_group=spec.group,
        auto_offset_reset="earliest",
        processing_guarantee="at-least-once",
        producer_extra_config={
            "linger.ms": 5,
            "compression.type": "lz4",
            "batch.num.messages": 10_000,
        },
        consumer_extra_config={"isolation.level": "read_committed"},
        state_dir=tempfile.mkdtemp(prefix="bench-quix-"),
        loglevel="WARNING",
        auto_create_topics=False,
    )
    events = app.topic(spec.topics.events, key_deserializer="str", value_deserializer="json")
    predictions = app.topic(spec.topics.predictions, key_serializer="str", value_serializer="json")
    counts = {"events": 0, "predictions": 0}

    def score(event: Any) -> dict[str, Any] | None:
        if counts["events"] == 0:
            report.first_consume()
        counts["events"] += 1
        ctx = message_context()
        scored = job.score([(event, (ctx.topic, ctx.partition, ctx.offset))])
        if not scored:
            return None
        counts["predictions"] += 1
        return scored[0][1]

    sdf = app.dataframe(events)
    sdf = sdf.apply(score).filter(lambda prediction: prediction is not None)
    sdf.to_topic(predictions, key=lambda prediction: prediction["keys"]["card_id"])
    app.run()  # until SIGTERM
    job.close()
    report.finish(**counts)


if __name__ == "__main__":
    main(sys.argv[1])
