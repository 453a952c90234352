"""The scoring core scores a decoded batch with no Kafka and no Redis: the `memory://` feature
store, the demo MLP exported to ONNX, and an in-memory prediction log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import redis

from features.backends import open_store
from features.store import FeatureBatch, FeatureResult, FeatureStore
from inference.adaptation import Adapter
from inference.model_ref import ModelRef
from inference.onnx_model import OnnxModel
from inference.spec import ModelSpec
from streams.events.codec import DecodedBatch, decode_batch
from streams.events.schema import EventValidator
from streams.spec import PipelineSpec, load_spec
from streams.worker.scoring import Scorer, ScoringModel
from streams.workloads.demo_model import export_onnx, train_mlp
from streams.workloads.synthetic import CardPayments

SPEC = load_spec(Path(__file__).parents[4] / "examples" / "card-payments.yaml")
NAMES = SPEC.features.names
END_MS = 1_750_000_000_000


@dataclass
class Msg:
    """A consumed Kafka message, as the decoder reads it."""

    _value: bytes | None
    _key: bytes | None
    _partition: int
    _offset: int

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def topic(self) -> str:
        return SPEC.topics.events

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


class MemoryPredictionLog:
    """A real in-memory implementation of the prediction-log port: entries by event id."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        self.writes = 0

    def write(
        self,
        event_ids: Sequence[str],
        features: np.ndarray,
        scores: dict[str, np.ndarray],
        model_version: str,
        adaptation_version: str | None,
        event_time_ms: Sequence[int] | np.ndarray,
    ) -> None:
        self.writes += 1
        for i, event_id in enumerate(event_ids):
            self.entries[event_id] = {
                "features": features[i].tolist(),
                "scores": {name: float(column[i]) for name, column in scores.items()},
                "model_version": model_version,
                "event_time_ms": int(event_time_ms[i]),
            }


