"""Models bound to what the operator approved: `model.sha256` pins the file (start and hot
swap), registry manifests are HMAC-signed with the model key, so a file rewritten together
with its manifest is refused, and an unpinned plain file is served with one WARNING."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from inference.model_ref import ModelIntegrityError, file_sha256
from inference.registry import ModelRegistry, ModelSwitch
from inference.signed_manifest import SIGNATURE_FIELD, ManifestSignatureError, ModelKeyError
from inference.spec import ModelSpec
from streams.workloads.demo_model import export_onnx, train_mlp

NAMES = ["x0", "x1", "x2"]
KEY = "m" * 32


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def build(folder: Path, seed: int) -> Path:
    """A tiny trained MLP, different for each seed."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] - X[:, 2] > 0).astype(np.float64)
    weights = train_mlp(X, y, hidden=4, epochs=5 + seed, seed=seed)
    return export_onnx(weights, folder / f"m{seed}.onnx", feature_names=NAMES, model_name="fraud")


def spec(**fields: Any) -> ModelSpec:
    values: dict[str, Any] = {
        "name": "fraud",
        "inputs": {"features": NAMES},
        "providers": "cpu",
        "warmup_batches": 1,
        "warmup_batch_size": 4,
        "swap_poll": "1s",
        **fields,
    }
    return ModelSpec.model_validate(values)


def swap(switch: ModelSwitch, clock: FakeClock) -> Any:
    """One due registry check and, if a load started, its outcome."""
    clock.now += 1.0
    first = switch.poll()
    if first is not None:
        return first
    assert switch.wait(timeout=30)
    return switch.poll()


def rewrite_with_manifest(root: Path, version: str, replacement: Path) -> str:
    """What an attacker with write access to the registry folder does: the file and the
    manifest's sha256 rewritten together (the old signature left as it was)."""
    folder = root / "fraud" / version
    shutil.copy(replacement, folder / "model.onnx")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sha256"] = file_sha256(folder / "model.onnx")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return str(manifest["sha256"])


# -- model.sha256 ---------------------------------------------------------------------------


def test_sha256_must_be_a_digest() -> None:
    with pytest.raises(ValidationError, match="64 hex digits"):
        spec(path="/m.onnx", sha256="abc")
    assert spec(path="/m.onnx", sha256="AB" * 32).sha256 == "ab" * 32


def test_a_pinned_file_loads_and_a_changed_one_is_refused_naming_both_digests(
    tmp_path: Path,
) -> None:
    served = build(tmp_path, 1)
    pin = file_sha256(served)
    assert ModelSwitch.open(spec(path=served, sha256=pin), NAMES).current().sha256 == pin

    shutil.copy(build(tmp_path, 2), served)
    with pytest.raises(ModelIntegrityError) as refused:
        ModelSwitch.open(spec(path=served, sha256=pin), NAMES)
    assert pin in str(refused.value) and file_sha256(served) in str(refused.value)


