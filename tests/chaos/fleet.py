"""The processes a chaos run drives: `streamfer run --workers N` supervisors (several on one
group, each with its own instance id) and the learner, with their logs in files.

Every process is started in a session of its own and `stop_all` kills each tree by process
group, so nothing a run started outlives it, whether it passed or failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from streams.learner.process import LearnerProcess
from streams.spec import Connections
from tests.integration.worker_procs import kill_group, start_worker

SUPERVISOR_STOP_S = 45.0  # SIGTERM → exit: workers finish their batch (30 s) + margin
# A killed worker leaves the group after this, not after librdkafka's default 45 s.
FAST_SESSION = {
    "STREAMFER_RDKAFKA_SESSION_TIMEOUT_MS": "6000",
    "STREAMFER_RDKAFKA_HEARTBEAT_INTERVAL_MS": "1000",
}


def worker_pids(supervisor_pid: int) -> list[int]:
    """The live worker processes of a supervisor: its children started by multiprocessing's
    spawn (not its resource tracker), oldest first."""
    try:
        children = Path(f"/proc/{supervisor_pid}/task/{supervisor_pid}/children").read_text()
    except OSError:
        return []
    pids = []
    for pid in sorted(int(p) for p in children.split()):
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
    return pids


@dataclass
class Supervisor:
    """One `streamfer run --workers N [--eos] --instance-id ID` and its log."""

    spec_file: Path
    conn: Connections
    log: Path
    workers: int
    instance_id: str
    exactly_once: bool
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log_mark: int = 0  # the log's size at the last start

    def start(self) -> None:
        extra = ["--workers", str(self.workers), "--instance-id", self.instance_id]
        if self.exactly_once:
            extra.append("--eos")
        env = {**FAST_SESSION, **self.env}
        self._log_mark = self.log.stat().st_size if self.log.exists() else 0
        self.proc = start_worker(self.spec_file, self.conn, self.log, *extra, env=env)
        self.starts += 1

    def ready(self) -> bool:
        """Every worker of the last start is up (serving its metrics): past the imports,
        with its signal handlers installed."""
        with self.log.open("rb") as f:
            f.seek(self._log_mark)
            return f.read().count(b"metrics on") >= self.workers

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def refused_start(self) -> bool:
        """It exited 2 at start saying no broker or no Redis answered (it started during an
        outage or while Redis was loading its AOF): a restart policy's case, not a crash."""
        assert self.proc is not None
        tail = self.log.read_text(errors="replace")[-2000:]
        said = "no Kafka broker answered" in tail or "no Redis answered" in tail
        return self.proc.returncode == 2 and said

    def workers_now(self, timeout_s: float = 30.0) -> list[int]:
        """Its live workers, waiting (bounded) while it restarts a dead one."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while not (pids := worker_pids(self.proc.pid)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"supervisor {self.instance_id} has no live worker")
            time.sleep(0.1)
        return pids

    def sigterm(self) -> int | None:
        """SIGTERM and wait (bounded) for its exit: the exit status, or None if it hung (it
        is then killed)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(SUPERVISOR_STOP_S)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            return None

    def kill(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)


@dataclass
class Learner:
    """`streamfer learn` as a child process (`LearnerProcess`), restartable."""

    spec_file: Path
    conn: Connections
    workdir: Path
    env: dict[str, str]
    proc: LearnerProcess | None = None
    starts: int = 0

    def start(self) -> None:
        # faust keeps its data folder in its working directory: the same one across
        # restarts, as a restarted container with its volume would have; its log
        # (workdir/learner.log) is appended to.
        self.proc = LearnerProcess(
            self.spec_file, self.conn, self.workdir, args=("--session-timeout", "6"), env=self.env
        )
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.alive():
            self.proc.kill()

    def stop(self) -> int | None:
        """SIGTERM (a last snapshot), bounded: the exit status, None when it had to be
        killed."""
        if self.proc is None or not self.alive():
            return self.proc.proc.returncode if self.proc else None
        self.proc.proc.terminate()
        try:
            return self.proc.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.proc.kill()
            self.proc.proc.wait(10)
            return None


def stop_all(supervisors: list[Supervisor], learners: list[Learner]) -> None:
    """Kill whatever still runs (the finally of a run)."""
    for sup in supervisors:
        sup.kill()
    for learner in learners:
        if learner.proc is not None and learner.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(learner.proc.proc.pid, signal.SIGKILL)
            learner.proc.proc.wait(10)