class OneModel:
    """The model source of a worker whose model never changes."""

    def __init__(self, model: ScoringModel) -> None:
        self._model = model

    def current(self) -> ScoringModel:
        return self._model


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    """The demo MLP trained on random features, exported to ONNX, loaded on CPU."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, len(NAMES)))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.float64)
    path = export_onnx(
        train_mlp(X, y, epochs=20),
        tmp_path_factory.mktemp("model") / "mlp.onnx",
        feature_names=NAMES,
        model_name=SPEC.model.name,
    )
    spec = ModelSpec.model_validate(
        {
            "name": SPEC.model.name,
            "path": path,
            "inputs": {"features": list(NAMES)},
            "providers": "cpu",
            "warmup_batches": 1,
        }
    )
    return OnnxModel.load(ModelRef.for_file(SPEC.model.name, path), spec, NAMES)


def events(n: int, seed: int = 1) -> list[dict[str, Any]]:
    return list(CardPayments(n, seed=seed, n_cards=40, n_merchants=30, end_ms=END_MS).events())


def decode(evs: list[dict[str, Any]], partitions: int = 1) -> DecodedBatch:
    messages = [
        Msg(orjson.dumps(e), str(e["card_id"]).encode(), i % partitions, i)
        for i, e in enumerate(evs)
    ]
    return decode_batch(
        messages, EventValidator(SPEC.event), max_bytes=SPEC.event.max_bytes, now_ms=END_MS
    )


def scorer(
    model: ScoringModel,
    log: MemoryPredictionLog,
    *,
    store: FeatureStore | None = None,
    spec: PipelineSpec = SPEC,
    threshold: float | None = None,
) -> Scorer:
    return Scorer(
        threshold=spec.model.threshold if threshold is None else threshold,
        store=store or open_store(spec.features, "memory://", "test"),
        models=OneModel(model),
        adapter=Adapter(spec.adaptation, None, NAMES, alert=lambda _alert: None),
        log=log,
        clock=lambda: END_MS / 1000 + 1.5,
    )


def reference_features(evs: list[dict[str, Any]]) -> np.ndarray:
    """The features of `evs` in order, from a fresh reference store (defaults applied)."""
    records = [{"currency": "EUR", "channel": "pos", **e} for e in evs]
    store = open_store(SPEC.features, "memory://", "reference")
    return store.update_and_read(FeatureBatch(records, [e["event_time"] for e in records])).values


def test_a_batch_is_scored_end_to_end_through_the_pure_core(mlp: OnnxModel) -> None:
    evs = events(300)
    expected_features = reference_features(evs)
    expected_scores = mlp.predict(expected_features)
    at = float(np.sort(expected_scores)[len(evs) // 2])  # a threshold one event scores exactly
    log = MemoryPredictionLog()

    result = scorer(mlp, log, threshold=at)(decode(evs))

    np.testing.assert_allclose(result.scored.features, expected_features, rtol=1e-12)
    np.testing.assert_allclose(result.scored.scores, expected_scores)
    assert result.scored.decisions.tolist() == (expected_scores >= at).tolist()
    assert result.scored.decisions[expected_scores == at].all()  # at the threshold: positive
    assert result.scored.scored_at_ms == END_MS + 1500  # the injected clock
    assert log.writes == 1 and sorted(log.entries) == sorted(e["event_id"] for e in evs)
    first = log.entries[evs[0]["event_id"]]
    assert first["features"] == expected_features[0].tolist()
    assert first["scores"]["final"] == pytest.approx(expected_scores[0])
    assert first["model_version"] == mlp.version
    assert not result.events.dead_letters


class RefusingStore:
    """The memory store, refusing (as the feature script does) any batch with a bad amount."""

    def __init__(self, bad_amount: float) -> None:
        self._store = open_store(SPEC.features, "memory://", "poison")
        self._bad = bad_amount
        self.names = self._store.names
        self.calls = 0

    def update_and_read(self, batch: FeatureBatch) -> FeatureResult:
        self.calls += 1
        if any(r["amount"] == self._bad for r in batch.records):
            raise redis.ResponseError("user_script:1: amount is not a number")
        return self._store.update_and_read(batch)

    def close(self) -> None:
        self._store.close()


def test_a_poison_event_is_isolated_into_a_feature_error_dead_letter(mlp: OnnxModel) -> None:
    evs = events(20)
    poison = evs[7]
    poison["amount"] = 123_456.78  # no other event has it
    store = RefusingStore(poison["amount"])
    log = MemoryPredictionLog()

    result = scorer(mlp, log, store=store)(decode(evs))

    good = [e for e in evs if e["amount"] != poison["amount"]]
    assert result.events.ids.tolist() == [e["event_id"] for e in good]
    assert store.calls == 1 + len(evs)  # the batch, then one event at a time
    (dead,) = result.events.dead_letters
    assert (dead.reason, dead.offset, dead.value) == ("feature_error", 7, orjson.dumps(poison))
    assert "amount is not a number" in dead.message
    np.testing.assert_allclose(result.scored.features, reference_features(good), rtol=1e-12)
    assert sorted(log.entries) == sorted(e["event_id"] for e in good)


class NanForLargeAmounts:
    """A model that gives no finite score when `amount_log` is above a limit."""

    name, version = "nan-model", "1"

    def __init__(self, limit: float) -> None:
        self._limit = limit
        self._column = NAMES.index("amount_log")

    def predict(self, features: np.ndarray) -> np.ndarray:
        column = features[:, self._column]
        return np.where(column > self._limit, np.nan, 1 / (1 + np.exp(-column)))


def test_a_non_finite_score_becomes_a_score_not_finite_dead_letter() -> None:
    evs = events(50)
    limit = float(np.quantile([np.log1p(e["amount"]) for e in evs], 0.8))
    bad = [e for e in evs if np.log1p(e["amount"]) > limit]
    log = MemoryPredictionLog()

    result = scorer(NanForLargeAmounts(limit), log)(decode(evs))

    assert bad and len(result.events) == len(evs) - len(bad)
    assert [d.reason for d in result.events.dead_letters] == ["score_not_finite"] * len(bad)
    assert [d.value for d in result.events.dead_letters] == [orjson.dumps(e) for e in bad]
    assert "the score is nan" in result.events.dead_letters[0].message
    assert np.isfinite(result.scored.scores).all()
    assert len(result.scored.features) == len(result.scored.scores) == len(result.events)
    assert set(log.entries) == {e["event_id"] for e in evs} - {e["event_id"] for e in bad}


def test_events_of_revoked_partitions_are_dropped_by_the_mask(mlp: OnnxModel) -> None:
    evs = events(40)
    decoded = decode(evs, partitions=4)
    owned = {(SPEC.topics.events, 1), (SPEC.topics.events, 3)}
    log = MemoryPredictionLog()

    result = scorer(mlp, log)(decoded.keep(decoded.in_partitions(owned)))

    kept = [e for i, e in enumerate(evs) if i % 4 in (1, 3)]
    assert result.events.ids.tolist() == [e["event_id"] for e in kept]
    assert set(result.events.partitions.tolist()) == {1, 3}
    assert sorted(log.entries) == sorted(e["event_id"] for e in kept)


def test_a_batch_of_only_dead_letters_is_scored_as_empty(mlp: OnnxModel) -> None:
    log = MemoryPredictionLog()
    batch = decode_batch(
        [Msg(b"{not json", None, 0, 0)],
        EventValidator(SPEC.event),
        max_bytes=SPEC.event.max_bytes,
        now_ms=END_MS,
    )
    result = scorer(mlp, log)(batch)
    assert len(result.events) == 0 and result.scored.features.shape == (0, len(NAMES))
    assert [d.reason for d in result.events.dead_letters] == ["decode_error"]
    assert log.writes == 0


def test_the_steps_apart_score_and_log_as_the_whole_call(mlp: OnnxModel) -> None:
    """features → score → write_log (as the worker runs them, on threads) equals __call__,
    and nothing is logged before write_log."""
    evs = events(200)
    whole_log, steps_log = MemoryPredictionLog(), MemoryPredictionLog()
    whole = scorer(mlp, whole_log)(decode(evs, partitions=2))

    steps = scorer(mlp, steps_log)
    decoded = decode(evs, partitions=2)
    featurized = steps.features(decoded, steps.feature_batch(decoded))
    result = steps.score(featurized)
    assert steps_log.writes == 0
    steps.write_log(result)

    np.testing.assert_array_equal(result.scored.features, whole.scored.features)
    np.testing.assert_array_equal(result.scored.scores, whole.scored.scores)
    assert steps_log.writes == whole_log.writes == 1
    assert steps_log.entries == whole_log.entries


def test_featurized_rows_of_revoked_partitions_are_dropped_with_their_features(
    mlp: OnnxModel,
) -> None:
    evs = events(40)
    steps = scorer(mlp, MemoryPredictionLog())
    decoded = decode(evs, partitions=4)
    featurized = steps.features(decoded, steps.feature_batch(decoded))
    owned = featurized.events.in_partitions({(SPEC.topics.events, 0), (SPEC.topics.events, 2)})

    kept = featurized.keep(owned)

    assert kept.events.ids.tolist() == [e["event_id"] for i, e in enumerate(evs) if i % 4 in (0, 2)]
    np.testing.assert_array_equal(kept.features.values, featurized.features.values[owned])
    assert len(kept.features.late) == len(kept.features.replayed) == len(kept.events)
