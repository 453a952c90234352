"""What every system runner shares: its config file, its report file, the stop signal.

A runner is a process (`python -m bench.systems.<name> CONFIG.json`) that consumes the
events topic of its spec and writes predictions until SIGTERM. It reports the wall-clock
time of its first consumed event as soon as it happens, and its counters at exit. This
module imports nothing beyond the standard library, so it also runs in the Quix Streams
virtual environment.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunnerConfig:
    """Everything a runner process needs, passed as one JSON file."""

    system: str
    bootstrap: str
    redis_url: str
    spec_path: str
    report_path: str
    worker_id: int = 0
    go_key: str | None = None  # wait (paused, in the group) until this Redis key exists
    profile_path: str | None = None  # pyinstrument output prefix
    patch: str | None = None  # a Python file exec'd before the worker is built (A/B tests)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> RunnerConfig:
        return cls(**json.loads(Path(path).read_text()))

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))


class Report:
    """The runner's report file; rewritten (atomically) at first consume and at exit."""

    def __init__(self, path: str | Path, system: str, worker_id: int) -> None:
        self._path = Path(path)
        self.data: dict[str, Any] = {
            "system": system,
            "worker_id": worker_id,
            "pid": os.getpid(),
            "first_consume": None,
            "events": 0,
            "predictions": 0,
            "finished": False,
        }
        self.write()

    def first_consume(self) -> None:
        """Note the first consumed event's time (only the first call counts)."""
        if self.data["first_consume"] is None:
            self.data["first_consume"] = time.time()
            self.write()

    def write(self) -> None:
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self._path)

    def finish(self, **values: Any) -> None:
        self.data.update(values, finished=True)
        self.write()


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (the harness stops runners with SIGTERM)."""
    stop = threading.Event()

    def handler(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def wait_for_go(
    redis_url: str, key: str, serve: Callable[[float], None], stop: threading.Event
) -> None:
    """Serve the consumer group (paused) until the harness sets `key` in Redis."""
    from features.redis_connect import connect  # redis-py only: runs in the Quix venv too

    client = connect(redis_url)
    try:
        # GET, not EXISTS: the stack's `streamfer` ACL user may only send streamfer's commands.
        while not stop.is_set() and client.get(key) is None:
            serve(0.05)
    finally:
        client.close()
