"""`streamfer rebuild`: Redis loses the feature state mid-stream; the rebuild brings back the
state continuous processing had produced, and the workers carry on with exact features."""

from __future__ import annotations

import time

import pytest
import redis
import typer
from typer.testing import CliRunner

from streams.cli.ops import rebuild
from streams.ops.rebuild import RebuildError, rebuild_state, wipe_feature_state
from streams.spec import load_spec
from tests.integration.harness import (
    assert_features_exact,
    produce,
    read_json,
    recompute_features,
    start_worker,
    synthetic,
    wait_for,
    write_spec,
)

pytestmark = pytest.mark.integration


def feature_state(client: redis.Redis, namespace: str) -> dict[bytes, object]:
    """Every feature-store key of a namespace with its value (TTLs aside), the shards' epochs
    aside (a rebuild writes a new one)."""
    state: dict[bytes, object] = {}
    for key in client.scan_iter(match=f"sf:{namespace}:{{*", count=1000):
        if key.endswith(b":epoch"):
            continue
        kind = client.type(key)
        state[key] = client.hgetall(key) if kind == b"hash" else client.get(key)
    return state


def cli() -> typer.Typer:
    """`streamfer rebuild` as the lead registers it (a one-command app takes no name)."""
    app = typer.Typer()
    app.command("rebuild")(rebuild)
    return app


def test_rebuild_after_redis_loss_restores_the_exact_state(
    conn, model_file, unique, tmp_path, admin_client
):
    spec_file = write_spec(tmp_path / "spec.yaml", unique, {"path": str(model_file)})
    spec = load_spec(spec_file)
    events = synthetic(6000, seed=21, n_cards=150)
    # Rejected by the worker for their time (max_future 5m): the rebuild must skip them too,
    # although today's clock is not the clock the worker judged them by.
    now = int(time.time() * 1000)
    future = [
        {
            **events[0],
            "event_id": f"future-{i}",
            "card_id": f"future-card-{i}",
            "event_time": now + 3_600_000,
        }
        for i in range(5)
    ]
    produced = events[:1500] + future + events[1500:]
    produce(conn, spec, produced)
    half = len(events) // 2
    first = start_worker(spec, conn, max_events=half, idle_exit_s=60).join()
    assert half <= first.events_in < len(produced)

    client = redis.Redis.from_url(conn.redis_url)
    # The admin user reads the state (TYPE, HGETALL); the wipe runs as the streamfer user.
    continuous = feature_state(admin_client, spec.namespace)
    assert continuous and not any(b"future-card" in k for k in continuous)
    assert wipe_feature_state(client, spec.namespace) == len(continuous)  # Redis lost it
    assert feature_state(admin_client, spec.namespace) == {}

    result = CliRunner().invoke(cli(), ["-s", str(spec_file)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "rebuilt namespace" in result.output

    assert feature_state(admin_client, spec.namespace) == continuous
    rest = len(produced) - first.events_in
    second = start_worker(spec, conn, max_events=rest, idle_exit_s=60).join()
    assert first.events_in + second.events_in == len(produced)
    assert first.dead_letters + second.dead_letters == len(future)
    served = read_json(conn, spec.topics.features, expected=len(events))
    assert len(served) == len(events)
    assert not any(r["replayed"] for r in served), "the rebuild went past the committed offsets"
    assert_features_exact(served, recompute_features(conn, spec), spec.features.names)


def test_rebuild_refuses_while_workers_run(conn, model_file, unique, tmp_path):
    spec = load_spec(write_spec(tmp_path / "spec.yaml", unique, {"path": str(model_file)}))
    events = synthetic(200, seed=22)
    produce(conn, spec, events)
    worker = start_worker(spec, conn)
    try:
        wait_for(lambda: worker.worker.stats.events_in >= len(events), 60, "the worker to score")
        with pytest.raises(RebuildError, match="stop the workers first"):
            rebuild_state(spec, conn)
    finally:
        worker.stop()
        worker.join()
