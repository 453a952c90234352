"""ModelRegistry (versions, sha256, ACTIVE) and ModelSwitch (hot swap between batches)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.model_ref import ModelIntegrityError, ModelRef
from inference.onnx_model import OnnxModel
from inference.registry import ModelRegistry, ModelSwitch, RegistryError
from inference.spec import ModelSpec
from streams.workloads.demo_model import MlpWeights, export_onnx, train_mlp

NAMES = ["x0", "x1", "x2"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(300, 3))
    return X, (X[:, 0] - X[:, 2] > 0).astype(np.float64)


def build(tmp_path: Path, seed: int) -> tuple[Path, MlpWeights]:
    """A tiny trained MLP, different for each seed."""
    X, y = data()
    weights = train_mlp(X, y, hidden=4, epochs=10 + seed, seed=seed)
    path = export_onnx(
        weights, tmp_path / f"src-{seed}.onnx", feature_names=NAMES, model_name="fraud"
    )
    return path, weights


def registry_spec(root: Path, **fields: Any) -> ModelSpec:
    values: dict[str, Any] = {
        "name": "fraud",
        "registry": root,
        "inputs": {"features": NAMES},
        "providers": "cpu",
        "warmup_batches": 1,
        "warmup_batch_size": 4,
        "swap_poll": "1s",
    }
    values.update(fields)
    return ModelSpec.model_validate(values)


def tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


# -- registry -------------------------------------------------------------------------------


def test_register_copies_the_file_records_sha256_and_activates(tmp_path: Path) -> None:
    source, _ = build(tmp_path, 1)
    registry = ModelRegistry(tmp_path / "reg")
    ref = registry.register("fraud", source, source="unit test")
    assert ref == ModelRef("fraud", "1", tmp_path / "reg/fraud/1/model.onnx", ref.sha256)
    assert ref.path.read_bytes() == source.read_bytes()
    manifest = json.loads((tmp_path / "reg/fraud/1/manifest.json").read_text())
    assert manifest["sha256"] == ref.sha256 and len(ref.sha256) == 64
    assert (manifest["name"], manifest["version"], manifest["source"]) == (
        "fraud",
        "1",
        "unit test",
    )
    assert manifest["created_at"]
    assert manifest["signature"]["inputs"] == [
        {"name": "features", "type": "float", "shape": ["batch", 3]}
    ]
    assert manifest["signature"]["outputs"] == [
        {"name": "score", "type": "float", "shape": ["batch"]}
    ]
    assert json.loads(manifest["metadata"]["feature_names"]) == NAMES
    assert (tmp_path / "reg/fraud/ACTIVE").read_text().strip() == "1"
    assert registry.active("fraud") == ref
    assert registry.names() == ["fraud"]
    # No temp files are left behind by the atomic writes.
    assert sorted(p.name for p in (tmp_path / "reg/fraud").iterdir()) == ["1", "ACTIVE"]


def test_versions_increase_and_resolve_selects(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    v1 = registry.register("fraud", build(tmp_path, 1)[0])
    v2 = registry.register("fraud", build(tmp_path, 2)[0], activate=False)
    assert registry.versions("fraud") == ["1", "2"]
    assert registry.resolve("fraud") == v2
    assert registry.resolve("fraud", "latest") == v2
    assert registry.resolve("fraud", "active") == v1
    assert registry.resolve("fraud", "1") == v1
    registry.activate("fraud", 2)
    assert registry.active("fraud") == v2


def test_interrupted_registration_is_ignored_and_its_number_not_reused(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    registry.register("fraud", build(tmp_path, 1)[0])
    (tmp_path / "reg/fraud/2").mkdir()  # a crash before the manifest was written
    assert registry.versions("fraud") == ["1"]
    assert registry.register("fraud", build(tmp_path, 2)[0]).version == "3"


def test_registry_errors_name_the_fix(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    with pytest.raises(RegistryError, match="no registered versions"):
        registry.resolve("fraud")
    with pytest.raises(RegistryError, match="has no active version"):
        registry.active("fraud")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(RegistryError, match="not a valid ONNX model"):
        registry.register("fraud", junk)
    registry.register("fraud", build(tmp_path, 1)[0])
    with pytest.raises(RegistryError, match=r"no version 7 .*versions: \['1'\]"):
        registry.activate("fraud", "7")
    with pytest.raises(RegistryError, match="not allowed"):
        registry.register("../escape", build(tmp_path, 1)[0])


def test_a_changed_file_is_refused_at_load_and_at_activate(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    ref = registry.register("fraud", build(tmp_path, 1)[0])
    tamper(ref.path)
    spec = registry_spec(tmp_path / "reg")
    with pytest.raises(ModelIntegrityError) as info:
        OnnxModel.load(registry.resolve("fraud", "1"), spec, NAMES)
    message = str(info.value)
    assert str(ref.path) in message and ref.sha256 in message
    assert "expected" in message and "is not loaded" in message
    with pytest.raises(ModelIntegrityError, match="not activated"):
        registry.activate("fraud", "1")


# -- hot swap -------------------------------------------------------------------------------


def test_hot_swap_to_v2_then_refuse_a_tampered_v3(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    registry = ModelRegistry(root)
    X, _ = data(5)
    src1, w1 = build(tmp_path, 1)
    src2, w2 = build(tmp_path, 2)
    registry.register("fraud", src1)
    clock = FakeClock()
    switch = ModelSwitch.open(registry_spec(root), NAMES, clock=clock)
    v1 = switch.current()
    assert v1.version == "1"
    np.testing.assert_allclose(v1.predict(X), w1.predict(X), atol=1e-5)

    registry.register("fraud", src2)  # activates v2
    assert switch.poll() is None  # not due yet: swap_poll is 1s
    assert switch.current() is v1
    clock.advance(1.0)
    assert switch.poll() is None  # due: v2 starts loading in the background
    assert switch.loading == "2"
    assert switch.current() is v1  # v1 keeps serving meanwhile
    assert switch.wait(timeout=30)
    event = switch.poll()  # between batches: v2 is installed
    assert event is not None and event.ok and (event.previous, event.target) == ("1", "2")
    v2 = switch.current()
    assert v2.version == "2" and switch.swaps == 1
    np.testing.assert_allclose(v2.predict(X), w2.predict(X), atol=1e-5)
    # A batch that began on v1 still finishes on v1: the old model stays usable.
    np.testing.assert_allclose(v1.predict(X), w1.predict(X), atol=1e-5)

    v3 = registry.register("fraud", build(tmp_path, 3)[0])
    tamper(v3.path)
    clock.advance(1.0)
    assert switch.poll() is None
    assert switch.wait(timeout=30)
    failed = switch.poll()
    assert failed is not None and not failed.ok and failed.target == "3"
    assert failed.error is not None and "ModelIntegrityError" in failed.error
    assert switch.last_failure == failed and switch.failed_swaps == 1
    assert switch.current() is v2
    # The refused version is not retried on every poll.
    clock.advance(1.0)
    assert switch.poll() is None and switch.loading is None
    assert switch.current() is v2 and switch.failed_swaps == 1


def test_signature_mismatch_is_refused_and_the_old_model_serves(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    registry = ModelRegistry(root)
    registry.register("fraud", build(tmp_path, 1)[0])
    clock = FakeClock()
    switch = ModelSwitch.open(registry_spec(root), NAMES, clock=clock)
    X, y = data()
    wide = export_onnx(
        train_mlp(np.c_[X, X[:, :1]], y, epochs=2),
        tmp_path / "wide.onnx",
        feature_names=[*NAMES, "x3"],
        model_name="fraud",
    )
    registry.register("fraud", wide)
    clock.advance(1.0)
    switch.poll()
    switch.wait(timeout=30)
    event = switch.poll()
    assert event is not None and not event.ok
    assert event.error is not None and "ModelSignatureError" in event.error
    assert "takes 4 columns" in event.error
    assert switch.current().version == "1"


def test_unreadable_registry_is_reported_once_and_serving_continues(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    ModelRegistry(root).register("fraud", build(tmp_path, 1)[0])
    clock = FakeClock()
    switch = ModelSwitch.open(registry_spec(root), NAMES, clock=clock)
    (root / "fraud/ACTIVE").write_text("garbage\n")
    clock.advance(1.0)
    event = switch.poll()
    assert event is not None and not event.ok and event.target == "?"
    assert "not a version" in (event.error or "")
    clock.advance(1.0)
    assert switch.poll() is None and switch.failed_swaps == 1
    assert switch.current().version == "1"


def test_pinned_version_and_plain_file_never_swap(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    registry = ModelRegistry(root)
    src1, _ = build(tmp_path, 1)
    registry.register("fraud", src1)
    clock = FakeClock()
    pinned = ModelSwitch.open(registry_spec(root, version="1"), NAMES, clock=clock)
    plain = ModelSwitch.open(
        ModelSpec(name="fraud", path=src1, inputs={"features": NAMES}, providers="cpu"),
        NAMES,
        clock=clock,
    )
    registry.register("fraud", build(tmp_path, 2)[0])
    clock.advance(5.0)
    for switch in (pinned, plain):
        assert switch.poll() is None and switch.loading is None
    assert pinned.current().version == "1"
    assert plain.current().version == ModelRef.for_file("fraud", src1).sha256[:12]
