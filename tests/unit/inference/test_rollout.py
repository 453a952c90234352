"""publish (checked against the spec), promote, rollback and shadow in the registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inference.registry import ModelRegistry, RegistryError
from inference.rollout import ModelRollout, PublishRefused
from streams.worker.prediction_log import LoggedPrediction
from streams.workloads.demo_model import export_onnx, train_mlp
from tests.unit.inference.test_registry import NAMES, registry_spec


def mlp(tmp_path: Path, names: list[str], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, len(names)))
    y = (X[:, 0] > 0).astype(np.float64)
    weights = train_mlp(X, y, hidden=4, epochs=5, seed=seed)
    return export_onnx(
        weights, tmp_path / f"m-{len(names)}-{seed}.onnx", feature_names=names, model_name="fraud"
    )


def test_publish_records_metrics_and_stays_inactive(tmp_path):
    rollout = ModelRollout(ModelRegistry(tmp_path / "reg"))
    spec = registry_spec(tmp_path / "reg")
    metrics = {"roc_auc": 0.91, "f1": 0.5}
    ref = rollout.publish("fraud", mlp(tmp_path, NAMES), spec, NAMES, metrics=metrics)
    manifest = rollout.registry.manifest("fraud", ref.version)
    assert manifest["metrics"] == metrics
    assert manifest["input_columns"] == NAMES
    assert manifest["published_by"]
    assert rollout.registry.active_version("fraud") is None


def test_publish_refuses_a_model_of_other_width_naming_it(tmp_path):
    rollout = ModelRollout(ModelRegistry(tmp_path / "reg"))
    spec = registry_spec(tmp_path / "reg")
    wrong = mlp(tmp_path, [*NAMES, "extra"])
    with pytest.raises(PublishRefused) as caught:
        rollout.publish("fraud", wrong, spec, NAMES)
    message = str(caught.value)
    assert "'features'" in message and str(len(NAMES)) in message and "4" in message
    assert rollout.registry.versions("fraud") == []


def test_publish_at_a_taken_version_is_refused(tmp_path):
    rollout = ModelRollout(ModelRegistry(tmp_path / "reg"))
    spec = registry_spec(tmp_path / "reg")
    rollout.publish("fraud", mlp(tmp_path, NAMES), spec, NAMES, version="7")
    with pytest.raises(RegistryError, match="already exists"):
        rollout.publish("fraud", mlp(tmp_path, NAMES, 1), spec, NAMES, version="7")
    assert rollout.registry.versions("fraud") == ["7"]


def test_promote_then_rollback_walks_the_history(tmp_path):
    rollout = ModelRollout(ModelRegistry(tmp_path / "reg"))
    spec = registry_spec(tmp_path / "reg")
    versions = [
        rollout.publish("fraud", mlp(tmp_path, NAMES, s), spec, NAMES).version for s in range(3)
    ]
    for v in versions:
        rollout.promote("fraud", v)
    assert rollout.registry.active_version("fraud") == versions[-1]
    assert rollout.rollback("fraud").version == versions[-2]
    assert rollout.rollback("fraud").version == versions[0]
    with pytest.raises(RegistryError, match="no earlier promoted version"):
        rollout.rollback("fraud")
    history = json.loads((tmp_path / "reg" / "fraud" / "HISTORY").read_text())
    assert history == versions[:1]


def test_shadow_is_set_cleared_and_ends_at_its_promotion(tmp_path):
    rollout = ModelRollout(ModelRegistry(tmp_path / "reg"))
    spec = registry_spec(tmp_path / "reg")
    one, two = (
        rollout.publish("fraud", mlp(tmp_path, NAMES, s), spec, NAMES).version for s in (0, 1)
    )
    rollout.promote("fraud", one)
    rollout.shadow("fraud", two)
    assert rollout.shadow_version("fraud") == two
    rollout.clear_shadow("fraud")
    assert rollout.shadow_version("fraud") is None
    rollout.shadow("fraud", two)
    rollout.promote("fraud", two)
    assert rollout.shadow_version("fraud") is None
    with pytest.raises(RegistryError):
        rollout.shadow("fraud", "9")


def test_the_cli_publishes_promotes_shadows_and_rolls_back(tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from streams.cli.app import app
    from streams.spec import parse_spec
    from tests.integration.harness import spec_dict

    monkeypatch.delenv("STREAMFER_MODEL_KEY", raising=False)
    root = tmp_path / "reg"
    raw = spec_dict("cli", {"registry": str(root), "providers": "cpu"})
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(raw))
    names = list(parse_spec(raw).features.names)
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"roc_auc": 0.875}))
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(app, ["model", *args])
        assert result.exit_code == 0, result.output
        return result.output

    refused = runner.invoke(
        app, ["model", "publish", str(mlp(tmp_path, NAMES)), "-s", str(spec_file)]
    )
    assert refused.exit_code == 2
    assert f"maps {len(names)}" in refused.output and "takes 3 columns" in refused.output
    cli("publish", str(mlp(tmp_path, names, 0)), "-s", str(spec_file), "--metrics", str(metrics))
    reg = ["--registry", str(root)]
    cli("promote", "card-fraud", "1", *reg)
    cli("publish", str(mlp(tmp_path, names, 1)), "-s", str(spec_file), "--shadow")
    listed = cli("list", *reg)
    assert "roc_auc=0.875" in listed
    rollout = ModelRollout(ModelRegistry(root))
    assert rollout.shadow_version("card-fraud") == "2"
    cli("promote", "card-fraud", "2", *reg)
    assert rollout.registry.active_version("card-fraud") == "2"
    assert "v1 is active again" in cli("rollback", "card-fraud", *reg)
    assert rollout.registry.active_version("card-fraud") == "1"
    cli("shadow", "card-fraud", "off", *reg)
    assert rollout.shadow_version("card-fraud") is None


def test_evaluate_promotes_the_shadow_that_beats_the_active_model(tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    import streams.learner.report as report
    from streams.cli.app import app
    from streams.spec import parse_spec
    from tests.integration.harness import spec_dict
    from tests.unit.streams.learner.test_label_processor import FakeLog, label, processor
    from tests.unit.streams.learner.test_label_processor import make_spec as learner_spec

    monkeypatch.delenv("STREAMFER_MODEL_KEY", raising=False)
    root = tmp_path / "reg"
    raw = spec_dict("ev", {"registry": str(root), "providers": "cpu"})
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(raw))
    names = list(parse_spec(raw).features.names)
    rollout = ModelRollout(ModelRegistry(root))
    spec = parse_spec(raw).model
    one, two = (rollout.publish("card-fraud", mlp(tmp_path, names, s), spec, names) for s in (0, 1))
    rollout.promote("card-fraud", one.version)
    rollout.shadow("card-fraud", two.version)

    log = FakeLog()  # the learner's table: the shadow right on 60 labels, the active wrong
    for i in range(60):
        y = float(i % 2)
        scores = {"onnx": 1.0 - y, f"shadow:{two.version}": y}
        log.entries[str(i)] = LoggedPrediction(str(i), {"a": 0.0}, scores, "1", None, i)
    learner = processor(learner_spec(), log)
    learner.consume([label(i, float(i % 2)) for i in range(60)])
    monkeypatch.setattr(report, "read_table", lambda *a, **k: learner.table.items())

    args = ["model", "evaluate", "-s", str(spec_file), "--metric", "accuracy"]
    waiting = CliRunner().invoke(app, [*args, "--min-labels", "100", "--promote"])
    assert waiting.exit_code == 0, waiting.output
    assert "waits for 100" in waiting.output
    assert rollout.registry.active_version("card-fraud") == one.version
    promoted = CliRunner().invoke(app, [*args, "--min-labels", "50", "--promote"])
    assert promoted.exit_code == 0, promoted.output
    assert "1.0000 vs active 0.0000 over 60 labels" in promoted.output
    assert rollout.registry.active_version("card-fraud") == two.version


def test_the_shadow_model_follows_the_pointer_between_batches(tmp_path):
    from inference.shadow import ShadowModel
    from tests.unit.inference.test_registry import FakeClock

    registry = ModelRegistry(tmp_path / "reg")
    rollout = ModelRollout(registry)
    spec = registry_spec(tmp_path / "reg")
    one, two = (rollout.publish("fraud", mlp(tmp_path, NAMES, s), spec, NAMES) for s in (0, 1))
    rollout.promote("fraud", one.version)
    clock = FakeClock()
    shadow = ShadowModel(spec, NAMES, registry, clock=clock)

    def settled() -> str | None:
        shadow.poll()  # reads the pointer and starts a load
        shadow.close()  # waits for it
        shadow.poll()  # installs it
        model = shadow.current()
        return None if model is None else model.version

    assert settled() is None
    rollout.shadow("fraud", two.version)
    assert settled() is None  # not re-read before swap_poll
    clock.advance(spec.swap_poll_s)
    assert settled() == two.version
    rows = np.random.default_rng(0).normal(size=(5, len(NAMES)))
    assert shadow.current().predict(rows).shape == (5,)
    rollout.clear_shadow("fraud")
    clock.advance(spec.swap_poll_s)
    assert settled() is None
