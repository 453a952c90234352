"""The CI-sized chaos run (issue 11): both delivery modes at once on a stack of their own,
each with two supervisors on one group (2 + 1 workers) and a learner, 50,000 events each,
under the CI fault schedule: 5 worker SIGKILLs, 2 SIGTERMs of a host's workers, a broker
restart, a 30 s broker outage, a Redis restart on its AOF and one without its data, a
learner SIGKILL. Every check over the history must hold, with 0 fenced lines logged.

The seed is printed; STREAMFER_CHAOS_SEED replays another, and
`python -m tests.chaos` runs longer ones (docs/guarantees.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.stack.local import LocalStack
from tests.chaos.runner import ChaosConfig, ChaosRun
from tests.chaos.schedule import FaultCounts
from tests.integration.harness import own_stack

pytestmark = pytest.mark.integration

SEED_ENV = "STREAMFER_CHAOS_SEED"
EVENTS = 50_000
FLOW_S = 80.0


@pytest.fixture(scope="module")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with own_stack(tmp_path_factory.mktemp("chaos") / "home") as stack:
        yield stack


def test_both_modes_hold_every_guarantee_under_the_ci_fault_schedule(
    chaos_stack: LocalStack, model_file: Path, tmp_path: Path
) -> None:
    counts = FaultCounts()
    config = ChaosConfig(
        events=EVENTS,
        flow_s=FLOW_S,
        modes=("exactly_once", "at_least_once"),
        seed=int(os.environ.get(SEED_ENV, "11")),
        workdir=tmp_path,
        model=model_file,
        counts=counts,
    )
    report = ChaosRun(config, chaos_stack).run()
    print(report.summary())
    assert not report.failures, report.summary()
    assert report.faults == {
        "worker_sigkill": counts.worker_sigkill,
        "worker_sigterm": counts.worker_sigterm,
        "broker_restart": 1,
        "broker_outage": 1,
        "redis_restart": 1,
        "redis_wipe": 1,
        "learner_kill": 1,
    }
    assert counts.worker_sigkill >= 5 and config.outage_s >= 30
    for verdict in report.verdicts.values():
        assert verdict.events == EVENTS and verdict.fenced_lines == 0
