"""Worker processes: one in-process worker, or a supervisor of N in one consumer group.

SIGTERM/SIGINT set a stop flag: the batch in flight finishes, its offsets are committed,
the worker leaves the group. The supervisor forwards the signal and restarts a worker that
died (with backoff, so a broken dependency is not a crash loop).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.spec import Connections, load_spec
from streams.worker.pipeline import RunStats, Worker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerOptions:
    exactly_once: bool | None = None
    metrics_host: str | None = None
    metrics_port: int | None = None
    max_events: int | None = None
    idle_exit_s: float | None = None


def _install_stop(stop: threading.Event) -> None:
    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %d: finishing the batch in flight", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_one(
    spec_path: str | Path, connections: Connections, options: WorkerOptions, worker_id: int = 0
) -> RunStats:
    """Run one worker in this process until stopped, idle or `max_events` consumed."""
    spec = load_spec(spec_path)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        _install_stop(stop)
    worker = Worker(
        spec, connections, worker_id=worker_id, exactly_once=options.exactly_once, stop=stop
    )
    host = options.metrics_host or spec.metrics.host
    base = spec.metrics.port if options.metrics_port is None else options.metrics_port
    port = worker.metrics.serve(host, base + worker_id if base else 0)
    log.info("worker %d: metrics on http://%s:%d/metrics", worker_id, host, port)
    return worker.run(max_events=options.max_events, idle_exit_s=options.idle_exit_s)


def _child(
    spec_path: str, connections: Connections, options: WorkerOptions, worker_id: int
) -> None:
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s w{worker_id} %(levelname)s %(message)s"
    )
    stats = run_one(spec_path, connections, options, worker_id)
    log.info(
        "worker %d done: %d events, %d predictions", worker_id, stats.events_in, stats.predictions
    )


def supervise(
    spec_path: str | Path, connections: Connections, options: WorkerOptions, workers: int
) -> int:
    """Run `workers` processes in one consumer group; returns the exit status."""
    ctx = mp.get_context("spawn")
    stop = threading.Event()
    _install_stop(stop)
    procs: dict[int, Any] = {}
    restarts: dict[int, float] = {}

    def start(i: int) -> None:
        proc = ctx.Process(
            target=_child, args=(str(spec_path), connections, options, i), daemon=False
        )
        proc.start()
        procs[i] = proc

    for i in range(workers):
        start(i)
    status = 0
    while procs:
        if stop.is_set():
            for proc in procs.values():
                if proc.is_alive() and proc.pid:
                    proc.terminate()  # SIGTERM: the child finishes its batch
            for proc in procs.values():
                proc.join(60)
            break
        for i, proc in list(procs.items()):
            proc.join(0.2)
            if proc.is_alive():
                continue
            del procs[i]
            if proc.exitcode == 0:
                continue
            status = 1
            delay = min(30.0, max(1.0, 2 * restarts.get(i, 0.5)))
            log.warning("worker %d exited with %s; restarting in %.0fs", i, proc.exitcode, delay)
            restarts[i] = delay
            if stop.wait(delay):
                break
            start(i)
    return status if not stop.is_set() else 0


def run_workers(
    spec_path: str | Path, connections: Connections, options: WorkerOptions, workers: int
) -> Any:
    if workers <= 1:
        return run_one(spec_path, connections, options)
    return supervise(spec_path, connections, options, workers)
