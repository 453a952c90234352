"""`streamfer dataset` is point-in-time correct: after a stream whose cards change behaviour
half-way, every row holds exactly the feature values that scored its event (the features
topic), which equal the reference recomputation as of that event, with its label."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest

from streams.ops.dataset import write_dataset
from streams.spec import parse_spec
from streams.workloads.producing import produce_events
from tests.integration.harness import (
    produce,
    read_json,
    recompute_features,
    spec_dict,
    start_worker,
    synthetic,
)

pytestmark = pytest.mark.integration


def test_every_row_holds_the_features_that_scored_its_event(conn, model_file, unique, tmp_path):
    raw = spec_dict(unique, {"path": str(model_file)})
    raw["topics"]["labels"] = f"lab-{unique}"
    spec = parse_spec(raw)
    events = synthetic(3000, seed=11, n_cards=25, n_merchants=40)
    for e in events[1500:]:  # the same cards now spend ten times more: features move
        e["amount"] = round(e["amount"] * 10, 2)
    produce(conn, spec, events)
    stats = start_worker(spec, conn, max_events=len(events), idle_exit_s=60).join()
    assert stats.events_in == len(events)
    labelled = events[::3]  # a third labelled; the others are left out of the set
    labels = [
        {"event_id": e["event_id"], "label": float(e["amount"] > 100), "label_time": 0}
        for e in labelled
    ]
    assert spec.topics.labels and spec.topics.features
    produce_events(conn, spec.topics.labels, labels, key_field="event_id")

    out = write_dataset(spec, conn, tmp_path / "train.parquet")
    rows = pq.read_table(out.path).to_pylist()

    assert out.rows == len(rows) == len(labelled)
    names = spec.features.names
    served = {r["event_id"]: r for r in read_json(conn, spec.topics.features, expected=len(events))}
    expected = recompute_features(conn, spec)
    predictions = {p["event_id"]: p for p in read_json(conn, spec.topics.predictions)}
    by_id = {e["event_id"]: e for e in labelled}
    mismatches = []
    for row in rows:
        event_id = row["event_id"]
        assert row["event_time_ms"] == by_id[event_id]["event_time"]
        assert row["label"] == float(by_id[event_id]["amount"] > 100)
        assert row["score"] == predictions[event_id]["score"]
        for i, name in enumerate(names):
            if row[name] != served[event_id]["features"][name]:
                mismatches.append(("topic", event_id, name, row[name]))
            if not math.isclose(row[name], expected[event_id][i], rel_tol=1e-9, abs_tol=1e-9):
                mismatches.append(("reference", event_id, name, row[name]))
    assert not mismatches, f"{len(mismatches)} values differ, e.g. {mismatches[:5]}"
    times = [r["event_time_ms"] for r in rows]
    assert times == sorted(times)
    # The behaviour change is visible in the rows, so "as of the event" is a real check.
    index = names.index("card_amount_mean_1h")
    late_ids = {e["event_id"] for e in events[2000:]}
    early = [expected[r["event_id"]][index] for r in rows if r["event_id"] not in late_ids]
    late = [expected[r["event_id"]][index] for r in rows if r["event_id"] in late_ids]
    assert sum(late) / len(late) > 3 * sum(early) / len(early)

    since = sorted(times)[len(times) // 2]
    half = write_dataset(spec, conn, tmp_path / "half.parquet", since_ms=since, unlabelled=True)
    half_rows = pq.read_table(half.path).to_pylist()
    assert len(half_rows) == len({e["event_id"] for e in events if e["event_time"] >= since})
    assert all(r["event_time_ms"] >= since for r in half_rows)
