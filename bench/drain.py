"""Drain throughput: how fast a system empties a topic pre-filled with N events.

Events per second from the system's first consumed event (reported by the runner) to the
broker's append time of its last prediction (the predictions topic stamps LogAppendTime),
so every system is timed by the same clock at the same two points, start-up excluded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, TopicPartition

from bench.launcher import launch, release_when_assigned
from bench.redis_cpu import cpu_per_event, sample_cpu
from bench.redis_targets import RedisTarget, single_target
from bench.systems import SystemDef
from bench.workload import Footprint, last_append_time, system_spec
from features.redis_connect import connect
from streams.spec import Connections


@dataclass(frozen=True)
class Bench:
    """What every measurement of one suite run shares."""

    connections: Connections
    footprint: Footprint
    token: str
    model_path: Path
    run_root: Path
    max_size: int | None = None
    max_wait_ms: int | None = None
    cluster: RedisTarget | None = None  # for the `@cluster` systems

    def target(self, system: SystemDef) -> RedisTarget:
        """The Redis `system` runs against."""
        if not system.cluster:
            return single_target(self.connections)
        if self.cluster is None:
            raise ValueError(f"{system.name} needs a Redis Cluster: none was started or given")
        return self.cluster

    def connections_for(self, system: SystemDef) -> Connections:
        """The suite's connections, with the Redis of `system`."""
        return Connections(bootstrap=self.connections.bootstrap, redis_url=self.target(system).url)


class TopicCounter:
    """Records in a topic (sum of high watermarks), through one long-lived consumer."""

    def __init__(self, connections: Connections, topic: str) -> None:
        self._consumer = Consumer(connections.kafka_config(**{"group.id": "bench-counter"}))
        meta = self._consumer.list_topics(topic, timeout=10).topics[topic]
        self._partitions = [TopicPartition(topic, p) for p in meta.partitions]

    def count(self) -> int:
        return sum(
            self._consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in self._partitions
        )

    def close(self) -> None:
        self._consumer.close()


def prepare(
    bench: Bench, system: SystemDef, label: str, events_topic: str
) -> tuple[Path, dict[str, Any]]:
    """A run folder with the system's spec file; its topics created, its namespace tracked."""
    run_dir = bench.run_root / label
    run_dir.mkdir(parents=True, exist_ok=True)
    raw = system_spec(
        token=bench.token,
        system=label,
        events_topic=events_topic,
        model_path=bench.model_path,
        max_size=bench.max_size,
        max_wait_ms=bench.max_wait_ms,
    )
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    fp = bench.footprint
    fp.create_topics([raw["topics"]["predictions"]], log_append_time=True)
    fp.create_topics([raw["topics"]["dead_letter"]])
    fp.namespaces[raw["redis_namespace"]] = bench.target(system).url
    fp.topic_prefixes.add(raw["name"] + "-")  # Faust's internal topics start with its app id
    return run_dir, raw


def release(bench: Bench, raw: dict[str, Any]) -> None:
    """Give back a system run's topics and Redis keys (the broker's disk is shared)."""
    fp = bench.footprint
    existing = set(fp.admin().list_topics(timeout=10).topics)
    fp.release_topics([t for t in existing if t.startswith(raw["name"] + "-")])
    fp.topic_prefixes.discard(raw["name"] + "-")
    fp.release_namespace(raw["redis_namespace"])


def measure_drain(
    bench: Bench,
    system: SystemDef,
    *,
    label: str,
    events_topic: str,
    n_events: int,
    stall_s: float = 90.0,
    profile: bool = False,
) -> dict[str, Any]:
    """Drain `events_topic` with `system`; the result row of the drain table."""
    run_dir, raw = prepare(bench, system, label, events_topic)
    predictions = raw["topics"]["predictions"]
    info = connect(bench.target(system).info_url)
    cpu_before = sample_cpu(info)
    running = launch(
        system,
        spec_path=run_dir / "spec.yaml",
        run_dir=run_dir,
        connections=bench.connections_for(system),
        namespace=raw["redis_namespace"],
        profile=profile,
    )
    counter = TopicCounter(bench.connections, predictions)
    error: str | None = None
    count = 0
    try:
        release_when_assigned(running, bench.connections_for(system), raw["name"])
        last_progress, last_count = time.monotonic(), -1
        while True:
            count = counter.count()
            if count >= n_events:
                break
            if count != last_count:
                last_progress, last_count = time.monotonic(), count
            elif time.monotonic() - last_progress > stall_s:
                error = f"stalled at {count} of {n_events} predictions for {stall_s:.0f}s"
                break
            failure = running.failure()
            if failure:
                error = failure
                break
            time.sleep(0.25)
        end = last_append_time(bench.connections, predictions)
    except Exception as exc:
        error, end = f"{type(exc).__name__}: {exc}", None
    finally:
        reports = running.stop()
        counter.close()
        # After the runners stopped, before the namespace is released (UNLINK costs too).
        cpu = cpu_per_event(cpu_before, sample_cpu(info), count)
        info.close()
    starts = [r["first_consume"] for r in reports if r.get("first_consume")]
    first = min(starts) if starts else None
    seconds = end - first if end is not None and first is not None else None
    row: dict[str, Any] = {
        "system": system.name,
        "label": label,
        "workers": system.workers,
        "events": n_events,
        "predictions": count,
        "complete": error is None and count >= n_events,
        "error": error,
        "seconds": seconds,
        "events_per_s": count / seconds if seconds else None,
        "redis": bench.target(system).kind,
        **cpu,
        "reports": reports,
    }
    release(bench, raw)
    return row
