"""A worker stuck with a batch in flight (here: blocked in a Redis read, as it could be in a
librdkafka call) says so in one line and exits with EXIT_STALLED, for its supervisor or
Kubernetes to restart it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.ops.topics import ensure_topics
from streams.worker.watchdog import EXIT_STALLED
from tests.integration.harness import (
    make_spec,
    partition_owners,
    produce,
    synthetic,
    wait_for,
    write_spec,
)

pytestmark = pytest.mark.integration

STALL_S = 2
# Longer than the stall deadline, and than the worker's Redis socket timeout (10 s): the
# batch's feature call blocks for the whole deadline instead of failing into a pause.
PAUSE_MS = 20_000


@pytest.fixture
def paused_redis(admin_client) -> Iterator[object]:
    """Redis holding back writes and scripts (CLIENT PAUSE WRITE) once the test says so;
    unpaused at teardown (UNPAUSE itself is not held back)."""
    yield admin_client
    admin_client.execute_command("CLIENT", "UNPAUSE")


@pytest.fixture
def worker_log(tmp_path: Path) -> Iterator[tuple[list[subprocess.Popen[bytes]], Path]]:
    started: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "worker.log"
    yield started, log
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_a_worker_stuck_with_a_batch_in_flight_exits_to_be_restarted(
    conn, model_file, unique, tmp_path, paused_redis, worker_log
):
    started, log = worker_log
    model = {"path": str(model_file)}
    spec = make_spec(unique, model, partitions=1)
    spec_file = write_spec(tmp_path / "spec.yaml", unique, model, partitions=1)
    ensure_topics(conn, spec)
    env = {
        **os.environ,
        "STREAMFER_BOOTSTRAP": conn.bootstrap,
        "STREAMFER_REDIS_URL": conn.redis_url,
    }
    command = [sys.executable, "-m", "streams", "run", "-s", str(spec_file)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--metrics-port", "0", "--stall-exit", str(STALL_S)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started.append(proc)
    wait_for(lambda: partition_owners(conn, spec.group) == 1, 120, "the worker's assignment")
    assert proc.poll() is None, "an idle worker is never stalled"

    paused_redis.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
    produce(conn, spec, synthetic(50, seed=3))
    # Exits within the deadline plus a check interval, long before Redis answers again.
    assert proc.wait(PAUSE_MS / 1000 - 5) == EXIT_STALLED, log.read_text()[-3000:]
    lines = [line for line in log.read_text().splitlines() if "no batch finished" in line]
    assert len(lines) == 1, log.read_text()[-3000:]
    assert "while a batch was in flight" in lines[0]
    assert "main thread at " in lines[0]
    assert lines[0].endswith("exiting for the supervisor to restart")
