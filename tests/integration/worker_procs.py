"""`streamfer run` as a process of its own for fault tests: its output in a file, and a
kill of its whole process group that works whether the test passed or failed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import orjson
from confluent_kafka import Consumer

from streams.spec import Connections
from streams.worker.kafka_log import quiet_consumer

_METRICS = ("--metrics-port", "0")  # a free port each: several workers run side by side


def start_worker(
    spec_file: Path, conn: Connections, log: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`python -m streams run -s spec_file ...extra`, stdout and stderr appended to `log`.

    A session of its own, so `kill_group` reaches its children (a supervisor's workers) too.
    """
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams", "run", "-s", str(spec_file), *_METRICS, *extra],
            env={
                **os.environ,
                "STREAMFER_BOOTSTRAP": conn.bootstrap,
                "STREAMFER_REDIS_URL": conn.redis_url,
                **(env or {}),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL `proc`'s process group if it still runs, and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def log_tail(log: Path, lines: int = 40) -> str:
    """The last `lines` of a worker's output (printed when a test fails)."""
    if not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


class PredictionReader:
    """A read_committed reader of a predictions topic, counting every prediction per event
    id seen so far (so a duplicate shows as a count of 2)."""

    def __init__(self, conn: Connections, topic: str) -> None:
        self.counts: Counter[str] = Counter()
        self._consumer = Consumer(
            quiet_consumer(
                conn.kafka_config(
                    **{
                        "group.id": f"prediction-reader-{uuid.uuid4().hex[:8]}",
                        "auto.offset.reset": "earliest",
                        "enable.auto.commit": False,
                        "isolation.level": "read_committed",
                    }
                )
            )
        )
        self._consumer.subscribe([topic])

    def _read(self) -> None:
        for msg in self._consumer.consume(10_000, 0.2):
            if msg.error() is None:
                self.counts[orjson.loads(msg.value())["event_id"]] += 1

    def distinct(self) -> int:
        """Read what arrived; the number of events with a prediction."""
        self._read()
        return len(self.counts)

    def total(self) -> int:
        """Read what arrived; the number of predictions (duplicates included)."""
        self._read()
        return sum(self.counts.values())

    def close(self) -> None:
        self._consumer.close()
