"""A shadow candidate is scored beside the active model: its scores reach the prediction log
under `shadow:<version>`, never the served scores."""

from __future__ import annotations

import numpy as np
import pytest

from features.backends import open_store
from inference.adaptation import Adapter
from inference.onnx_model import OnnxModel
from streams.events.codec import encode_predictions
from streams.worker.scoring import SHADOW_PREFIX, Scorer, ScoringModel
from tests.unit.streams.worker.test_scoring import (
    END_MS,
    NAMES,
    SPEC,
    MemoryPredictionLog,
    OneModel,
    decode,
    events,
    mlp,  # noqa: F401  (the fixture)
)


class Mirrored:
    """A candidate that disagrees with the active model: 1 - its score."""

    def __init__(self, model: ScoringModel, version: str) -> None:
        self._model, self.name, self.version = model, model.name, version
        self.runs = 0

    def predict(self, features: np.ndarray) -> np.ndarray:
        self.runs += 1
        return 1.0 - self._model.predict(features)


class Shadow:
    def __init__(self, model: ScoringModel | None) -> None:
        self.model = model

    def current(self) -> ScoringModel | None:
        return self.model


def shadow_scorer(model: ScoringModel, log: MemoryPredictionLog, shadow: Shadow) -> Scorer:
    return Scorer(
        threshold=SPEC.model.threshold,
        store=open_store(SPEC.features, "memory://", "shadow"),
        models=OneModel(model),
        adapter=Adapter(SPEC.adaptation, None, NAMES, alert=lambda _alert: None),
        log=log,
        clock=lambda: END_MS / 1000,
        shadow=shadow,
    )


def test_shadow_scores_go_to_the_log_only(mlp: OnnxModel) -> None:  # noqa: F811
    evs = events(200)
    candidate = Mirrored(mlp, "9")
    log = MemoryPredictionLog()
    result = shadow_scorer(mlp, log, Shadow(candidate))(decode(evs))

    assert candidate.runs == 1  # one more run per batch
    served = mlp.predict(result.scored.features)
    np.testing.assert_allclose(result.scored.scores, served)
    for i, e in enumerate(evs):
        scores = log.entries[e["event_id"]]["scores"]
        assert scores[f"{SHADOW_PREFIX}9"] == pytest.approx(1.0 - served[i])
        assert scores["onnx"] == pytest.approx(served[i])
    published = b"".join(encode_predictions(result.events, result.scored))
    assert b"shadow" not in published


def test_without_a_shadow_nothing_more_is_logged(mlp: OnnxModel) -> None:  # noqa: F811
    evs = events(50)
    log = MemoryPredictionLog()
    shadow_scorer(mlp, log, Shadow(None))(decode(evs))
    assert all(set(entry["scores"]) == {"onnx", "final"} for entry in log.entries.values())
