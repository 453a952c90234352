"""The fault schedule of a chaos run: which fault, when, and whom it hits.

Pure: the same seed and sizes give the same schedule, so a failing run replays with its
printed seed. Faults run one after the other (the runner starts a step at its time or when
the step before it ended, whichever is later), which keeps each fault's effect readable in
the history while events keep flowing through all of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from enum import StrEnum


class Fault(StrEnum):
    WORKER_SIGKILL = "worker_sigkill"  # one worker process dies; its supervisor restarts it
    # SIGTERM to one supervisor, which forwards it to its workers: each finishes its batch,
    # commits and leaves the group; the supervisor is started again (a host's restart).
    WORKER_SIGTERM = "worker_sigterm"
    BROKER_RESTART = "broker_restart"  # the broker stops and starts again at once
    BROKER_OUTAGE = "broker_outage"  # the broker is away for `hold_s`
    REDIS_RESTART = "redis_restart"  # redis-server restarts on its AOF
    REDIS_WIPE = "redis_wipe"  # redis-server restarts without its data
    LEARNER_KILL = "learner_kill"  # the learner is SIGKILLed and started again


STACK_FAULTS = frozenset(
    {Fault.BROKER_RESTART, Fault.BROKER_OUTAGE, Fault.REDIS_RESTART, Fault.REDIS_WIPE}
)


@dataclass(frozen=True)
class FaultCounts:
    """How many of each fault one run gets (the CI run's numbers are the defaults)."""

    worker_sigkill: int = 5
    worker_sigterm: int = 2
    broker_restart: int = 1
    broker_outage: int = 1
    redis_restart: int = 1
    redis_wipe: int = 1
    learner_kill: int = 1

    @classmethod
    def for_minutes(cls, minutes: float) -> FaultCounts:
        """A long run's faults: the CI set per 5 minutes of flow, and never fewer than it."""
        scale = max(1.0, minutes / 5.0)
        base = cls()
        return cls(**{f.name: round(getattr(base, f.name) * scale) for f in fields(cls)})

    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))


@dataclass(frozen=True)
class Step:
    """One fault. `pipeline`, `supervisor` and `pick` choose the target of worker and
    learner faults (`pick` indexes the supervisor's live workers, modulo their number);
    stack faults hit every pipeline. `hold_s` is how long an outage lasts."""

    at_s: float
    fault: Fault
    pipeline: int = 0
    supervisor: int = 0
    pick: int = 0
    hold_s: float = 0.0

    def describe(self) -> str:
        if self.fault in STACK_FAULTS:
            hold = f" for {self.hold_s:.0f}s" if self.hold_s else ""
            return f"t+{self.at_s:5.1f}s {self.fault.value}{hold}"
        if self.fault is Fault.LEARNER_KILL:
            return f"t+{self.at_s:5.1f}s {self.fault.value} pipeline {self.pipeline}"
        return (
            f"t+{self.at_s:5.1f}s {self.fault.value} pipeline {self.pipeline} "
            f"supervisor {self.supervisor} worker #{self.pick}"
        )


def make_schedule(
    seed: int,
    flow_s: float,
    counts: FaultCounts,
    *,
    pipelines: int,
    supervisors: int,
    outage_s: float = 30.0,
) -> tuple[Step, ...]:
    """`counts` faults at random moments inside the flow (after its first tenth, so every
    pipeline has history, and before its last fifth, so the drain sees every fault's end)."""
    rng = random.Random(seed)
    kinds = [Fault(f.name) for f in fields(counts) for _ in range(getattr(counts, f.name))]
    rng.shuffle(kinds)
    times = sorted(rng.uniform(0.1 * flow_s, 0.8 * flow_s) for _ in kinds)
    return tuple(
        Step(
            at_s=round(at, 1),
            fault=kind,
            pipeline=rng.randrange(pipelines),
            supervisor=rng.randrange(supervisors),
            pick=rng.randrange(1 << 16),
            hold_s=outage_s if kind is Fault.BROKER_OUTAGE else 0.0,
        )
        for at, kind in zip(times, kinds, strict=True)
    )
