"""The adaptation spec, River models from names (no eval), signing, and the scoring rules."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from inference.adaptation.learner import OnlineLearner
from inference.adaptation.modes import AdaptationMode, AdaptationTask
from inference.adaptation.river_build import (
    RiverSpecError,
    build_river_component,
    build_river_model,
    resolve_river,
)
from inference.adaptation.scoring import final_scores, positive_proba, river_predict, supports_many
from inference.adaptation.snapshots import SnapshotKeyMissing, sign, snapshot_key, verify
from inference.adaptation.spec import AdaptationSpec
from streams.spec import SpecError, parse_spec
from tests.integration.harness import spec_dict

NAMES = ("a", "b", "c")


def adaptation(**settings: Any) -> AdaptationSpec:
    """The `adaptation:` section as YAML would give it (strings and nested mappings)."""
    return AdaptationSpec.model_validate(settings)


# -- building from names -------------------------------------------------------------------
def test_pipeline_from_steps_with_nested_components() -> None:
    model = build_river_model(
        [
            {"preprocessing.StandardScaler": {}},
            {"linear_model.LogisticRegression": {"optimizer": {"optim.SGD": {"lr": 0.05}}}},
        ]
    )
    from river import compose, linear_model, optim

    assert isinstance(model, compose.Pipeline)
    last = model["LogisticRegression"]
    assert isinstance(last, linear_model.LogisticRegression)
    assert isinstance(last.optimizer, optim.SGD)
    assert last.optimizer.learning_rate == 0.05


def test_a_bare_name_is_a_component_without_arguments() -> None:
    from river import tree

    assert isinstance(
        build_river_model(["tree.HoeffdingTreeClassifier"]), tree.HoeffdingTreeClassifier
    )


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("linear_model.LogisticRegresion", "did you mean LogisticRegression"),
        ("nosuchmodule.Thing", "has no public member 'nosuchmodule'"),
        ("linear_model._base", "is not a River component name"),
        ("compose.pipeline.itertools.chain", "leads outside the river package"),
        ("utils.math.dot", "is not a class of the river package"),
        ("__import__('os').system", "is not a River component name"),
        ("os.system", "has no public member 'os'"),
        ("LogisticRegression", "is not a River component name"),
    ],
)
def test_names_resolve_only_to_river_classes(name: str, says: str) -> None:
    with pytest.raises(RiverSpecError) as caught:
        resolve_river(name)
    assert says in str(caught.value)


def test_bad_keyword_argument_lists_what_is_accepted() -> None:
    with pytest.raises(RiverSpecError) as caught:
        build_river_component({"linear_model.LogisticRegression": {"lrr": 1}}, "model[0]")
    message = str(caught.value)
    assert "lrr" in message and "optimizer" in message and "model[0]" in message


def test_the_last_step_must_fit_the_task_and_only_it_may_be_an_estimator() -> None:
    with pytest.raises(RiverSpecError, match="not a River classifier"):
        build_river_model(["linear_model.LinearRegression"], "classification")
    with pytest.raises(RiverSpecError, match="not a River regressor"):
        build_river_model(["linear_model.LogisticRegression"], "regression")
    with pytest.raises(RiverSpecError, match="not a transformer"):
        build_river_model(["linear_model.LogisticRegression", "linear_model.LogisticRegression"])


def test_spec_errors_name_the_adaptation_field() -> None:
    raw = spec_dict("x", {"path": "/nowhere.onnx"})
    raw["adaptation"] = {"mode": "stack", "model": [{"linear_model.Nope": {}}]}
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    assert "adaptation" in str(caught.value) and "linear_model.Nope" in str(caught.value)


def test_spec_defaults_and_checks() -> None:
    off = AdaptationSpec()
    assert off.mode is AdaptationMode.OFF
    stack = adaptation(mode="stack")
    assert stack.steps == ("preprocessing.StandardScaler", "linear_model.LogisticRegression")
    assert adaptation(mode="stack", task="regression").challenger_metric == "mae"
    with pytest.raises(ValueError, match="does not fit task"):
        adaptation(mode="challenger", challenger={"metric": "mae"})
    with pytest.raises(ValueError, match="drift detector"):
        adaptation(mode="stack", drift={"detector": {"linear_model.LogisticRegression": {}}})


# -- signing -------------------------------------------------------------------------------
def test_sign_and_verify_catch_any_change() -> None:
    key, meta, payload = b"k" * 32, b'{"v":1}', b"model-bytes"
    sig = sign(key, meta, payload)
    assert verify(key, meta, payload, sig)
    assert verify(key, meta, payload, sig.encode())
    assert not verify(key, meta, payload + b"x", sig)
    assert not verify(key, b'{"v":2}', payload, sig)
    assert not verify(b"other-key-other-key-other-key!!!", meta, payload, sig)
    assert not verify(key, meta, payload, None)
    # the length prefix stops moving bytes between metadata and payload
    assert not verify(key, meta + b"m", payload[1:], sign(key, meta, payload))


def test_snapshot_key_is_required_with_a_clear_message() -> None:
    for missing in (None, ""):
        with pytest.raises(SnapshotKeyMissing, match="STREAMFER_SNAPSHOT_KEY is not set") as caught:
            snapshot_key(missing)
        assert "openssl rand" in str(caught.value) and "adaptation.mode: off" in str(caught.value)
    with pytest.raises(SnapshotKeyMissing, match="shorter than 16"):
        snapshot_key("s" * 15)
    assert snapshot_key("s" * 16) == b"s" * 16


# -- scoring rules -------------------------------------------------------------------------
def test_final_output_rules() -> None:
    onnx, river = np.array([0.2, 0.8]), np.array([0.6, 0.4])
    stack = adaptation(mode="stack", min_labels=100)
    np.testing.assert_array_equal(
        final_scores(stack, onnx, river, labels_seen=99, promoted=False), onnx
    )
    np.testing.assert_array_equal(
        final_scores(stack, onnx, river, labels_seen=100, promoted=False), river
    )
    per_row = final_scores(stack, onnx, river, labels_seen=np.array([99, 100]), promoted=False)
    np.testing.assert_array_equal(per_row, [0.2, 0.4])
    challenger = adaptation(mode="challenger")
    np.testing.assert_array_equal(
        final_scores(challenger, onnx, river, labels_seen=0, promoted=False), onnx
    )
    np.testing.assert_array_equal(
        final_scores(challenger, onnx, river, labels_seen=0, promoted=True), river
    )


def _trained(steps: list[object]) -> tuple[OnlineLearner, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(float)
    spec = adaptation(mode="stack", model=tuple(steps))
    learner = OnlineLearner(spec, NAMES)
    learner.learn(X, np.full(300, 0.5), y)
    return learner, np.column_stack([X[:50], np.full(50, 0.5)])


def test_batch_scoring_equals_one_by_one() -> None:
    learner, matrix = _trained(["preprocessing.StandardScaler", "linear_model.LogisticRegression"])
    assert supports_many(learner.model)
    task = AdaptationTask.CLASSIFICATION
    batched = river_predict(learner.model, task, learner.columns, matrix, batched=True)
    single = river_predict(learner.model, task, learner.columns, matrix, batched=False)
    np.testing.assert_allclose(batched, single, rtol=1e-12)
    assert ((batched > 0) & (batched < 1)).all()


def test_models_without_batch_methods_score_row_by_row() -> None:
    learner, matrix = _trained(["tree.HoeffdingTreeClassifier"])
    assert not supports_many(learner.model)
    scores = river_predict(learner.model, AdaptationTask.CLASSIFICATION, learner.columns, matrix)
    assert scores.shape == (50,)


def test_online_learner_is_predict_then_learn() -> None:
    spec = adaptation(mode="stack", min_labels=2)
    learner = OnlineLearner(spec, NAMES)
    twin = OnlineLearner(spec, NAMES)
    X = np.array([[1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0]])
    onnx = np.array([0.9, 0.1, 0.7])
    y = np.array([1.0, 0.0, 1.0])
    outcome = learner.learn(X, onnx, y)
    for i in range(3):  # the same, one label at a time: each predicted before it is learned
        x = dict(zip((*NAMES, "onnx_score"), [*X[i], onnx[i]], strict=True))
        assert outcome.river[i] == pytest.approx(positive_proba(twin.model.predict_proba_one(x)))
        twin.model.learn_one(x, bool(y[i]))
    assert learner.labels_seen == 3 and outcome.labels_seen_before == 0
    np.testing.assert_array_equal(outcome.final[:2], onnx[:2])  # before min_labels: ONNX
    assert outcome.final[2] == outcome.river[2]


def test_challenger_promotes_and_demotes_with_margin() -> None:
    spec = adaptation(mode="challenger", challenger={"window": 20, "margin": 0.1})
    learner = OnlineLearner(spec, NAMES)
    comparison = learner.state.challenger
    assert comparison is not None
    y = np.array([1.0, 0.0] * 10)
    comparison.add(y, 1 - y, y)  # ONNX always wrong, River always right
    assert comparison.decide() is True
    comparison.add(y, y, 1 - y)  # and the other way round
    assert comparison.decide() is False
