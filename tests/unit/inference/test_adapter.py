"""The worker's Adapter: the key comes from the caller, snapshots are checked at most once per
interval of the injected clock, and a newer signed version is taken once a check is due."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest
import redis

from inference.adaptation.adapter import POLL_INTERVAL_S, Adapter
from inference.adaptation.learner import OnlineLearner
from inference.adaptation.snapshots import Snapshot, SnapshotKeyMissing, SnapshotStore
from inference.adaptation.spec import AdaptationSpec

NAMES = ("a", "b", "c")
KEY = "k" * 32


def stack() -> AdaptationSpec:
    return AdaptationSpec.model_validate({"mode": "stack", "min_labels": 0})


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingStore:
    """A store with nothing published that counts how often the version pointer is read."""

    def __init__(self) -> None:
        self.reads = 0

    def latest_version(self) -> int | None:
        self.reads += 1
        return None

    def load(self, version: int, *, with_state: bool = False) -> Snapshot | None:
        raise AssertionError("nothing is published, so nothing is loaded")


def no_alert(alert: dict[str, Any]) -> None:
    raise AssertionError(f"unexpected alert {alert}")


def test_the_key_is_the_callers_not_the_environments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMFER_SNAPSHOT_KEY", KEY)  # must not be read
    fake = cast(redis.Redis, object())
    with pytest.raises(SnapshotKeyMissing, match="STREAMFER_SNAPSHOT_KEY is not set"):
        Adapter.open(stack(), fake, "ns", NAMES, no_alert, key=None)
    with pytest.raises(SnapshotKeyMissing, match="shorter than 16"):
        Adapter.open(stack(), fake, "ns", NAMES, no_alert, key="short")


def test_mode_off_needs_no_key_and_passes_onnx_through() -> None:
    adapter = Adapter.open(
        AdaptationSpec(), cast(redis.Redis, None), "ns", NAMES, no_alert, key=None
    )
    onnx = np.array([0.1, 0.9])
    assert adapter.poll() is None
    scored = adapter.score(np.zeros((2, 3)), onnx)
    assert scored.final is onnx and scored.river is None and scored.version is None


def test_poll_reads_redis_at_most_once_per_interval() -> None:
    clock, store = FakeClock(), CountingStore()
    adapter = Adapter(
        stack(), cast(SnapshotStore, store), NAMES, no_alert, clock=clock, poll_interval_s=2.0
    )
    adapter.poll()
    assert store.reads == 1  # the first poll checks at once
    for step in range(20):  # a batch every 0.099 s, up to just before the interval ends
        clock.now = 100.0 + step * 0.099
        adapter.poll()
    assert store.reads == 1
    clock.now = 102.0
    adapter.poll()
    adapter.poll()
    assert store.reads == 2
    clock.now = 104.5
    adapter.poll()
    assert store.reads == 3


def test_a_zero_interval_checks_on_every_poll() -> None:
    store = CountingStore()
    adapter = Adapter(
        stack(), cast(SnapshotStore, store), NAMES, no_alert, clock=FakeClock(), poll_interval_s=0
    )
    for _ in range(3):
        adapter.poll()
    assert store.reads == 3


def test_a_new_version_is_taken_when_the_next_check_is_due(
    client: redis.Redis, unique: str
) -> None:
    spec = stack()
    store = SnapshotStore(client, unique, KEY.encode())
    learner = OnlineLearner(spec, NAMES)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 3))
    onnx = np.full(100, 0.5)
    learner.learn(X[:50], onnx[:50], (X[:50, 0] > 0).astype(float))
    v1 = store.publish(learner.model, learner.meta())
    clock = FakeClock()
    adapter = Adapter.open(spec, client, unique, NAMES, no_alert, key=KEY, clock=clock)
    assert adapter.version == str(v1)  # loaded right away by open

    learner.learn(X[50:], onnx[50:], (X[50:, 0] > 0).astype(float))
    v2 = store.publish(learner.model, learner.meta())
    clock.now += POLL_INTERVAL_S / 2
    assert adapter.poll() is None and adapter.version == str(v1)  # not due yet
    clock.now += POLL_INTERVAL_S / 2
    event = adapter.poll()
    assert event is not None and event.ok and event.version == str(v2)
    scored = adapter.score(X[:5], onnx[:5])
    assert scored.version == str(v2) and scored.river is not None
    np.testing.assert_array_equal(scored.final, scored.river)  # min_labels 0: River serves
