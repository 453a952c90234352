"""Backpressure: when Redis goes away mid-stream the worker pauses consumption and retries
with backoff; when it is back, scoring resumes. Nothing is dropped or counted twice."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest
import redis

from streams.spec import Connections
from tests.integration.harness import (
    assert_features_exact,
    make_spec,
    prediction_counts,
    produce,
    read_json,
    recompute_features,
    start_worker,
    synthetic,
    wait_for,
)

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(port: int, folder: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            folder,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    wait_for(lambda: _pings(client), 20, "redis-server")
    return proc


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_worker_waits_out_a_redis_outage_and_loses_nothing(conn, model_file, unique, tmp_path):
    port = free_port()
    server = start_redis(port, str(tmp_path))
    local = Connections(bootstrap=conn.bootstrap, redis_url=f"redis://127.0.0.1:{port}/0")
    spec = make_spec(unique, {"path": str(model_file)})
    first, second = synthetic(4000, seed=51), synthetic(4000, seed=52)
    try:
        worker = start_worker(spec, local, max_events=8000, idle_exit_s=90)
        produce(conn, spec, first)
        wait_for(lambda: worker.worker.stats.events_in >= 4000, 120, "first half scored")

        # The outage: Redis saves its data and exits while events keep arriving.
        redis.Redis(port=port).shutdown(save=True)
        server.wait(20)
        produce(conn, spec, second)
        wait_for(lambda: worker.worker.metrics.paused._value.get() == 1, 60, "consumption paused")
        errors_seen = worker.worker.metrics.redis_errors._value.get()
        assert errors_seen >= 1
        server = start_redis(port, str(tmp_path))  # back, with the saved state

        stats = worker.join()
    finally:
        server.terminate()
        server.wait(20)

    assert stats.events_in >= 8000
    assert worker.worker.metrics.paused._value.get() == 0
    predictions = read_json(conn, spec.topics.predictions, expected=8000)
    counts = prediction_counts(predictions)
    assert set(counts) == {e["event_id"] for e in first + second}
    served = read_json(conn, spec.topics.features, timeout_s=60)
    assert_features_exact(served, recompute_features(conn, spec), spec.features.names)