def test_a_pinned_registry_model_refuses_a_hot_swap_to_another_file(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    registry = ModelRegistry(root, key=KEY)
    v1 = registry.register("fraud", build(tmp_path, 1))
    clock = FakeClock()
    switch = ModelSwitch.open(spec(registry=root, sha256=v1.sha256), NAMES, key=KEY, clock=clock)
    v2 = registry.register("fraud", build(tmp_path, 2))  # signed and activated
    event = swap(switch, clock)
    assert event is not None and not event.ok and event.target == "2"
    assert v1.sha256 in event.error and v2.sha256 in event.error
    assert switch.current().version == "1"


def test_an_unpinned_file_is_served_with_its_sha256_and_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    served = build(tmp_path, 1)
    with caplog.at_level(logging.INFO):
        ModelSwitch.open(spec(path=served), NAMES)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "not pinned" in warnings[0] and file_sha256(served) in warnings[0]

    caplog.clear()
    with caplog.at_level(logging.INFO):
        ModelSwitch.open(spec(path=served, sha256=file_sha256(served)), NAMES)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- signed manifests -------------------------------------------------------------------------


def test_with_the_key_manifests_are_signed_and_a_worker_loads_them_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "reg"
    ref = ModelRegistry(root, key=KEY).register("fraud", build(tmp_path, 1))
    manifest = json.loads((ref.path.parent / "manifest.json").read_text())
    assert isinstance(manifest[SIGNATURE_FIELD], str)
    with caplog.at_level(logging.INFO):
        switch = ModelSwitch.open(spec(registry=root), NAMES, key=KEY)
    assert switch.current().version == "1"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_file_rewritten_with_its_manifest_is_refused_at_start(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    ModelRegistry(root, key=KEY).register("fraud", build(tmp_path, 1))
    rewrite_with_manifest(root, "1", build(tmp_path, 2))
    with pytest.raises(ManifestSignatureError, match="manifest signature does not match"):
        ModelSwitch.open(spec(registry=root), NAMES, key=KEY)
    with pytest.raises(ManifestSignatureError, match="STREAMFER_MODEL_KEY"):
        ModelRegistry(root, key=KEY).activate("fraud", "1")


def test_a_file_rewritten_with_its_manifest_is_refused_at_hot_swap(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    registry = ModelRegistry(root, key=KEY)
    registry.register("fraud", build(tmp_path, 1))
    clock = FakeClock()
    switch = ModelSwitch.open(spec(registry=root), NAMES, key=KEY, clock=clock)
    registry.register("fraud", build(tmp_path, 2), activate=False)
    rewrite_with_manifest(root, "2", build(tmp_path, 3))
    (root / "fraud" / "ACTIVE").write_text("2\n")  # what `activate` would write
    event = swap(switch, clock)
    assert event is not None and not event.ok and event.target == "2"
    assert "manifest signature does not match" in event.error
    assert switch.current().version == "1" and switch.failed_swaps == 1
    assert swap(switch, clock) is None  # reported once, not on every poll


def test_a_worker_with_the_key_refuses_unsigned_and_other_keys_manifests(
    tmp_path: Path,
) -> None:
    unsigned, other = tmp_path / "unsigned", tmp_path / "other"
    ModelRegistry(unsigned).register("fraud", build(tmp_path, 1))
    ModelRegistry(other, key="o" * 32).register("fraud", build(tmp_path, 1))
    with pytest.raises(ManifestSignatureError, match="not signed"):
        ModelSwitch.open(spec(registry=unsigned), NAMES, key=KEY)
    with pytest.raises(ManifestSignatureError, match="does not match"):
        ModelSwitch.open(spec(registry=other), NAMES, key=KEY)


def test_a_signed_manifest_copied_to_another_version_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    registry = ModelRegistry(root, key=KEY)
    registry.register("fraud", build(tmp_path, 1))
    registry.register("fraud", build(tmp_path, 2))
    for name in ("model.onnx", "manifest.json"):  # approved v1 replayed as v2
        shutil.copy(root / "fraud/1" / name, root / "fraud/2" / name)
    with pytest.raises(ManifestSignatureError, match="manifest is for fraud v1"):
        registry.resolve("fraud", "2")


def test_without_a_key_manifests_are_unsigned_and_unverified_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "reg"
    with caplog.at_level(logging.WARNING):
        ModelRegistry(root).register("fraud", build(tmp_path, 1))
    assert "UNSIGNED" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        switch = ModelSwitch.open(spec(registry=root), NAMES)
    assert switch.current().version == "1"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "not verified" in warnings[0]


def test_a_short_model_key_is_refused() -> None:
    with pytest.raises(ModelKeyError, match="shorter than 16"):
        ModelRegistry("/nowhere", key="short")


# -- `streamfer model register | activate` ---------------------------------------------------


def test_the_cli_signs_with_the_key_and_warns_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from typer.testing import CliRunner

    from streams.cli.app import app

    root, source = tmp_path / "reg", build(tmp_path, 1)
    runner = CliRunner()
    monkeypatch.delenv("STREAMFER_MODEL_KEY", raising=False)
    plain = runner.invoke(app, ["model", "register", "fraud", str(source), "--registry", str(root)])
    assert plain.exit_code == 0, plain.output  # allowed …
    assert "UNSIGNED" in caplog.text  # … and said (the CLI shows WARNING log lines)
    caplog.clear()

    monkeypatch.setenv("STREAMFER_MODEL_KEY", KEY)
    refused = runner.invoke(app, ["model", "activate", "fraud", "1", "--registry", str(root)])
    assert refused.exit_code == 2 and "not signed" in refused.output
    signed = runner.invoke(
        app, ["model", "register", "fraud", str(source), "--registry", str(root)]
    )
    assert signed.exit_code == 0 and "UNSIGNED" not in caplog.text
    assert ModelRegistry(root, key=KEY).active("fraud").version == "2"
    listed = runner.invoke(app, ["model", "list", "--registry", str(root)])
    assert "REFUSED" in listed.output and "verified" in listed.output
