"""SIGTERM while the group rebalances and a transaction is open, over and over: every time
the worker exits 0 within 30 s, and at the end no event is lost or scored twice.

Events flow the whole time. Each iteration starts a new exactly-once `streamfer run` (the
group rebalances as it joins) and, at a random moment of its joining (every other time
right after the old member began giving up its partitions), SIGTERMs the member that was
scoring until then — mid-batch, mid-transaction or mid-rebalance; the phases hit are
printed. The newcomer
carries on, and is the one SIGTERMed in the next iteration. A read_committed reader checks
the whole history afterwards: one prediction per event. The seed is printed so a failure
replays its timings.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.ops.topics import ensure_topics
from streams.spec import Connections
from streams.workloads.producing import produce_events
from tests.integration.harness import make_spec, synthetic, wait_for, write_spec
from tests.integration.worker_procs import PredictionReader, kill_group, log_tail, start_worker

pytestmark = pytest.mark.integration

ITERATIONS = 20
PARTITIONS = 4
EXIT_BOUND_S = 30.0
RATE = 400  # events per second while the loop runs
# Short sessions: a member that left is replaced quickly (it leaves the group on close anyway).
GROUP_ENV = {
    "STREAMFER_RDKAFKA_SESSION_TIMEOUT_MS": "6000",
    "STREAMFER_RDKAFKA_HEARTBEAT_INTERVAL_MS": "1000",
}


def _paced(events: list[dict[str, Any]], stop: threading.Event, sent: list[str]) -> Iterator[Any]:
    """`events` at about RATE a second until `stop` (each id recorded as it is handed over)."""
    chunk = RATE // 10
    for start in range(0, len(events), chunk):
        if stop.is_set():
            return
        for event in events[start : start + chunk]:
            sent.append(event["event_id"])
            yield event
        time.sleep(0.1)  # pacing of the load, not a wait for anything


def _said(log: Path, text: str) -> bool:
    return log.exists() and text in log.read_text(errors="replace")


def _wait_closely(predicate: Any, timeout_s: float) -> None:
    """`wait_for` at 10 ms steps: a rebalance is over in tens of milliseconds."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the rebalance to begin"
        time.sleep(0.01)


def _owns_all(log: Path, partitions: int) -> bool:
    """Whether the member's last rebalance line gave it all `partitions` partitions."""
    lines = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if " assigned [" in line or " revoked [" in line
    ]
    return bool(lines) and " assigned [" in lines[-1] and lines[-1].count("('") == partitions


def _count(log: Path, text: str) -> int:
    return log.read_text(errors="replace").count(text) if log.exists() else 0


def _phase(log: Path, partitions: int) -> str:
    """Where the group was for this member when SIGTERM came, from its INFO lines."""
    last = ""
    for line in log.read_text(errors="replace").splitlines():
        if "signal 15" in line:
            break
        if " revoked [" in line or " assigned [" in line:
            last = line
    if " revoked [" in last:
        return "mid-rebalance"
    if last.count("('") == partitions:
        return "before the newcomer's join"
    return "after the join, partitions shared"


def test_sigterm_mid_rebalance_and_mid_transaction_exits_cleanly_every_time(
    conn: Connections, model_file: Path, unique: str, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    model = {"path": str(model_file)}
    delivery = {
        "delivery": {"mode": "exactly_once"},
        "batching": {"max_size": 200, "max_wait": "20ms"},
    }
    spec = make_spec(unique, model, partitions=PARTITIONS, **delivery)
    spec_file = write_spec(tmp_path / "spec.yaml", unique, model, partitions=PARTITIONS, **delivery)
    ensure_topics(conn, spec)
    events = synthetic(RATE * 300, seed=seed % 1000)
    sent: list[str] = []
    stop_load = threading.Event()
    load = threading.Thread(
        target=produce_events,
        args=(conn, spec.topics.events, _paced(events, stop_load, sent)),
        kwargs={"key_field": "card_id"},
        daemon=True,
    )
    reader = PredictionReader(conn, spec.topics.predictions)
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []

    def start(index: int) -> subprocess.Popen[bytes]:
        logs.append(tmp_path / f"worker-{index}.log")
        # An instance id each: two live members must not share a transactional id.
        env = {**GROUP_ENV, "STREAMFER_INSTANCE_ID": f"sigterm-{index}"}
        procs.append(start_worker(spec_file, conn, logs[-1], "--eos", "--verbose", env=env))
        return procs[-1]

    exits: list[float] = []
    phases: Counter[str] = Counter()
    try:
        load.start()
        current = start(0)
        wait_for(lambda: reader.total() > 0, 120, "the first worker scoring")
        for i in range(1, ITERATIONS + 1):
            # The rebalance of the last member's leaving is over: the one left owns all.
            wait_for(lambda: _owns_all(logs[-1], PARTITIONS), 60, f"worker {i - 1} owning all")
            revokes = _count(logs[-1], " revoked [")
            newcomer = start(i)
            if i % 2:
                # Its metrics line comes once its consumer is built, just before it joins.
                wait_for(lambda: _said(logs[-1], "metrics on"), 60, f"worker {i} starting")
                time.sleep(rng.uniform(0.0, 0.5))  # a random moment of the join: the fault
            else:  # the join has begun: the member to be stopped is giving up its partitions
                _wait_closely(lambda r=revokes: _count(logs[-2], " revoked [") > r, 60)
            scored = reader.total()
            current.send_signal(signal.SIGTERM)
            sigterm_at = time.monotonic()
            try:
                code = current.wait(EXIT_BOUND_S)
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"iteration {i}: no exit {EXIT_BOUND_S:.0f} s after SIGTERM (seed {seed})"
                )
            exits.append(time.monotonic() - sigterm_at)
            assert code == 0, f"iteration {i}: exit status {code} (seed {seed})"
            phases[_phase(logs[-2], PARTITIONS)] += 1
            current = newcomer
            wait_for(lambda s=scored: reader.total() > s, 60, f"worker {i} scoring")
        stop_load.set()
        load.join(30)
        assert not load.is_alive(), "the producer of the load did not finish"
        wait_for(
            lambda: reader.total() >= len(sent) and set(reader.counts) >= set(sent),
            120,
            "every event scored",
        )
        current.send_signal(signal.SIGTERM)
        assert current.wait(EXIT_BOUND_S) == 0
        reader.total()
        duplicates = {e: c for e, c in reader.counts.items() if c > 1}
        assert set(reader.counts) == set(sent), "a prediction for an event never sent"
        assert not duplicates, f"{len(duplicates)} events scored twice, e.g. {list(duplicates)[:3]}"
        print(
            f"{ITERATIONS} SIGTERMs, {len(sent)} events, exits after "
            f"{min(exits):.1f}-{max(exits):.1f} s (seed {seed}); SIGTERM came {dict(phases)}"
        )
    finally:
        stop_load.set()
        for proc in procs:
            kill_group(proc)
        reader.close()
        for log in logs[-3:]:
            print(f"--- {log.name} (tail) ---\n{log_tail(log)}")
