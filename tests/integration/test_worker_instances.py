"""Two supervisors on one consumer group, exactly-once, each with its own instance id (two
hosts, or `docker compose --scale worker=2`): their transactional ids differ, so neither
fences the other, and a read_committed reader sees exactly one prediction per event."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from streams.ops.topics import ensure_topics
from tests.integration.harness import (
    group_lag,
    make_spec,
    partition_owners,
    prediction_counts,
    produce,
    read_json,
    synthetic,
    wait_for,
    write_spec,
)

pytestmark = pytest.mark.integration

FENCED = re.compile(r"_FENCED|fenced", re.IGNORECASE)
SUMMARY = re.compile(r"(\d+) events, (\d+) predictions")


class Supervisors:
    """`streamfer run` processes, each in a session of its own with its stderr in a file;
    at teardown every process group still running is killed (children included)."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp_path = tmp_path
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []
        self._files: list[IO[bytes]] = []

    def start(self, spec_file: Path, conn, *args: str) -> subprocess.Popen[bytes]:
        log = self._tmp_path / f"supervisor-{len(self.started)}.log"
        out = log.open("wb")
        self._files.append(out)
        env = {
            **os.environ,
            "STREAMFER_BOOTSTRAP": conn.bootstrap,
            "STREAMFER_REDIS_URL": conn.redis_url,
            "STREAMFER_RDKAFKA_SESSION_TIMEOUT_MS": "6000",
            "STREAMFER_RDKAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        }
        env.pop("STREAMFER_INSTANCE_ID", None)
        command = [sys.executable, "-m", "streams", "run", "-s", str(spec_file)]
        proc = subprocess.Popen(
            [*command, "--metrics-port", "0", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started.append((proc, log))
        return proc

    def stderr(self, proc: subprocess.Popen[bytes]) -> str:
        log = next(path for started, path in self.started if started is proc)
        return log.read_text(errors="replace")

    def kill_all(self) -> None:
        for proc, _log in self.started:
            # The whole session, even if its leader is gone (`--workers 1` has no children).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for out in self._files:
            out.close()


@pytest.fixture
def supervisors(tmp_path: Path) -> Iterator[Supervisors]:
    started = Supervisors(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


def test_two_supervisors_on_one_group_never_fence_each_other(
    conn, model_file, unique, tmp_path, supervisors
):
    model = {"path": str(model_file)}
    spec = make_spec(unique, model, partitions=4)
    spec_file = write_spec(tmp_path / "spec.yaml", unique, model, partitions=4)
    ensure_topics(conn, spec)
    hosts = [
        supervisors.start(spec_file, conn, "--eos", "--instance-id", f"host-{name}")
        for name in ("a", "b")
    ]
    # Both members before any event: each owns partitions while the events flow.
    wait_for(lambda: partition_owners(conn, spec.group) == 2, 120, "two owners")
    events = synthetic(4_000, seed=11, n_cards=400)
    produce(conn, spec, events)
    wait_for(lambda: group_lag(conn, spec.group, spec.topics.events) == 0, 120, "no lag")
    for proc in hosts:
        proc.send_signal(signal.SIGTERM)
    for proc in hosts:
        assert proc.wait(60) == 0, supervisors.stderr(proc)[-3000:]

    counts = prediction_counts(
        read_json(conn, spec.topics.predictions, expected=len(events), timeout_s=60)
    )
    assert set(counts) == {e["event_id"] for e in events}
    assert max(counts.values()) == 1
    for proc in hosts:
        output = supervisors.stderr(proc)
        assert not FENCED.search(output), output[-3000:]
        summary = SUMMARY.search(output)
        assert summary, output[-3000:]
        assert int(summary.group(1)) > 0, "each supervisor must have scored some events"
