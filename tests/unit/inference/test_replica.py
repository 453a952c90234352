"""River replicas: the examples log applied in order gives the learner's model in every
worker, however the log is chunked into polls; a republished sequence number is not
applied twice; a replica started from a checkpoint catches up to the same model."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np
import pytest

from inference.adaptation.adapter import Adapter
from inference.adaptation.examples import LearnedExamples, decode_examples, encode_examples
from inference.adaptation.learner import OnlineLearner
from inference.adaptation.replica import RiverReplica
from inference.adaptation.snapshots import Snapshot
from inference.adaptation.spec import AdaptationSpec

NAMES = ("a", "b", "c")
MODELS = {
    "logistic": None,  # the default: StandardScaler + LogisticRegression
    "hat": ["tree.HoeffdingAdaptiveTreeClassifier"],
    "arf": [{"forest.ARFClassifier": {"n_models": 3, "seed": 7}}],
}


def spec(model: list[Any] | None) -> AdaptationSpec:
    return AdaptationSpec.model_validate(
        {"mode": "stack", "min_labels": 0, "serving": "replica", "model": model}
    )


def stream(n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(NAMES)))
    onnx = rng.uniform(size=n)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(float)
    return x, onnx, y


def learned_log(learner: OnlineLearner, n: int, batch: int) -> list[bytes]:
    """What the learner publishes: its batches of examples, encoded in learn order."""
    x, onnx, y = stream(n)
    out: list[bytes] = []
    for s in range(0, n, batch):
        e = slice(s, s + batch)
        before = learner.labels_seen
        learner.learn(x[e], onnx[e], y[e])
        k = len(y[e])
        out += encode_examples(
            LearnedExamples(
                before,
                np.column_stack([x[e], onnx[e]]),
                y[e],
                np.arange(k, dtype=np.int64),
                np.full(k, 1000, dtype=np.int64),
                tuple((0, before + i) for i in range(k)),
            )
        )
    return out


def probe(model: Any) -> list[float]:
    x, onnx, _y = stream(50, seed=11)
    return [
        float(
            model.predict_proba_one(dict(zip((*NAMES, "onnx_score"), r, strict=True))).get(True, 0)
        )
        for r in np.column_stack([x, onnx]).tolist()
    ]


@pytest.mark.parametrize("name", list(MODELS))
def test_replicas_equal_the_learner_however_the_log_is_polled(name: str) -> None:
    s = spec(MODELS[name])
    learner = OnlineLearner(s, NAMES)
    initial = copy.deepcopy(learner.model)  # the first checkpoint, before any label
    log = learned_log(learner, 400, batch=37)
    width = len(NAMES) + 1
    replicas = [
        RiverReplica(pickle.loads(pickle.dumps(initial)), s.task, learner.columns, 0)
        for _ in range(2)
    ]
    for replica, chunk in zip(replicas, (1, 113), strict=True):
        for i in range(0, len(log), chunk):
            replica.apply(decode_examples(log[i : i + chunk], width))
    assert [r.applied for r in replicas] == [learner.labels_seen] * 2
    assert probe(replicas[0].model) == probe(replicas[1].model) == probe(learner.model)


def test_a_republished_sequence_is_applied_once() -> None:
    s = spec(None)
    learner = OnlineLearner(s, NAMES)
    fresh = OnlineLearner(s, NAMES, model=copy.deepcopy(learner.model))
    log = learned_log(learner, 120, batch=20)
    width = len(NAMES) + 1
    replica = RiverReplica(fresh.model, s.task, learner.columns, 0)
    first = replica.apply(decode_examples(log[:70], width))
    # A learner restarted from its checkpoint at 40 republishes 40.. before going on.
    again = replica.apply(decode_examples(log[40:], width))
    assert (first.learned, again.learned, again.skipped) == (70, 120 - 70, 70 - 40)
    assert replica.applied == 120 and probe(replica.model) == probe(learner.model)


def test_a_gap_is_reported_and_learning_goes_on() -> None:
    s = spec(None)
    learner = OnlineLearner(s, NAMES)
    log = learned_log(learner, 30, batch=30)
    replica = RiverReplica(OnlineLearner(s, NAMES).model, s.task, learner.columns, 0)
    applied = replica.apply(decode_examples(log[:10] + log[15:], len(NAMES) + 1))
    assert (applied.learned, applied.gap, replica.applied) == (25, 5, 30)


class OneSnapshot:
    """A store holding one checkpoint: the learner's model at `seq`, log offset `offset`."""

    def __init__(self, model: Any, seq: int, offset: int) -> None:
        meta = {"labels_seen": seq, "columns": [*NAMES, "onnx_score"], "examples_offset": offset}
        self.snapshot = Snapshot(1, meta, pickle.loads(pickle.dumps(model)))

    def latest_version(self) -> int:
        return 1

    def load(self, version: int, **_: Any) -> Snapshot:
        return self.snapshot


