"""A broker outage of 30 s under both delivery modes: quiet while it lasts, quick after it.

An exactly-once and an at-least-once worker (real `streamfer run` processes, each on its own
topics and group) score a first wave of events; then the broker alone is stopped for 30 s
(Redis stays up) and started again, and a second wave is produced. Every event of both
waves must be scored within a bound of the broker's return — exactly once for a
read_committed reader in exactly-once mode — each worker's log must say the outage in a
line or two (not a librdkafka storm), and SIGTERM must still stop both cleanly.

The CI suite shares one broker among all tests, so this file starts a stack of its own on
free ports and stops only that one.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.ops.topics import ensure_topics
from streams.spec import Connections, PipelineSpec
from streams.stack.local import LocalStack
from tests.integration.harness import (
    make_spec,
    own_stack,
    produce,
    synthetic,
    wait_for,
    write_spec,
)
from tests.integration.worker_procs import PredictionReader, kill_group, log_tail, start_worker

pytestmark = pytest.mark.integration

OUTAGE_S = 30.0
RECOVERY_BOUND_S = 90.0  # from the broker serving again to the last event scored
FIRST_WAVE, SECOND_WAVE = 300, 2000
MODES = ("exactly_once", "at_least_once")
# What a worker says about the broker going and coming back; librdkafka's own lines
# ("Connection refused", "Disconnected", ...) must stay at DEBUG.
BROKER_LINES = ("broker unreachable", "reconnected to the broker")
STORM_MARKERS = ("Connection refused", "Disconnected", "rdkafka")


@pytest.fixture(scope="module")
def outage_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A broker and redis-server of this module only: stopping it disturbs no other test."""
    with own_stack(tmp_path_factory.mktemp("outage") / "home") as stack:
        yield stack


def test_both_modes_score_everything_soon_after_a_30s_broker_outage(
    outage_stack: LocalStack, model_file: Path, tmp_path: Path
) -> None:
    status = outage_stack.status()
    conn = Connections(bootstrap=status.bootstrap_servers, redis_url=status.redis_url)
    specs: dict[str, PipelineSpec] = {}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    readers: dict[str, PredictionReader] = {}
    model = {"path": str(model_file)}
    first = {m: synthetic(FIRST_WAVE, seed=31 + i) for i, m in enumerate(MODES)}
    second = {m: synthetic(SECOND_WAVE, seed=41 + i) for i, m in enumerate(MODES)}
    try:
        for mode in MODES:
            unique = f"{mode[:3]}{uuid.uuid4().hex[:8]}"
            delivery = {"delivery": {"mode": mode}}
            specs[mode] = spec = make_spec(unique, model, partitions=2, **delivery)
            spec_file = write_spec(
                tmp_path / f"{mode}.yaml", unique, model, partitions=2, **delivery
            )
            ensure_topics(conn, spec)
            logs[mode] = tmp_path / f"{mode}.log"
            procs[mode] = start_worker(spec_file, conn, logs[mode])
            readers[mode] = PredictionReader(conn, spec.topics.predictions)
            produce(conn, spec, first[mode])
        for mode in MODES:
            wait_for(lambda m=mode: readers[m].distinct() >= FIRST_WAVE, 120, f"{mode}: first wave")

        outage_stack.stop_kafka()
        stopped = time.monotonic()
        # The outage itself is the fault under test: it lasts OUTAGE_S, whatever the workers do.
        while time.monotonic() - stopped < OUTAGE_S:
            for mode in MODES:
                assert procs[mode].poll() is None, f"{mode} worker exited during the outage"
            time.sleep(1.0)
        outage_stack.start_kafka()
        back = time.monotonic()

        for mode in MODES:
            produce(conn, specs[mode], second[mode])
        want = {m: {e["event_id"] for e in first[m] + second[m]} for m in MODES}
        recovered: dict[str, float] = {}
        while len(recovered) < len(MODES):
            for mode in set(MODES) - set(recovered):
                if readers[mode].distinct() >= len(want[mode]):
                    recovered[mode] = time.monotonic() - back
            late = {m: readers[m].distinct() for m in MODES if m not in recovered}
            assert time.monotonic() - back < RECOVERY_BOUND_S, (
                f"not every event scored {RECOVERY_BOUND_S:.0f} s after the broker's return: "
                f"{late} of {len(first[MODES[0]]) + SECOND_WAVE}"
            )
        print(f"every event scored, s after the broker's return: {recovered}")

        for mode in MODES:
            procs[mode].send_signal(signal.SIGTERM)
        for mode in MODES:
            assert procs[mode].wait(30) == 0, f"{mode} worker did not stop cleanly on SIGTERM"
        for mode in MODES:
            readers[mode].distinct()
            assert set(readers[mode].counts) == want[mode], f"{mode}: an event has no prediction"
        duplicates = sum(c - 1 for c in readers["exactly_once"].counts.values())
        assert duplicates == 0, f"exactly_once: {duplicates} duplicate predictions"

        for mode in MODES:
            lines = logs[mode].read_text(errors="replace").splitlines()
            said = [line for line in lines if any(k in line for k in BROKER_LINES)]
            storm = [line for line in lines if any(k in line for k in STORM_MARKERS)]
            assert 1 <= len(said) <= 4, f"{mode}: broker state said {len(said)} times: {said}"
            assert not storm, f"{mode}: librdkafka noise in the log, e.g. {storm[:3]}"
    finally:
        for proc in procs.values():
            kill_group(proc)
        for reader in readers.values():
            reader.close()
        for mode, path in logs.items():
            print(f"--- {mode} worker log (tail) ---\n{log_tail(path)}")
