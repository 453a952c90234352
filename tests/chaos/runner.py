"""A chaos run: pipelines in one or both delivery modes on a stack of their own, each with
two supervisors on one group and a learner, events and delayed labels flowing, the faults
of a seeded schedule, then a bounded drain and the checks over the whole history.

Every wait is bounded: a wait that runs out is a hang, reported as a failure with the seed
and the command that replays the run (`python -m tests.chaos ... --seed S`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from inference.adaptation import SnapshotStore
from streams.learner.process import LearnerProcessError
from streams.ops.lag import LagReader
from streams.ops.topics import ensure_topics
from streams.spec import Connections
from streams.stack.local import LocalStack
from tests.chaos.checks import (
    Verdict,
    check_card_features,
    check_delivery,
    check_learner,
    check_logs,
    check_merchant_counts,
)
from tests.chaos.fleet import Learner, Supervisor, stop_all
from tests.chaos.history import History
from tests.chaos.pipelines import MERCHANT_COUNT, MERCHANT_WINDOW_MS, EventFeed, Pipeline
from tests.chaos.schedule import Fault, FaultCounts, Step, make_schedule
from tests.integration.harness import read_json, recompute_features
from tests.integration.test_learner import consumed_to, end_offsets

SNAPSHOT_KEY = "chaos-harness-snapshot-key-0123456789"
START_S = 120.0  # first predictions after the workers start
DETECT_S = 90.0  # a wipe found by the workers (epoch "lost") after events flow again
REBUILD_S = 180.0
LEARNER_S = 120.0  # a (re)started learner answers, and has learned what it was sent


@dataclass(frozen=True)
class ChaosConfig:
    events: int  # per pipeline
    flow_s: float  # the events of each pipeline are produced over this many seconds
    modes: tuple[str, ...]
    seed: int
    workdir: Path
    model: Path
    counts: FaultCounts = field(default_factory=FaultCounts)
    partitions: int = 8
    supervisors: tuple[int, ...] = (2, 1)  # workers of each supervisor on the group
    outage_s: float = 30.0
    drain_s: float = 240.0  # after the last fault and event: every event predicted

    def replay(self) -> str:
        minutes = self.flow_s / 60
        return (
            f"python -m tests.chaos --events {self.events} --minutes {minutes:g} "
            + " ".join(f"--mode {m}" for m in self.modes)
            + f" --seed {self.seed}"
        )


@dataclass
class Report:
    config: ChaosConfig
    schedule: tuple[Step, ...]
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    worker_restarts: int = 0
    learner_restarts: int = 0
    refused_starts: int = 0  # `streamfer run` started while the broker or Redis was away
    hangs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    diagnosis: list[str] = field(default_factory=list)  # what a hang found stuck, and where
    seconds: float = 0.0

    @property
    def failures(self) -> list[str]:
        out = [*self.problems, *(f"hang: {h}" for h in self.hangs)]
        for mode, verdict in self.verdicts.items():
            out.extend(f"{mode}: {p}" for p in verdict.problems)
        return out

    def summary(self) -> str:
        lines = [
            f"chaos run, seed {self.config.seed}, {self.seconds:.0f}s: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))
            + f"; worker restarts {self.worker_restarts}, learner restarts "
            f"{self.learner_restarts}, starts refused (broker/Redis away) {self.refused_starts}, "
            f"hangs {len(self.hangs)}"
        ]
        for mode, v in self.verdicts.items():
            lines.append(
                f"  {mode}: events {v.events}, predicted {v.predicted}, lost {v.lost}, "
                f"duplicated {v.duplicated}, out-of-order keys {v.out_of_order_keys}, "
                f"mismatched features {v.mismatched_features}, merchant windows wrong "
                f"{v.merchant_windows_wrong}, late {v.late}, fenced {v.fenced_lines}"
            )
        failures = self.failures
        if failures:
            lines.append(f"FAILED ({len(failures)}); replay: {self.config.replay()}")
            lines.extend(f"  - {f}" for f in failures)
            lines.extend(self.diagnosis)
        else:
            lines.append("every check passed")
        return "\n".join(lines)


class Hang(Exception):
    """A bounded wait ran out."""


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise Hang(f"{what} (not within {timeout_s:.0f}s)")
        time.sleep(0.2)


@dataclass
class Member:
    """One pipeline with its processes and its history."""

    pipeline: Pipeline
    supervisors: list[Supervisor]
    learner: Learner
    history: History


class ChaosRun:
    def __init__(self, config: ChaosConfig, stack: LocalStack) -> None:
        self.config = config
        self.stack = stack
        status = stack.status()
        assert status.redis_admin_url is not None
        self.conn = Connections(bootstrap=status.bootstrap_servers, redis_url=status.redis_url)
        self.admin_url = status.redis_admin_url
        self.members: list[Member] = []
        self.schedule = make_schedule(
            config.seed,
            config.flow_s,
            config.counts,
            pipelines=len(config.modes),
            supervisors=len(config.supervisors),
            outage_s=config.outage_s,
        )
        self.report = Report(config, self.schedule)
        self.final_status: dict[str, dict[str, Any] | None] = {}  # the learners', at the end
        self.env = {"STREAMFER_SNAPSHOT_KEY": SNAPSHOT_KEY}

    def log(self, message: str) -> None:
        print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> Report:
        started = time.monotonic()
        self.log(f"seed {self.config.seed}; replay: {self.config.replay()}")
        for step in self.schedule:
            self.log(f"scheduled: {step.describe()}")
        try:
            self._start()
            reserve = max(1000, self.config.events // 20)
            pipelines = [m.pipeline for m in self.members]
            self.feed = feed = EventFeed(self.conn, pipelines, self.config.flow_s, reserve)
            feed.start()
            flow_start = time.monotonic()
            for step in self.schedule:
                while time.monotonic() - flow_start < step.at_s:
                    self._watch()
                    time.sleep(0.2)
                # A supervisor that exited since (a start refused during the fault before)
                # is started again first: a fault is aimed at a running fleet.
                self._watch()
                self.log(f"fault: {step.describe()}")
                self._fault(step)
                faults = self.report.faults
                faults[step.fault.value] = faults.get(step.fault.value, 0) + 1
            feed.release()
            self._drain()
            self._stop()
            self._check()
        except (Hang, TimeoutError) as exc:
            self.report.hangs.append(str(exc))
        finally:
            stop_all(
                [s for m in self.members for s in m.supervisors], [m.learner for m in self.members]
            )
            for member in self.members:
                with contextlib.suppress(Exception):
                    member.history.close()
            self.report.seconds = time.monotonic() - started
        return self.report

    def _start(self) -> None:
        workdir = self.config.workdir
        for i, mode in enumerate(self.config.modes):
            unique = f"{mode[:3]}{self.config.seed}{uuid.uuid4().hex[:6]}"
            pipeline = Pipeline.create(
                workdir,
                unique,
                self.config.model,
                mode,
                self.config.partitions,
                self.config.events,
                self.config.seed * 10 + i,
            )
            ensure_topics(self.conn, pipeline.spec)
            labels_topic = pipeline.spec.topics.labels
            assert labels_topic is not None
            topics = pipeline.spec.topics
            history = History(
                self.conn, topics.predictions, topics.partitions, labels_topic, pipeline.labels()
            )
            supervisors = [
                Supervisor(
                    pipeline.spec_file,
                    self.conn,
                    workdir / f"{unique}-supervisor{j}.log",
                    workers,
                    instance_id=f"chaos-host{j}",
                    exactly_once=pipeline.exactly_once,
                    env=self.env,
                )
                for j, workers in enumerate(self.config.supervisors)
            ]
            learner_dir = workdir / f"{unique}-learner"
            learner_dir.mkdir()
            learner = Learner(pipeline.spec_file, self.conn, learner_dir, self.env)
            self.members.append(Member(pipeline, supervisors, learner, history))
        for member in self.members:
            for sup in member.supervisors:
                sup.start()
            member.learner.start()
        for member in self.members:
            assert member.learner.proc is not None
            try:
                member.learner.proc.wait(lambda s: True, LEARNER_S, "the learner's web view")
            except LearnerProcessError as exc:
                raise Hang(str(exc)) from None

    def _watch(self) -> None:
        """A supervisor or learner that exited on its own is a failure; it is started again
        (as systemd or Kubernetes would) so the run goes on."""
        for member in self.members:
            for sup in member.supervisors:
                if not sup.alive() and sup.refused_start():
                    self.report.refused_starts += 1  # said why; a restart policy retries
                    sup.start()
                elif not sup.alive():
                    assert sup.proc is not None
                    self.report.problems.append(
                        f"{member.pipeline.mode}: supervisor {sup.instance_id} exited "
                        f"({sup.proc.returncode}) on its own"
                    )
                    sup.start()
            if not member.learner.alive():
                assert member.learner.proc is not None
                self.report.problems.append(
                    f"{member.pipeline.mode}: the learner exited "
                    f"({member.learner.proc.proc.returncode}) on its own"
                )
                self.report.learner_restarts += 1
                member.learner.start()

    # -- faults -----------------------------------------------------------------------------
    def _fault(self, step: Step) -> None:
        member = self.members[step.pipeline % len(self.members)]
        sup = member.supervisors[step.supervisor % len(member.supervisors)]
        if step.fault is Fault.WORKER_SIGKILL and sup.workers == 1:
            # `streamfer run` without --workers is the worker itself: what restarts it is
            # systemd or Kubernetes, played here by the harness.
            sup.kill()
            sup.start()
            self.report.worker_restarts += 1
        elif step.fault is Fault.WORKER_SIGKILL:
            pids = sup.workers_now()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pids[step.pick % len(pids)], signal.SIGKILL)
        elif step.fault is Fault.WORKER_SIGTERM:
            self._running(sup)
            code = sup.sigterm()
            if code is None:
                raise Hang(f"supervisor {sup.instance_id} did not exit after SIGTERM")
            if code != 0:
                why = f"supervisor {sup.instance_id} exited {code} on SIGTERM"
                self.report.problems.append(why)
            sup.start()
        elif step.fault is Fault.BROKER_RESTART:
            self.stack.stop_kafka()
            self.stack.start_kafka()
        elif step.fault is Fault.BROKER_OUTAGE:
            self.stack.stop_kafka()
            # The outage itself is the fault: it lasts hold_s, whatever the processes do.
            time.sleep(step.hold_s)
            self.stack.start_kafka()
        elif step.fault is Fault.REDIS_RESTART:
            self.stack.stop_redis()
            self.stack.up()
        elif step.fault is Fault.REDIS_WIPE:
            self._redis_wipe()
        elif step.fault is Fault.LEARNER_KILL:
            self._learner_kill(member)

    def _running(self, sup: Supervisor) -> None:
        """Bounded: `sup` running with its workers up; a SIGTERM that lands during the
        imports, before any handler is installed, would test Python's default action.
        A start refused meanwhile is started again, as `_watch` does."""

        def up() -> bool:
            if not sup.alive():
                self._watch()
            return sup.ready()

        wait_until(up, START_S, f"supervisor {sup.instance_id} running")

    def _caught_up(self) -> None:
        """Every event produced so far predicted, every label of those learned."""
        for member in self.members:
            produced = self.feed.produced[self.members.index(member)]
            try:
                wait_until(
                    lambda m=member, n=produced: m.history.distinct() >= n,
                    self.config.drain_s,
                    f"{member.pipeline.mode}: {produced} events predicted",
                )
            except Hang:
                self.report.diagnosis.extend(self._diagnose(member))
                raise
            try:
                wait_until(lambda m=member: m.history.labels_flushed(1), 60, "labels delivered")
            except Hang as exc:
                left = member.history.labels_unacknowledged()
                raise Hang(f"{member.pipeline.mode}: {exc}, {left} unacknowledged") from None
        for member in self.members:
            labels = member.pipeline.spec.topics.labels
            assert labels is not None and member.learner.proc is not None
            try:
                member.learner.proc.wait(
                    consumed_to(end_offsets(self.conn, labels)), LEARNER_S, "labels learned"
                )
            except LearnerProcessError as exc:
                raise Hang(str(exc)) from None

    def _diagnose(self, member: Member) -> list[str]:
        """What a CI log needs to find a stuck pipeline's cause without its files: the
        group's state and lag per partition, then each supervisor's last log lines."""
        spec = member.pipeline.spec
        lines = [f"diagnosis of {member.pipeline.mode} (events {spec.topics.events}):"]
        try:
            snapshot = LagReader(self.conn).snapshot([spec.group], [spec.topics.events])
            state = snapshot.groups.get(spec.group)
            lines.append(f"  group {spec.group}: {state}")
            for tp, committed in sorted(snapshot.committed.get(spec.group, {}).items()):
                end = snapshot.log_end.get(tp)
                lines.append(f"  partition {tp[1]}: committed {committed}, end {end}")
        except Exception as exc:  # a diagnosis never hides the hang it explains
            lines.append(f"  lag not read: {exc!r}")
        seen = member.history.predicted()
        produced = member.pipeline.events[: self.feed.produced[self.members.index(member)]]
        missing = [e["event_id"] for e in produced if e["event_id"] not in seen]
        lines.append(f"  predicted {len(seen)} distinct events; {len(missing)} not: {missing[:5]}")
        # Where the reader stands against each predictions partition's end: a reader behind
        # the end is the harness stuck, not the workers.
        read_to = member.history.read_to()
        try:
            ends = end_offsets(self.conn, spec.topics.predictions)
            lines.append(
                "  predictions read/end: "
                + ", ".join(f"{p}: {read_to.get(p, 0)}/{e}" for p, e in sorted(ends.items()))
            )
        except Exception as exc:
            lines.append(f"  predictions' ends not read: {exc!r}")
        for sup in member.supervisors:
            tail = sup.log.read_text(errors="replace").splitlines()[-25:]
            lines.append(f"  last lines of {sup.log.name}:")
            lines.extend(f"    {line[:300]}" for line in tail)
        return lines

    def _redis_wipe(self) -> None:
        """Redis comes back empty. Its prediction log goes with it, so the labels of what was
        scored before are learned first (a label whose prediction is lost can't be); then
        the workers must find the loss on their next batch and pause, and an operator runs
        `streamfer rebuild` (docs/operations.md), after which they resume by themselves."""
        self.feed.pause()
        try:
            self._caught_up()
            wiped_ms = int(time.time() * 1000)
            self.stack.stop_redis(keep_data=False)
            self.stack.up()
        finally:
            # Only now: an event scored between the catch-up and the wipe would have its
            # prediction log wiped under its label.
            self.feed.resume()
        self.feed.release(200)  # events after the wipe, however far the feed got
        for member in self.members:
            # What the operator sees: the workers' alert (and their paused partitions).
            wait_until(
                lambda m=member: self._state_lost_alerted(m, wiped_ms),
                DETECT_S,
                f"{member.pipeline.mode}: workers finding the wiped state",
            )
        for member in self.members:
            self._rebuild(member)

    def _state_lost_alerted(self, member: Member, since_ms: int) -> bool:
        topic = member.pipeline.spec.topics.alerts
        assert topic is not None
        return any(
            a.get("kind") == "feature_state_lost" and a.get("time_ms", 0) >= since_ms
            for a in read_json(self.conn, topic, timeout_s=10)
        )

    def _rebuild(self, member: Member) -> None:
        env = {
            **os.environ,
            "STREAMFER_BOOTSTRAP": self.conn.bootstrap,
            "STREAMFER_REDIS_URL": self.conn.redis_url,
        }
        log = self.config.workdir / f"{member.pipeline.spec.name}-rebuild.log"
        with log.open("ab") as out:
            command = [sys.executable, "-m", "streams", "rebuild", "-s"]
            proc = subprocess.Popen(
                [*command, str(member.pipeline.spec_file)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            try:
                code = proc.wait(REBUILD_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                raise Hang(f"{member.pipeline.mode}: streamfer rebuild") from None
        if code != 0:
            self.report.problems.append(
                f"{member.pipeline.mode}: streamfer rebuild exited {code}: "
                + log.read_text(errors="replace")[-600:]
            )

    def _learner_kill(self, member: Member) -> None:
        """SIGKILL the learner once it has a snapshot to resume from, and start it again."""
        client = redis.Redis.from_url(self.admin_url)
        store = SnapshotStore(client, member.pipeline.spec.namespace, SNAPSHOT_KEY.encode())
        try:
            wait_until(lambda: store.latest_version() is not None, LEARNER_S, "a snapshot")
        finally:
            client.close()
        member.learner.kill()
        member.learner.start()
        assert member.learner.proc is not None
        try:
            member.learner.proc.wait(lambda s: True, LEARNER_S, "the restarted learner")
        except LearnerProcessError as exc:
            raise Hang(str(exc)) from None

    # -- the end ----------------------------------------------------------------------------
    def _drain(self) -> None:
        wait_until(self.feed.finished, self.config.flow_s * 3 + 300, "every event produced")
        wait_until(lambda: self.feed.flushed(1), 120, "every event delivered")
        if self.feed.failures:
            self.report.problems.append(f"events not delivered: {self.feed.failures[:3]}")
        self._watch()
        self._caught_up()

    def _stop(self) -> None:
        """SIGTERM every supervisor (bounded: a hang fails), then take the learner's last
        status and stop it."""
        for member in self.members:
            for sup in member.supervisors:
                code = sup.sigterm()
                if code is None:
                    self.report.hangs.append(f"supervisor {sup.instance_id} ignored SIGTERM")
                elif code != 0:
                    self.report.problems.append(f"supervisor {sup.instance_id} exited {code}")
                self.report.worker_restarts += sup.log.read_text(errors="replace").count(
                    "restarting in"
                )
        for member in self.members:
            assert member.learner.proc is not None
            self.final_status[member.pipeline.mode] = member.learner.proc.status()
            if member.learner.stop() is None:
                self.report.hangs.append(f"{member.pipeline.mode}: learner ignored SIGTERM")

    def _check(self) -> None:
        for member in self.members:
            pipeline, spec = member.pipeline, member.pipeline.spec
            verdict = Verdict()
            check_delivery(
                verdict, pipeline.by_key(), member.history.seen, exactly_once=pipeline.exactly_once
            )
            served: list[dict[str, Any]] = read_json(self.conn, spec.topics.features, timeout_s=180)
            names = spec.features.names
            card_names = [n for n in names if n != MERCHANT_COUNT]
            expected = recompute_features(self.conn, spec)
            check_card_features(verdict, served, expected, names, card_names)
            events = {e["event_id"]: e for e in pipeline.events}
            check_merchant_counts(verdict, served, events, MERCHANT_COUNT, MERCHANT_WINDOW_MS)
            check_learner(
                verdict, self.final_status.get(pipeline.mode), member.history.labels_produced
            )
            logs = [s.log for s in member.supervisors]
            if member.learner.proc is not None:
                logs.append(member.learner.proc.log_file)
            check_logs(verdict, logs)
            self.report.verdicts[pipeline.mode] = verdict
