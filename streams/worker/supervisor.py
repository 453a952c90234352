"""Worker processes: one in-process worker, or a supervisor of N in one consumer group.

SIGTERM/SIGINT set a stop flag: the batch in flight finishes, its offsets are committed,
the worker leaves the group. A second signal while stopping exits at once (what was not
committed is consumed again). The supervisor forwards both and restarts a worker that
died (with backoff, so a broken dependency is not a crash loop; `RestartBackoff`). A worker
process also runs a `Watchdog`: stuck with work for `stall_exit_s`, it exits to be restarted.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from features.store import StoreRefused
from streams.security.redaction import install_log_redaction, redacted_traceback
from streams.spec import Connections, load_spec
from streams.worker.kafka_log import BrokerRefused
from streams.worker.pipeline import RunStats, Worker
from streams.worker.restarts import RestartBackoff
from streams.worker.watchdog import DEFAULT_STALL_S, Stall, Watchdog

log = logging.getLogger(__name__)

_SIGNALS = {signal.SIGTERM, signal.SIGINT}
# How long a stopping supervisor waits for its workers before it kills them.
_STOP_TIMEOUT_S = 75.0
# A child's exit status when the broker refused its credentials: restarting cannot help.
_EXIT_REFUSED = 3
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class WorkerOptions:
    exactly_once: bool | None = None
    metrics_host: str | None = None
    metrics_port: int | None = None
    max_events: int | None = None
    idle_exit_s: float | None = None
    name_prefix: str | None = None  # `--name`: the child processes load the spec with it
    # Part of every transactional.id and client.id (streams/worker/instance.py); None: the
    # host name, or STREAMFER_INSTANCE_ID.
    instance_id: str | None = None
    # A worker busy this long with no batch finished exits (0: no watchdog).
    stall_exit_s: float = DEFAULT_STALL_S


class StopSignals:
    """SIGTERM/SIGINT answered on a thread of their own: the first stops, the second forces.

    A Python signal handler runs only when the main thread is back in the interpreter, so
    a main thread stuck in a C call (a consumer close during a rebalance) never saw a
    second SIGTERM. Python's C-level handler also writes the signal's number to the wakeup
    fd at once, whichever thread the signal lands on; a thread reading that fd answers it.
    """

    def __init__(
        self, on_stop: Callable[[int], None], on_force: Callable[[int], None] | None = None
    ) -> None:
        self._on_stop = on_stop
        self._on_force = on_force or _exit_now
        self._done = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._wait, name="stop-signals", daemon=True)
        self._read_fd, self._write_fd = -1, -1
        self._previous_fd = -1
        self._previous_handlers: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        for signum in _SIGNALS:
            # A handler (doing nothing itself) instead of the default action, which kills.
            self._previous_handlers[signum] = signal.signal(signum, _noted)
        self._previous_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._done.set()
        os.write(self._write_fd, b"\0")  # wakes the reader
        self._thread.join(2.0)
        os.close(self._write_fd)
        os.close(self._read_fd)

    def _wait(self) -> None:
        while not self._done.is_set():
            for signum in os.read(self._read_fd, 64):
                if signum in _SIGNALS and not self._done.is_set():
                    self._received(signum)

    def _received(self, signum: int) -> None:
        first, self._stopping = not self._stopping, True  # only this thread calls it
        if first:
            log.info("signal %d: finishing the batch in flight", signum)
            self._on_stop(signum)
        else:
            log.warning("signal %d again: stopping now", signum)
            self._on_force(signum)


def _noted(_signum: int, _frame: Any) -> None:
    """The Python-level handler: the wakeup fd already told `StopSignals`."""


def _exit_now(signum: int) -> None:
    """A second signal: leave without finishing (uncommitted events are consumed again)."""
    logging.shutdown()
    os._exit(128 + signum)


def run_one(
    spec_path: str | Path, connections: Connections, options: WorkerOptions, worker_id: int = 0
) -> RunStats:
    """Run one worker in this process until stopped, idle or `max_events` consumed.

    In the main thread (a process of its own) the worker runs under signals and a watchdog;
    in another thread (tests, embedding) under neither: the watchdog would end the process.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        return _run(spec_path, connections, options, worker_id, stop)
    with StopSignals(lambda _signum: stop.set()):
        return _run(spec_path, connections, options, worker_id, stop, watched=True)


