"""Served River vs the learner's own, and freshness, through the real stack (issue 14).

    python -m bench.adaptation_freshness --data weather|drift --model lr|hat|arf [--rows N]

One run: the weather CSV (../shared/data/weather.csv) or River's Hyperplane with an abrupt
drift halfway, replayed at `--pace` rows/s with labels one row late into a worker (replica
serving, in this process) and a learner (its own process); the ONNX model is trained on the
first 5% of rows. Prints one JSON line: served River accuracy (recomputed from the
predictions topic), the learner's own predict-then-learn accuracy (its metrics table), and
freshness p50/p99 (label production → first batch scored by a model that learned it).
Needs the local stack (`streamfer up`) in STREAMFER_BOOTSTRAP / STREAMFER_REDIS_URL.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml

from streams.learner.process import LearnerProcess
from streams.learner.report import build_report, read_served, read_table
from streams.learner.served import learned_sequence, served_freshness
from streams.spec import Connections, load_spec
from streams.worker.metrics import WorkerMetrics
from streams.worker.pipeline import Worker
from streams.workloads.replay import replay, replay_rows, train_prefix_model

MODELS: dict[str, list[Any]] = {
    "lr": [
        {"preprocessing.StandardScaler": {}},
        {"linear_model.LogisticRegression": {"optimizer": {"optim.SGD": {"lr": 0.01}}}},
    ],
    "hat": [{"tree.HoeffdingAdaptiveTreeClassifier": {"seed": 1}}],
    "arf": [{"forest.ARFClassifier": {"n_models": 10, "seed": 1}}],
}
WEATHER = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "weather.csv"


class RecordingMetrics(WorkerMetrics):
    """The worker's metrics, keeping each freshness sample too (exact quantiles)."""

    def __init__(self) -> None:
        super().__init__()
        self.ages: list[np.ndarray] = []
        self.behind_max = 0

    def observe_freshness(self, ages_s: np.ndarray, behind: int) -> None:
        super().observe_freshness(ages_s, behind)
        self.ages.append(np.asarray(ages_s))
        self.behind_max = max(self.behind_max, behind)


