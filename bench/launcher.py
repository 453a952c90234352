"""Starting, watching and stopping the runner processes of one system run."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from bench.peers import environment, python_for
from bench.systems import SystemDef
from bench.systems.common import RunnerConfig
from bench.workload import REPO
from features.redis_connect import connect
from streams.spec import Connections


@dataclass
class Running:
    """The processes of one system run, their report files and logs."""

    system: SystemDef
    procs: list[subprocess.Popen[bytes]]
    reports: list[Path]
    logs: list[Path]
    go_key: str | None
    stopped: bool = field(default=False)

    def failure(self) -> str | None:
        """The log tail of a runner that exited on its own (they only stop on SIGTERM)."""
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                return f"{self.system.name} runner exited with {proc.returncode}:\n{tail}"
        return None

    def stop(self, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """SIGTERM every runner (each finishes its batch and commits), then read reports."""
        if not self.stopped:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            for proc in self.procs:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            self.stopped = True
        reports = []
        for path in self.reports:
            try:
                reports.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                reports.append({})
        return reports


def launch(
    system: SystemDef,
    *,
    spec_path: Path,
    run_dir: Path,
    connections: Connections,
    namespace: str,
    profile: bool = False,
) -> Running:
    """Start the system's runner process(es) on the spec; several workers wait for `go`."""
    python = python_for(system.venv)
    # Under sf:*, the only keys the stack's `streamfer` ACL user may touch; released with
    # the namespace.
    go_key = f"sf:{namespace}:bench-go" if system.workers > 1 else None
    procs, reports, logs = [], [], []
    for i in range(system.workers):
        config = RunnerConfig(
            system=system.name,
            bootstrap=connections.bootstrap,
            redis_url=connections.redis_url,
            spec_path=str(spec_path),
            report_path=str(run_dir / f"report-{i}.json"),
            worker_id=i,
            go_key=go_key,
            profile_path=str(run_dir / f"profile-{i}") if profile else None,
            patch=system.patch,
        )
        config_path = run_dir / f"runner-{i}.json"
        config.dump(config_path)
        log = run_dir / f"runner-{i}.log"
        with open(log, "wb") as out:
            procs.append(
                subprocess.Popen(
                    [str(python), "-m", system.module, str(config_path)],
                    cwd=REPO,
                    env=environment(),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        reports.append(Path(config.report_path))
        logs.append(log)
    return Running(system, procs, reports, logs, go_key)


def release_when_assigned(
    running: Running, connections: Connections, group: str, timeout_s: float = 120.0
) -> None:
    """Once every worker holds partitions in a stable group, tell them all to start."""
    if running.go_key is None:
        return
    admin = AdminClient(connections.kafka_config())
    deadline = time.monotonic() + timeout_s
    while True:
        failure = running.failure()
        if failure:
            raise RuntimeError(failure)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{running.system.name}: workers did not all get partitions")
        try:
            description = admin.describe_consumer_groups([group])[group].result()
        except Exception:  # the group does not exist until the first join
            description = None
        if (
            description is not None
            and description.state == ConsumerGroupState.STABLE
            and len(description.members) == running.system.workers
            and all(m.assignment.topic_partitions for m in description.members)
        ):
            break
        time.sleep(0.2)
    client = connect(connections.redis_url)
    try:
        client.set(running.go_key, 1, ex=3600)
    finally:
        client.close()