class ListLog:
    """The examples log as a list: a tail from an offset, returning what is past it."""

    def __init__(self, records: list[bytes]) -> None:
        self.records = records
        self.opened_at: list[int | None] = []

    def open(self, offset: int | None) -> Any:
        self.opened_at.append(offset)
        log = self

        class Tail:
            position = offset or 0

            def poll(self) -> list[bytes]:
                out = log.records[self.position :]
                self.position = len(log.records)
                return out

            def behind(self) -> int:
                return len(log.records) - self.position

            def close(self) -> None:
                pass

        return Tail()


def test_a_worker_catches_up_from_a_checkpoint_and_reports_freshness() -> None:
    s = spec(None)
    learner = OnlineLearner(s, NAMES)
    log = learned_log(learner, 60, batch=10)
    mid = OnlineLearner(s, NAMES)  # the checkpoint: the model after the first 30 examples
    x, onnx, y = stream(60)
    mid.learn(x[:30], onnx[:30], y[:30])
    records = ListLog(log[:45])
    fresh: list[tuple[np.ndarray, int]] = []
    now_ms = 1000 + 250
    adapter = Adapter(
        s,
        OneSnapshot(mid.model, 30, 30),  # type: ignore[arg-type]
        NAMES,
        lambda alert: None,
        examples=records.open,
        on_fresh=lambda ages, behind: fresh.append((ages, behind)),
        wall_ms=lambda: now_ms,
    )
    adapter.poll()
    assert records.opened_at == [30]
    records.records += log[45:]
    adapter.poll()
    replica = adapter.replica
    assert replica is not None and replica.applied == 60
    assert probe(replica.model) == probe(learner.model)
    scored = adapter.score(x[:5], onnx[:5])
    assert scored.version == "1@60"
    ages = np.concatenate([a for a, _b in fresh])
    assert len(ages) == 60 - 30 and np.allclose(ages, (now_ms - 1000) / 1000)
    adapter.score(x[:5], onnx[:5])  # nothing new learned: no freshness sample
    assert len(fresh) == 1


def test_examples_that_arrive_while_a_batch_is_collected_score_that_batch() -> None:
    s = spec(None)
    learner = OnlineLearner(s, NAMES)
    log = learned_log(learner, 40, batch=10)
    start = OnlineLearner(s, NAMES)
    records = ListLog([])
    adapter = Adapter(
        s,
        OneSnapshot(start.model, 0, 0),  # type: ignore[arg-type]
        NAMES,
        lambda alert: None,
        examples=records.open,
    )
    adapter.poll()  # between batches: nothing in the log yet
    records.records += log  # examples stored while the worker waited for its next batch
    x, onnx, _y = stream(5)
    scored = adapter.score(x, onnx)  # no poll in between
    assert scored.version == f"1@{len(log)}"
    replica = adapter.replica
    assert replica is not None and probe(replica.model) == probe(learner.model)