def read_with_times(conn: Connections, topic: str, timeout_s: float = 60) -> list[Any]:
    """(partition, offset, producer timestamp ms, value) of every record up to the end."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(conn.kafka_config(**{"group.id": f"bench-{uuid.uuid4().hex[:6]}"}))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in parts}
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        done = {p for p, e in ends.items() if e == 0}
        while len(done) < len(parts) and time.monotonic() < deadline:
            for m in consumer.consume(10_000, 0.5):
                if m.error() is None:
                    out.append((m.partition(), m.offset(), m.timestamp()[1], m.value()))
                    if m.offset() + 1 >= ends[m.partition()]:
                        done.add(m.partition())
        return out
    finally:
        consumer.close()


def freshness_from_topics(conn: Connections, spec: Any) -> tuple[np.ndarray, np.ndarray]:
    """Label production (labels topic timestamps) → first prediction whose model learned it
    (predictions' scored_at and `v@learned`), through the examples log's label identities;
    and, per label, the learner's hop of it: label produced → its example appended to the
    log (the example record's timestamp), so the worker's hop is the difference."""
    produced_at = {(p, o): t for p, o, t, _v in read_with_times(conn, spec.topics.labels)}
    by_seq: dict[int, tuple[float, float]] = {}
    for _p, _o, t, v in read_with_times(conn, spec.topics.examples):
        e = orjson.loads(v)
        by_seq.setdefault(int(e["seq"]), (float(produced_at.get(tuple(e["l"]), np.nan)), t))
    seqs = range(max(by_seq, default=-1) + 1)
    produced = np.array([by_seq.get(s, (np.nan, np.nan))[0] for s in seqs])
    appended = np.array([by_seq.get(s, (np.nan, np.nan))[1] for s in seqs])
    scored, learned = [], []
    for _p, _o, _t, v in read_with_times(conn, spec.topics.predictions):
        d = orjson.loads(v)
        seq = learned_sequence(d.get("adaptation_version"))
        if seq is not None:
            scored.append(d["scored_at"])
            learned.append(seq)
    return served_freshness(produced, np.array(scored), np.array(learned)), appended - produced


def quantile_fields(name: str, values: np.ndarray) -> dict[str, float | None]:
    """`<name>_p50_ms`, `<name>_p99_ms` of the finite values (None when there are none)."""
    finite = values[np.isfinite(values)]
    p50, p99 = np.percentile(finite, (50, 99)).tolist() if len(finite) else (None, None)
    return {f"{name}_p50_ms": p50, f"{name}_p99_ms": p99}


def run(
    data: str,
    model: str,
    rows_n: int | None,
    pace: float,
    partitions: int,
    work: Path,
    *,
    worker_wait_ms: int = 5,
    retry_ms: int = 2,
) -> dict[str, Any]:
    conn = Connections.from_env()
    unique = uuid.uuid4().hex[:6]
    raw = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "examples/weather.yaml").read_text()
    )
    raw["name"] = f"fresh-{data}-{model}-{unique}"
    raw["topics"] = {
        k: f"{v}-{unique}" if isinstance(v, str) else v for k, v in raw["topics"].items()
    }
    raw["topics"]["examples"] = f"weather.examples-{unique}"
    raw["topics"]["partitions"] = partitions
    raw["model"]["path"] = str(work / "model.onnx")
    raw["adaptation"]["model"] = MODELS[model]
    raw["adaptation"]["serving"] = "replica"
    # The learner's batching wait is part of freshness: take labels as they come.
    raw["adaptation"]["batch"] = {"max_size": 200, "max_wait": "5ms"}
    raw["adaptation"]["snapshot"] = {"every_labels": 5000, "every": "30s"}
    # A label that arrives before its prediction is logged is retried soon, not in 250 ms.
    raw["adaptation"]["label_retry"] = {"attempts": 12, "backoff": f"{retry_ms}ms"}
    # The worker's batch wait delays the prediction log entry each label must join with.
    raw["batching"]["max_wait"] = f"{worker_wait_ms}ms"
    spec_file = work / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(raw))
    spec = load_spec(spec_file)
    if data == "weather":
        rows = replay_rows(spec, csv_path=WEATHER, label_column="target", rate=pace)
    else:
        rows = replay_rows(spec, drift_rows=rows_n or 9000, rate=pace)
    if rows_n is not None:
        rows = rows[:rows_n]
    train_n = int(len(rows) * 0.05)
    train_prefix_model(rows, spec, fraction=0.05)
    rows = rows[train_n:]
    # train_prefix_model wrote the file: pin nothing (bench), the worker warns once.
    key = secrets.token_hex(16)
    os.environ["STREAMFER_SNAPSHOT_KEY"] = key
    conn = Connections.from_env()
    from streams.ops.topics import ensure_topics

    ensure_topics(conn, spec)
    learner = LearnerProcess(spec_file, conn, work, env={"STREAMFER_SNAPSHOT_KEY": key})
    metrics = RecordingMetrics()
    worker: Worker | None = None
    thread: threading.Thread | None = None
    try:
        learner.wait(lambda s: True, 90, "the learner's web view")
        worker = Worker(spec, conn, metrics=metrics)
        thread = threading.Thread(target=worker.run, kwargs={"idle_exit_s": None}, daemon=True)
        thread.start()
        # Steady state: the replay starts once the worker owns its partitions (a group join
        # takes seconds; labels of events scored after it would be retried, not fresh).
        deadline = time.monotonic() + 60
        while not worker._consumer.assignment() and time.monotonic() < deadline:
            time.sleep(0.1)
        started = time.perf_counter()
        replay(spec, conn, rows, label_delay="1", pace=pace)
        produced_s = time.perf_counter() - started
        n = len(rows)
        learner.wait(lambda s: s["labels_seen"] >= n - 1, 300, "every label learned")
        deadline = time.monotonic() + 60
        replica = worker._adapter.replica  # the bench reads the worker's replica directly
        while (replica is None or replica.applied < n - 1) and time.monotonic() < deadline:
            time.sleep(0.1)
            replica = worker._adapter.replica
    finally:
        if worker is not None:
            worker.stop.set()
        if thread is not None:
            thread.join(120)
        learner.stop()
    report = build_report(
        read_table(conn, spec), read_served(conn, spec), window_ms=spec.adaptation.metrics_window
    )
    ages = np.concatenate(metrics.ages) if metrics.ages else np.empty(0)
    served_ages, learner_hop = freshness_from_topics(conn, spec)
    reflected = served_ages[~np.isnan(served_ages)]
    # steady state: the labels after the first 10 s of the replay (start-up excluded)
    early_n = int(10 * pace)
    steady = served_ages[early_n:]
    steady = steady[~np.isnan(steady)]
    worker_hop = served_ages - learner_hop
    hops = {
        # where the time goes: label produced → example appended (the learner: consume
        # wait, join and its retries, learn) and example appended → first batch scored
        # with it (the worker: examples fetch, applied before the batch, the batch scored)
        **quantile_fields("learner_hop", learner_hop),
        **quantile_fields("worker_hop", worker_hop),
        # the early tail: the first 10 s against the rest
        **quantile_fields("early", served_ages[:early_n]),
        **quantile_fields("early_learner_hop", learner_hop[:early_n]),
        # the first 15 s second by second (total / learner hop p99): where the start-up goes
        "first_seconds_p99_ms": [
            [
                quantile_fields("t", a[int(i * pace) : int((i + 1) * pace)])["t_p99_ms"]
                for i in range(15)
            ]
            for a in (served_ages, learner_hop)
        ],
        "over_100ms_early": int(np.sum(served_ages[:early_n] > 100)),
        "over_100ms_steady": int(np.sum(served_ages[early_n:] > 100)),
    }
    served, own = report["total"]["served"], report["total"]["learner"]
    return {
        "data": data,
        "model": model,
        "rows": len(rows),
        "pace": pace,
        "partitions": partitions,
        "worker_wait_ms": worker_wait_ms,
        "retry_ms": retry_ms,
        "produce_s": round(produced_s, 1),
        "served_river_acc": served["river"].get("accuracy"),
        "served_final_acc": served["final"].get("accuracy"),
        "served_onnx_acc": served["onnx"].get("accuracy"),
        "learner_river_acc": own["river"].get("accuracy"),
        "served_labels": served["labels"],
        "learner_labels": own["labels"],
        "freshness_n": len(ages),
        "freshness_p50_ms": float(np.percentile(ages, 50) * 1000) if len(ages) else None,
        "freshness_p99_ms": float(np.percentile(ages, 99) * 1000) if len(ages) else None,
        "labels_behind_max": metrics.behind_max,
        # from the topics: label produced (its record's timestamp) → first prediction whose
        # model had learned it; the worker's metric above starts at the learner's learn time
        "topics_freshness_n": len(reflected),
        "topics_freshness_p50_ms": float(np.percentile(reflected, 50)) if len(reflected) else None,
        "topics_freshness_p99_ms": float(np.percentile(reflected, 99)) if len(reflected) else None,
        "steady_freshness_p50_ms": float(np.percentile(steady, 50)) if len(steady) else None,
        "steady_freshness_p99_ms": float(np.percentile(steady, 99)) if len(steady) else None,
        **hops,
        "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("weather", "drift"), default="weather")
    parser.add_argument("--model", choices=tuple(MODELS), default="lr")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--pace", type=float, default=300.0)
    parser.add_argument("--partitions", type=int, default=4, help="of each topic")
    # The waits a label joins through (docs/adaptation.md, "where freshness goes").
    parser.add_argument("--worker-wait", type=int, default=5, help="batching.max_wait, ms")
    parser.add_argument("--retry", type=int, default=2, help="label_retry.backoff, ms")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sf-fresh-") as tmp:
        result = run(
            args.data,
            args.model,
            args.rows,
            args.pace,
            args.partitions,
            Path(tmp),
            worker_wait_ms=args.worker_wait,
            retry_ms=args.retry,
        )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
