"""streamfer as benchmarked: one `streams.worker.pipeline.Worker` per process, as `streamfer run`.

`streamfer run --workers N` starts N processes that each build a `Worker` and call `run()`;
this runner does the same, plus two things the harness needs: it waits paused in the
consumer group until every worker has its partitions (so a second worker joining does not
rebalance the first in the middle of the measurement), and it reports the worker's
per-stage timings (`Worker.metrics.stage`) at exit. With `profile_path` the run is
sampled by pyinstrument.
"""

from __future__ import annotations

import runpy
import sys
from typing import Any

from bench.systems.common import Report, RunnerConfig, stop_on_signals, wait_for_go

STAGES = ("decode", "features", "inference", "prediction_log", "encode", "produce")


def stage_totals(metrics: Any) -> dict[str, Any]:
    """Seconds spent per stage, batches, batch sizes and consume wait, from the histograms."""
    registry = metrics.registry
    value = registry.get_sample_value
    stages = {
        s: {
            "seconds": value("streamfer_stage_seconds_sum", {"stage": s}) or 0.0,
            "batches": value("streamfer_stage_seconds_count", {"stage": s}) or 0.0,
        }
        for s in STAGES
    }
    return {
        "stages": stages,
        "batches": value("streamfer_batch_size_count") or 0.0,
        "batched_events": value("streamfer_batch_size_sum") or 0.0,
        "consume_seconds": value("streamfer_batch_wait_seconds_sum") or 0.0,
        # The worker's own wait for the features thread: the part of "features" (which now
        # runs beside the worker's thread) that the overlap did not hide.
        "features_wait_seconds": value("streamfer_stage_seconds_sum", {"stage": "features_wait"})
        or 0.0,
    }


def main(config_path: str) -> None:
    config = RunnerConfig.load(config_path)
    if config.patch:
        runpy.run_path(config.patch, run_name="bench_patch")
    from streams.spec import Connections, load_spec
    from streams.worker.pipeline import Worker

    spec = load_spec(config.spec_path)
    stop = stop_on_signals()
    report = Report(config.report_path, config.system, config.worker_id)
    worker = Worker(
        spec,
        Connections(bootstrap=config.bootstrap, redis_url=config.redis_url),
        worker_id=config.worker_id,
        stop=stop,
    )
    if config.go_key:
        # The worker's own consumer: paused, it joins the group and waits for the others.
        consumer = worker._consumer
        consumer.pause_all()
        wait_for_go(config.redis_url, config.go_key, consumer.serve_while_paused, stop)
        consumer.resume_all()
    profiler = None
    if config.profile_path:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
        profiler.start()
    stats = worker.run()
    if profiler is not None:
        profiler.stop()
        assert config.profile_path is not None
        with open(config.profile_path + ".txt", "w") as fh:
            fh.write(profiler.output_text(unicode=False, color=False, show_all=False))
        with open(config.profile_path + ".html", "w") as fh:
            fh.write(profiler.output_html())
    report.data["first_consume"] = stats.first_consume
    report.finish(
        events=stats.events_in,
        predictions=stats.predictions,
        dead_letters=stats.dead_letters,
        last_done=stats.last_done,
        **stage_totals(worker.metrics),
    )


if __name__ == "__main__":
    main(sys.argv[1])
