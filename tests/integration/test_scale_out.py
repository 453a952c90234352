"""`streamfer run --workers 2`: two processes share one consumer group; SIGTERM lets each
finish its batch in flight and commit, so a restart re-scores nothing; a supervisor killed
outright takes its workers with it."""

from __future__ import annotations

import signal

import pytest

from streams.ops.topics import ensure_topics
from tests.integration.harness import (
    group_members,
    make_spec,
    prediction_counts,
    produce,
    read_json,
    synthetic,
    topic_size,
    wait_for,
    worker_process,
    write_spec,
)

pytestmark = pytest.mark.integration


def test_two_workers_share_the_group_and_sigterm_commits_their_work(
    conn, model_file, unique, tmp_path
):
    model = {"path": str(model_file)}
    spec = make_spec(unique, model, partitions=4)
    spec_file = write_spec(tmp_path / "spec.yaml", unique, model, partitions=4)
    events = synthetic(40_000, seed=61, n_cards=2000)
    produce(conn, spec, events)

    supervisor = worker_process(spec_file, conn, "--workers", "2")
    wait_for(lambda: group_members(conn, spec.group) == 2, 120, "two group members")
    wait_for(lambda: topic_size(conn, spec.topics.predictions) > len(events) // 8, 120, "scoring")
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(90) == 0
    assert group_members(conn, spec.group) == 0
    scored_before = len(read_json(conn, spec.topics.predictions, timeout_s=60))

    rest = worker_process(spec_file, conn, "--idle-exit", "5")
    assert rest.wait(300) == 0

    predictions = read_json(conn, spec.topics.predictions, timeout_s=120)
    counts = prediction_counts(predictions)
    assert set(counts) == {e["event_id"] for e in events}
    assert scored_before < len(events)  # the stop really happened mid-stream
    assert max(counts.values()) == 1, "a graceful stop must commit everything it produced"


def test_workers_die_with_a_killed_supervisor(conn, model_file, unique, tmp_path):
    model = {"path": str(model_file)}
    spec = make_spec(unique, model, partitions=2)
    spec_file = write_spec(tmp_path / "spec.yaml", unique, model, partitions=2)
    ensure_topics(conn, spec)
    supervisor = worker_process(spec_file, conn, "--workers", "2")
    wait_for(lambda: group_members(conn, spec.group) == 2, 120, "two group members")
    supervisor.kill()
    supervisor.wait(10)
    # An orphaned worker stays a member (polling on) for as long as it lives; dead ones
    # leave when their session (6 s here) expires.
    wait_for(lambda: group_members(conn, spec.group) == 0, 60, "the workers to die")
