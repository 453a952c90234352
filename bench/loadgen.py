"""Open-loop load: a paced producer and a prediction reader in one process.

`python -m bench.loadgen CONFIG.json` sends demo payments at a fixed rate whatever the
system does (open loop: a slow system builds a backlog, it does not slow the sender), with
`event_time` = send time. A reader thread consumes the predictions topic (read_committed)
and notes when each prediction became readable. Latency = readable time − send time, taken
with one monotonic clock (the event id carries the event's sequence number, so the send
time is known to the microsecond, finer than the millisecond `event_time`). Events sent in
the warm-up are not counted. Writes the percentiles and a latency histogram as JSON.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer

from streams.workloads.synthetic import CardPayments

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
TEMPLATES = 20_000  # distinct payments cycled through (Zipf cards and merchants kept)


class Reader(threading.Thread):
    """Notes the first time each event's prediction is readable."""

    def __init__(self, config: dict[str, Any], prefix: str, arrivals: np.ndarray) -> None:
        super().__init__(daemon=True)
        self._consumer = Consumer(
            {
                "bootstrap.servers": config["bootstrap"],
                "group.id": f"bench-latency-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 5,
            }
        )
        self._consumer.subscribe([config["predictions_topic"]])
        self._prefix = prefix
        self._cut = len(prefix)
        self.arrivals = arrivals
        self.probe_seen = threading.Event()
        self.received = 0
        self.stop = threading.Event()

    def run(self) -> None:
        clock, prefix, cut, arrivals = time.perf_counter, self._prefix, self._cut, self.arrivals
        consumer = self._consumer
        while not self.stop.is_set():
            # poll() returns as soon as one record is there; consume(n, 0) then takes what
            # else is queued without waiting (consume(n, t) would wait t for n records).
            first = consumer.poll(0.05)
            if first is None:
                continue
            now = clock()
            for msg in [first, *consumer.consume(10_000, 0)]:
                if msg.error() is not None:
                    continue
                event_id = _event_id(msg.value())
                if event_id.startswith(prefix):
                    i = int(event_id[cut:])
                    if arrivals[i] != arrivals[i]:  # NaN: first time seen
                        arrivals[i] = now
                        self.received += 1
                else:
                    self.probe_seen.set()
        consumer.close()


def _event_id(value: bytes) -> str:
    """The event id of a prediction (or passed-through event): it is the first field."""
    if value.startswith(b'{"event_id":"'):
        end = value.index(b'"', 13)
        return value[13:end].decode()
    return str(orjson.loads(value)["event_id"])


def run(config: dict[str, Any]) -> dict[str, Any]:
    rate: float = config["rate"]
    warmup_s: float = config["warmup_s"]
    duration_s: float = config["duration_s"]
    total = int(rate * (warmup_s + duration_s))
    run_id = uuid.uuid4().hex[:6]
    prefix = f"lat-{run_id}-"
    templates = list(CardPayments(TEMPLATES, seed=config.get("seed", 3)).events())
    sent = np.full(total, np.nan)
    arrivals = np.full(total, np.nan)
    reader = Reader(config, prefix, arrivals)
    reader.start()
    producer = Producer(
        {
            "bootstrap.servers": config["bootstrap"],
            "linger.ms": 1,
            "enable.idempotence": True,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    topic = config["events_topic"]
    dumps = orjson.dumps

    def send(event_id: str, template: dict[str, Any]) -> None:
        event = dict(template, event_id=event_id, event_time=int(time.time() * 1000))
        producer.produce(topic, dumps(event), event["card_id"].encode())

    # Until the system answers, probe slowly: start-up and group join are not latency.
    deadline = time.monotonic() + config.get("probe_timeout_s", 120)
    probes = 0
    while not reader.probe_seen.is_set():
        if time.monotonic() > deadline:
            reader.stop.set()
            return {"error": "the system never answered a probe event"}
        send(f"probe-{run_id}-{probes}", templates[probes % TEMPLATES])
        producer.poll(0)
        probes += 1
        reader.probe_seen.wait(0.1)

    clock, sleep = time.perf_counter, time.sleep
    start = clock()
    i = 0
    while i < total:
        due = min(total, int((clock() - start) * rate) + 1)
        while i < due:
            sent[i] = clock()
            send(f"{prefix}{i}", templates[i % TEMPLATES])
            i += 1
        producer.poll(0)
        sleep(0.0005)
    send_seconds = clock() - start
    producer.flush(30)
    first_measured = int(rate * warmup_s)
    drain_deadline = time.monotonic() + config.get("drain_s", 30)
    while reader.received < total and time.monotonic() < drain_deadline:
        time.sleep(0.05)
    reader.stop.set()
    reader.join(10)

    latency = arrivals[first_measured:] - sent[first_measured:]
    answered = latency[~np.isnan(latency)]
    missing = int(latency.size - answered.size)
    result: dict[str, Any] = {
        "rate": rate,
        "sent": total,
        "measured": int(latency.size),
        "answered": int(answered.size),
        "missing": missing,
        "achieved_send_rate": total / send_seconds,
        "warmup_s": warmup_s,
        "duration_s": duration_s,
    }
    if answered.size:
        ms = answered * 1000
        result |= {f"p{p:g}_ms": float(np.percentile(ms, p)) for p in PERCENTILES} | {
            "mean_ms": float(ms.mean()),
            "max_ms": float(ms.max()),
        }
        edges = np.logspace(-1, 5, 121)  # 0.1 ms … 100 s
        counts, _ = np.histogram(ms, bins=edges)
        result["histogram"] = {"edges_ms": edges.tolist(), "counts": counts.tolist()}
    # Open loop: a system that cannot keep up answers late or not at all.
    result["saturated"] = missing > 0.001 * latency.size or (
        answered.size > 0 and result["p99_ms"] > 1000
    )
    return result


def main(path: str) -> None:
    config = json.loads(Path(path).read_text())
    result = run(config)
    Path(config["out_path"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
