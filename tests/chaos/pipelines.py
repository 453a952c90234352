"""One pipeline of a chaos run: its spec (the integration tests' card features plus a
merchant count that spans partitions, delayed labels, a learner), its events and labels,
and the event feed that produces them at a steady rate, pausable for a Redis wipe."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from streams.spec import Connections, PipelineSpec, parse_spec
from streams.workloads.producing import checked_producer
from streams.workloads.synthetic import CardPayments
from tests.integration.harness import spec_dict

MERCHANT_COUNT = "merchant_count_1h"
MERCHANT_WINDOW_MS = 3_600_000
# Tumbling (window = bucket): its counts inside one window are 1..n whatever the order.
MERCHANT_AGG = {
    "name": MERCHANT_COUNT,
    "entity": "merchant_id",
    "agg": "count",
    "window": "1h",
    "bucket": "1h",
}
ADAPTATION = {
    "mode": "stack",
    "min_labels": 200,
    "model": [
        {"preprocessing.StandardScaler": {}},
        {"linear_model.LogisticRegression": {"optimizer": {"optim.SGD": {"lr": 0.05}}}},
    ],
    "snapshot": {"every_labels": 500, "every": "1s"},
    # Labels follow their predictions, so the log is there; the retries cover a Redis restart.
    "label_retry": {"attempts": 40, "backoff": "250ms"},
}


def chaos_spec(unique: str, model: Path, mode: str, partitions: int) -> dict[str, Any]:
    raw = spec_dict(unique, {"path": str(model)}, partitions=partitions)
    features = raw["features"]
    raw["features"] = {**features, "aggregations": [*features["aggregations"], MERCHANT_AGG]}
    raw["topics"] = {**raw["topics"], "labels": f"lab-{unique}", "alerts": f"alerts-{unique}"}
    raw["delivery"] = {"mode": mode}
    raw["adaptation"] = ADAPTATION
    return raw


@dataclass
class Pipeline:
    """A pipeline's spec and the events it is fed, with what the checks need of them."""

    mode: str
    spec: PipelineSpec
    spec_file: Path
    events: list[dict[str, Any]]

    @classmethod
    def create(
        cls, workdir: Path, unique: str, model: Path, mode: str, partitions: int, n: int, seed: int
    ) -> Pipeline:
        raw = chaos_spec(unique, model, mode, partitions)
        spec_file = workdir / f"{unique}.yaml"
        spec_file.write_text(yaml.safe_dump(raw))
        # Few merchants: their windows hold many events from every partition.
        payments = CardPayments(n, seed=seed, run_id=unique, n_cards=3000, n_merchants=300)
        return cls(mode, parse_spec(raw), spec_file, list(payments.events()))

    @property
    def exactly_once(self) -> bool:
        return self.mode == "exactly_once"

    def by_key(self) -> dict[str, list[str]]:
        """Event ids per key (card) in produced order."""
        out: dict[str, list[str]] = defaultdict(list)
        for e in self.events:
            out[e["card_id"]].append(e["event_id"])
        return out

    def labels(self) -> dict[str, int]:
        """Each event's label (a fixed rule of the event; what it is does not matter here)."""
        return {e["event_id"]: int(e["amount"] > 100.0) for e in self.events}


class EventFeed:
    """Produces every pipeline's events spread evenly over `flow_s` seconds of unpaused
    time (one idempotent producer: no duplicate, per-key order kept through outages).

    The last `reserve` events of each wait for `release()`: however long the faults take,
    events are still to come after each (a wipe is found only by a batch that follows it)."""

    def __init__(
        self, conn: Connections, pipelines: list[Pipeline], flow_s: float, reserve: int
    ) -> None:
        self._pipelines = pipelines
        self._reserve = reserve
        self._cap = [max(0, len(p.events) - reserve) for p in pipelines]
        self._rate = [cap / flow_s for cap in self._cap]
        self.produced = [0] * len(pipelines)
        self._running = threading.Event()
        self._done = threading.Event()
        self._producer, self.failures = checked_producer(
            conn, **{"linger.ms": 20, "queue.buffering.max.messages": 2_000_000}
        )
        self._thread = threading.Thread(target=self._run, name="chaos-feed", daemon=True)

    def start(self) -> None:
        self._running.set()
        self._thread.start()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def finished(self) -> bool:
        return self._done.is_set()

    def release(self, n: int | None = None) -> None:
        """Let `n` more events of each pipeline's reserve through (None: all of them)."""
        for i, pipeline in enumerate(self._pipelines):
            total = len(pipeline.events)
            self._cap[i] = total if n is None else min(total, self._cap[i] + n)

    def _run(self) -> None:
        active = 0.0
        last = time.monotonic()
        dumps = orjson.dumps
        while not all(
            n == len(p.events) for n, p in zip(self.produced, self._pipelines, strict=True)
        ):
            time.sleep(0.1)
            now = time.monotonic()
            if not self._running.is_set():
                last = now
                continue
            active += now - last
            last = now
            for i, pipeline in enumerate(self._pipelines):
                paced = int(self._rate[i] * active)
                due = min(self._cap[i], max(paced, self.produced[i]))
                topic = pipeline.spec.topics.events
                for event in pipeline.events[self.produced[i] : due]:
                    while True:
                        try:
                            self._producer.produce(topic, dumps(event), event["card_id"].encode())
                            break
                        except BufferError:
                            self._producer.poll(0.05)
                self.produced[i] = max(self.produced[i], due)
            self._producer.poll(0)
        self._done.set()

    def flushed(self, timeout_s: float) -> bool:
        return self._producer.flush(timeout_s) == 0

    def join(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()
