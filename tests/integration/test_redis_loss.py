"""Redis loses the feature state under a running worker (a restart without data, a failover
that dropped recent writes): it scores nothing on the lost state, pauses, alerts once and
sets its gauge; `rebuild_state` re-arms the state and the worker resumes by itself, with
features exact against the reference recomputation."""

from __future__ import annotations

import logging

import pytest
import redis

from streams.ops.rebuild import rebuild_state
from streams.spec import parse_spec
from tests.integration.harness import (
    assert_features_exact,
    group_lag,
    prediction_counts,
    produce,
    read_json,
    recompute_features,
    spec_dict,
    start_worker,
    synthetic,
    wait_for,
)

pytestmark = pytest.mark.integration


def lose_namespace(admin: redis.Redis, namespace: str) -> int:
    """What a Redis restart without data does to one namespace (the suite shares Redis, so
    no FLUSHALL): every key of it, the state epoch included, is gone."""
    keys = [
        key
        for pattern in (f"sf:{namespace}:*", f"sf:{{{namespace}}}*")
        for key in admin.scan_iter(match=pattern, count=1000)
    ]
    assert keys, "the worker wrote no state to lose"
    return int(admin.delete(*keys))


def roll_back_high_waters(admin: redis.Redis, namespace: str) -> int:
    """What a failover to a replica that missed the last writes does: the state (epoch
    included) is there, but older than what the worker applied and delivered."""
    keys = list(admin.scan_iter(match=f"sf:{namespace}:{{*}}:hw:*", count=1000))
    assert keys, "the worker wrote no high-water marks"
    for key in keys:
        admin.set(key, int(admin.get(key)) - 50)
    return len(keys)


@pytest.mark.parametrize(
    ("loss", "reason"),
    [(lose_namespace, "is gone"), (roll_back_high_waters, "was applied up to offset")],
    ids=["restart-without-data", "failover-dropped-writes"],
)
def test_lost_state_pauses_scoring_until_a_rebuild_then_features_are_exact(
    conn, model_file, unique, admin_client, caplog, loss, reason
):
    caplog.set_level(logging.ERROR, logger="streams.worker.state_guard")
    raw = spec_dict(unique, {"path": str(model_file)})
    raw["topics"]["alerts"] = f"alerts-{unique}"
    spec = parse_spec(raw)
    # Few cards: after a loss their counts would read far lower than the truth.
    events = synthetic(1600, seed=41, n_cards=30)
    before, after = events[:1000], events[1000:]
    produce(conn, spec, before)
    worker = start_worker(spec, conn)
    gauge = worker.worker.metrics.registry
    try:
        wait_for(lambda: worker.worker.stats.predictions >= len(before), 90, "the first scores")
        wait_for(lambda: group_lag(conn, spec.group, spec.topics.events) == 0, 30, "their commits")
        assert gauge.get_sample_value("streamfer_feature_state_lost") == 0
        assert loss(admin_client, spec.namespace) > 0

        produce(conn, spec, after)
        alerts = read_json(conn, spec.topics.alerts, expected=1, timeout_s=60)
        assert [a["kind"] for a in alerts] == ["feature_state_lost"]
        assert alerts[0]["namespace"] == spec.namespace and reason in alerts[0]["reason"]
        assert gauge.get_sample_value("streamfer_feature_state_lost") == 1
        assert gauge.get_sample_value("streamfer_paused") == 1
        lines = [r.getMessage() for r in caplog.records if "feature state lost" in r.getMessage()]
        assert len(lines) == 1 and "streamfer rebuild -s SPEC" in lines[0]
        # Nothing of the new events was published: the worker holds them unscored.
        published = prediction_counts(read_json(conn, spec.topics.predictions, timeout_s=30))
        assert set(published) == {e["event_id"] for e in before}
        assert worker.worker.stats.predictions == len(before)

        result = rebuild_state(spec, conn)  # the group has a member: paused on the loss
        assert result.events == len(before)
        wait_for(lambda: worker.worker.stats.predictions >= len(events), 90, "scoring to resume")
        assert gauge.get_sample_value("streamfer_feature_state_lost") == 0
    finally:
        worker.stop()
        worker.join()

    served = read_json(conn, spec.topics.features, expected=len(events))
    assert prediction_counts(served) == {e["event_id"]: 1 for e in events}
    assert_features_exact(served, recompute_features(conn, spec), spec.features.names)
    assert len(read_json(conn, spec.topics.alerts, timeout_s=10)) == 1  # one alert, not one a retry