def _run(
    spec_path: str | Path,
    connections: Connections,
    options: WorkerOptions,
    worker_id: int,
    stop: threading.Event,
    *,
    watched: bool = False,
) -> RunStats:
    spec = load_spec(spec_path, prefix=options.name_prefix)
    worker = Worker(
        spec,
        connections,
        worker_id=worker_id,
        exactly_once=options.exactly_once,
        stop=stop,
        instance_id=options.instance_id,
    )
    host = options.metrics_host or spec.metrics.host
    base = spec.metrics.port if options.metrics_port is None else options.metrics_port
    port = worker.metrics.serve(host, base + worker_id if base else 0)
    url = f"http://{host}:{port}/metrics"
    if base:
        log.info("worker %d: metrics on %s", worker_id, url)
    else:  # a port picked for us: say which, whatever the log level (once per worker)
        print(f"worker {worker_id}: metrics on {url}", file=sys.stderr, flush=True)
    if not watched or options.stall_exit_s <= 0:
        return worker.run(max_events=options.max_events, idle_exit_s=options.idle_exit_s)

    def stalled(_stall: Stall) -> None:
        worker.metrics.stalled.set(1)

    with Watchdog(worker.progress, options.stall_exit_s, on_stall=stalled):
        return worker.run(max_events=options.max_events, idle_exit_s=options.idle_exit_s)


def _die_with(supervisor_pid: int) -> None:
    """A worker never outlives its supervisor (SIGKILLed, say, by a test's teardown or the
    OOM killer): on Linux the kernel then sends it SIGKILL; what it had not committed is
    consumed again, as after any crash."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != supervisor_pid:  # it died before prctl took effect
        os._exit(1)


def _child(
    spec_path: str,
    connections: Connections,
    options: WorkerOptions,
    worker_id: int,
    supervisor_pid: int,
) -> None:
    # Out of the terminal's process group: a Ctrl-C reaches the supervisor only, which
    # forwards one SIGTERM (the child must not take Ctrl-C + SIGTERM as a second signal).
    os.setpgrp()
    _die_with(supervisor_pid)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s w{worker_id} %(levelname)s %(message)s"
    )
    install_log_redaction()
    try:
        stats = run_one(spec_path, connections, options, worker_id)
    except (BrokerRefused, StoreRefused) as exc:
        log.error("%s", exc)
        sys.exit(_EXIT_REFUSED)
    except Exception as exc:
        # multiprocessing would print this traceback itself, secrets and all.
        sys.stderr.write(redacted_traceback(type(exc), exc, exc.__traceback__))
        raise SystemExit(1) from None
    log.info(
        "worker %d done: %d events, %d predictions", worker_id, stats.events_in, stats.predictions
    )


def supervise(
    spec_path: str | Path, connections: Connections, options: WorkerOptions, workers: int
) -> int:
    """Run `workers` processes in one consumer group; returns the exit status."""
    ctx = mp.get_context("spawn")
    stop = threading.Event()
    forced = threading.Event()
    refused = threading.Event()  # a worker's credentials were refused
    procs: dict[int, Any] = {}
    backoff = RestartBackoff()

    def forward(_signum: int) -> None:
        for proc in list(procs.values()):
            if proc.is_alive() and proc.pid:
                proc.terminate()  # SIGTERM: a stopping child exits at once

    def force(signum: int) -> None:
        forced.set()
        forward(signum)

    def start(i: int) -> None:
        proc = ctx.Process(
            target=_child,
            args=(str(spec_path), connections, options, i, os.getpid()),
            daemon=False,
        )
        proc.start()
        procs[i] = proc
        backoff.started(i)

    status = 0
    with StopSignals(lambda _signum: stop.set(), force):
        for i in range(workers):
            start(i)
        while procs and not stop.is_set():
            for i, proc in list(procs.items()):
                proc.join(0.2)
                if proc.is_alive():
                    continue
                del procs[i]
                if proc.exitcode == 0:
                    continue
                status = 1
                if proc.exitcode == _EXIT_REFUSED:  # it said why; stop the others too
                    refused.set()
                    stop.set()
                    break
                delay = backoff.delay(i)
                log.warning(
                    "worker %d exited with %s; restarting in %.0fs", i, proc.exitcode, delay
                )
                if stop.wait(delay):
                    break
                start(i)
        if stop.is_set():
            forward(signal.SIGTERM)  # each child finishes its batch in flight
            _wait_or_kill(list(procs.values()), _STOP_TIMEOUT_S)
            return 1 if forced.is_set() or refused.is_set() else 0
    return status


def _wait_or_kill(procs: list[Any], timeout_s: float) -> None:
    """Wait for `procs` to exit, all together at most `timeout_s`; then kill the rest."""
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            log.warning("worker pid %s did not stop in %.0f s; killing it", proc.pid, timeout_s)
            proc.kill()
            proc.join(5)


def run_workers(
    spec_path: str | Path, connections: Connections, options: WorkerOptions, workers: int
) -> Any:
    if workers <= 1:
        return run_one(spec_path, connections, options)
    return supervise(spec_path, connections, options, workers)
