"""The benchmark job written idiomatically for faust-streaming: one agent over the topic.

The agent takes events in micro-batches (`stream.take_events(max_size, within=max_wait)`,
Faust's own batching, with the spec's batch settings), calls the feature store once and
the ONNX model once per batch, and sends each prediction with `await topic.send(...)`.
That is the fastest idiomatic shape of a Faust agent for this job; at-least-once (Faust's
default), producer linger 5 ms and lz4 as streamfer's (aiokafka's lz4 needs `cramjam`).
"""

from __future__ import annotations

import atexit
import sys
import tempfile
from typing import Any

from bench.systems.common import Report, RunnerConfig
from bench.systems.peer_job import PeerJob
from streams.spec import load_spec


def main(config_path: str) -> None:
    import faust

    config = RunnerConfig.load(config_path)
    spec = load_spec(config.spec_path)
    report = Report(config.report_path, config.system, config.worker_id)
    job = PeerJob(spec, config.redis_url)
    counts = {"events": 0, "predictions": 0}
    atexit.register(lambda: report.finish(**counts))

    app = faust.App(
        spec.group,
        broker=f"kafka://{config.bootstrap}",
        value_serializer="json",
        consumer_auto_offset_reset="earliest",
        topic_partitions=4,
        producer_linger=0.005,
        producer_compression_type="lz4",
        web_enabled=False,
        datadir=tempfile.mkdtemp(prefix="bench-faust-"),
    )
    events = app.topic(spec.topics.events, key_serializer="raw", value_serializer="json")
    predictions = app.topic(spec.topics.predictions, key_serializer="raw", value_serializer="json")
    max_size, within = spec.batching.max_size, spec.batching.max_wait / 1000

    @app.agent(events)
    async def score(stream: Any) -> None:
        async for batch in stream.take_events(max_size, within=within):
            report.first_consume()
            counts["events"] += len(batch)
            scored = job.score(
                [(e.value, (e.message.topic, e.message.partition, e.message.offset)) for e in batch]
            )
            for key, prediction in scored:
                await predictions.send(key=key.encode(), value=prediction)
            counts["predictions"] += len(scored)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()


if __name__ == "__main__":
    main(sys.argv[1])
