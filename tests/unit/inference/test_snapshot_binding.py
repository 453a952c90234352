"""Snapshots bound to their version and pipeline: a correctly signed snapshot copied under
another version, moved back to, copied from another pipeline, or published before the
binding existed is refused with an alert, and the served version stays."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import orjson
import pytest
import redis

from inference.adaptation.adapter import Adapter
from inference.adaptation.learner import OnlineLearner
from inference.adaptation.snapshots import SnapshotRejected, SnapshotStore, sign
from inference.adaptation.spec import AdaptationSpec

NAMES = ("a", "b", "c")
KEY = "k" * 32


def stack() -> AdaptationSpec:
    return AdaptationSpec.model_validate({"mode": "stack", "min_labels": 0})


class Alerts(list[dict[str, Any]]):
    def __call__(self, alert: dict[str, Any]) -> None:
        self.append(alert)


def trained(n: int, seed: int = 0) -> OnlineLearner:
    learner = OnlineLearner(stack(), NAMES)
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    learner.learn(X, np.full(n, 0.5), (X[:, 0] > 0).astype(float))
    return learner


def publish(store: SnapshotStore, learner: OnlineLearner) -> int:
    return store.publish(learner.model, learner.meta())


FIELDS = ("meta", "model", "sig", "state", "state_sig")


def copy_snapshot(client: redis.Redis, src: str, dst: str) -> None:
    """What a writer of Redis can do with a snapshot it read: store it under another key."""
    values = client.hmget(src, FIELDS)
    client.delete(dst)
    client.hset(dst, mapping=dict(zip(FIELDS, values, strict=True)))  # type: ignore[arg-type]


def open_adapter(client: redis.Redis, ns: str, alerts: Alerts) -> Adapter:
    # No throttle: these tests are about what one check does.
    return Adapter.open(stack(), client, ns, NAMES, alerts, key=KEY, poll_interval_s=0)


def test_the_signed_payload_names_its_version_and_pipeline(
    client: redis.Redis, unique: str
) -> None:
    store = SnapshotStore(client, unique, KEY.encode())
    version = publish(store, trained(20))
    snapshot = store.load(version)
    assert snapshot is not None
    assert (snapshot.meta["version"], snapshot.meta["namespace"]) == (version, unique)


def test_signed_v1_copied_to_version_6_is_refused_and_v1_keeps_serving(
    client: redis.Redis, unique: str
) -> None:
    store = SnapshotStore(client, unique, KEY.encode())
    v1 = publish(store, trained(40))
    alerts = Alerts()
    adapter = open_adapter(client, unique, alerts)
    assert adapter.version == str(v1)
    X = np.random.default_rng(1).normal(size=(8, 3))
    before = adapter.score(X, np.full(8, 0.5)).final

    rolled = v1 + 5
    copy_snapshot(client, store.snapshot_key(v1), store.snapshot_key(rolled))
    client.set(store.version_key, rolled)
    event = adapter.poll()

    assert event is not None and not event.ok and event.version == str(rolled)
    assert f"signed as version {v1}" in (event.reason or "")
    assert adapter.version == str(v1)  # the version reported is the one served
    np.testing.assert_array_equal(adapter.score(X, np.full(8, 0.5)).final, before)
    assert [(a["kind"], a["version"], a["kept_version"]) for a in alerts] == [
        ("snapshot_rejected", str(rolled), str(v1))
    ]
    assert adapter.poll() is None  # refused once, not on every batch


def test_a_fresh_worker_refuses_a_copy_too(client: redis.Redis, unique: str) -> None:
    store = SnapshotStore(client, unique, KEY.encode())
    v1 = publish(store, trained(40))
    copy_snapshot(client, store.snapshot_key(v1), store.snapshot_key(v1 + 1))
    client.set(store.version_key, v1 + 1)
    alerts = Alerts()
    adapter = open_adapter(client, unique, alerts)
    assert adapter.version is None  # ONNX only rather than a snapshot under a false version
    assert [a["version"] for a in alerts] == [str(v1 + 1)]


def test_a_pointer_moved_back_to_an_older_signed_version_is_refused(
    client: redis.Redis, unique: str
) -> None:
    store = SnapshotStore(client, unique, KEY.encode())
    learner = trained(30)
    v1 = publish(store, learner)
    v2 = publish(store, learner)
    alerts = Alerts()
    adapter = open_adapter(client, unique, alerts)
    assert adapter.version == str(v2)

    client.set(store.version_key, v1)  # v1 is still there, in its grace period
    event = adapter.poll()
    assert event is not None and not event.ok
    assert f"older than version {v2}" in (event.reason or "")
    assert adapter.version == str(v2) and len(alerts) == 1

    v3 = publish(store, learner)  # the learner goes on: the next version is taken
    taken = adapter.poll()
    assert taken is not None and taken.ok and adapter.version == str(v3)


def test_a_snapshot_of_another_pipeline_is_refused(client: redis.Redis, unique: str) -> None:
    other = SnapshotStore(client, f"{unique}-other", KEY.encode())
    mine = SnapshotStore(client, unique, KEY.encode())
    version = publish(other, trained(30))
    copy_snapshot(client, other.snapshot_key(version), mine.snapshot_key(version))
    client.set(mine.version_key, version)
    alerts = Alerts()
    adapter = open_adapter(client, unique, alerts)
    assert adapter.version is None
    assert f"signed for pipeline '{unique}-other'" in alerts[0]["reason"]


def legacy_publish(store: SnapshotStore, learner: OnlineLearner, version: int) -> None:
    """A snapshot as streamfer wrote them before the pipeline was signed (version only)."""
    meta = orjson.dumps({**learner.meta(), "version": version}, option=orjson.OPT_SORT_KEYS)
    model = pickle.dumps(learner.model)
    state = pickle.dumps(learner.state)
    store._client.hset(
        store.snapshot_key(version),
        mapping={
            "meta": meta,
            "model": model,
            "sig": sign(KEY.encode(), meta, model),
            "state": state,
            "state_sig": sign(KEY.encode(), meta, state),
        },
    )
    store._client.set(store.version_key, version)
    store._client.set(store.prefix + "counter", version)


def test_a_snapshot_from_before_the_binding_is_refused_by_workers_with_a_clear_message(
    client: redis.Redis, unique: str
) -> None:
    store = SnapshotStore(client, unique, KEY.encode())
    learner = trained(30)
    legacy_publish(store, learner, 4)
    with pytest.raises(SnapshotRejected, match="carries no signed pipeline name"):
        store.load(4)
    alerts = Alerts()
    adapter = open_adapter(client, unique, alerts)
    assert adapter.version is None and "the learner publishes a bound one" in alerts[0]["reason"]

    # The learner resumes from it across the upgrade, and what it publishes next is taken.
    resumed = store.load(4, with_state=True, allow_unbound=True)
    assert resumed is not None and resumed.state.labels_seen == learner.labels_seen
    v5 = publish(store, learner)
    taken = adapter.poll()
    assert v5 == 5 and taken is not None and taken.ok and adapter.version == "5"


def test_the_learner_is_held_to_the_version_too(client: redis.Redis, unique: str) -> None:
    store = SnapshotStore(client, unique, KEY.encode())
    v1 = publish(store, trained(30))
    copy_snapshot(client, store.snapshot_key(v1), store.snapshot_key(9))
    with pytest.raises(SnapshotRejected, match=f"signed as version {v1}"):
        store.load(9, with_state=True, allow_unbound=True)


def test_after_redis_lost_the_snapshots_a_learner_goes_on_above_what_workers_serve(
    client: redis.Redis, unique: str
) -> None:
    store = SnapshotStore(client, unique, KEY.encode())
    for _ in range(3):
        served = publish(store, trained(30))
    alerts = Alerts()
    adapter = open_adapter(client, unique, alerts)
    assert adapter.version == str(served)
    # Redis restarted without its data: every adaptation key is gone, the counter too.
    lost = [store.prefix + "counter", store.version_key]
    client.delete(*lost, *(store.snapshot_key(v) for v in range(1, served + 1)))

    after = publish(store, trained(50, seed=3))

    assert after == served + 1, "the counter started again below the served version"
    event = adapter.poll()
    assert event is not None and event.ok and adapter.version == str(after)
    assert alerts == []
    assert publish(store, trained(10)) == after + 1
