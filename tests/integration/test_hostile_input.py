"""Bad input is data: each bad message lands in the dead-letter topic with its reason."""

from __future__ import annotations

import time
from pathlib import Path

import onnx
import orjson
import pytest
from confluent_kafka import Producer
from onnx import TensorProto, helper

from streams.ops.topics import ensure_topics, read_topic
from tests.integration.harness import make_spec, read_json, start_worker, synthetic

pytestmark = pytest.mark.integration

NOW_MS = int(time.time() * 1000)


def hostile() -> list[tuple[str, bytes | None]]:
    base = {
        "event_id": "x",
        "event_time": NOW_MS,
        "card_id": "c1",
        "merchant_id": "m1",
        "amount": 10.0,
        "mcc": 5411,
    }

    def ev(**kw: object) -> bytes:
        event = {**base, **kw}
        return orjson.dumps({k: v for k, v in event.items() if v is not ...})

    return [
        ("decode_error", b'{"event_id": "bad-json", '),
        ("decode_error", b'{"event_id":"nan","event_time":1,"card_id":"c","amount":NaN}'),
        ("decode_error", b'{"event_id":"inf","amount":Infinity}'),
        ("not_an_object", b'["an", "array"]'),
        ("invalid_type", ev(event_id="wrong-type", amount="ten")),
        ("invalid_type", ev(event_id="bool-amount", amount=True)),
        ("missing_field", ev(event_id=...)),
        ("missing_field", ev(event_id="no-time", event_time=...)),
        ("missing_field", ev(event_id="no-card", card_id=...)),
        ("oversized", ev(event_id="big", pad="x" * 10_000)),
        ("event_time_out_of_range", ev(event_id="past", event_time=NOW_MS - 400 * 86_400_000)),
        ("event_time_out_of_range", ev(event_id="future", event_time=NOW_MS + 86_400_000)),
        ("invalid_value", ev(event_id="huge", amount=1e308)),  # inf as the model's float32
        ("empty", None),
    ]


def test_each_hostile_message_is_dead_lettered_and_good_events_are_scored(conn, model_file, unique):
    spec = make_spec(unique, {"path": str(model_file)}, partitions=1)
    ensure_topics(conn, spec)
    good = synthetic(200, seed=9)
    bad = hostile()
    producer = Producer(conn.kafka_config())
    # Interleave: good events before, between and after every bad one, on one partition.
    per_gap = len(good) // (len(bad) + 1)
    sent_good = []
    for i, (_reason, payload) in enumerate([*bad, ("", b"")]):
        for event in good[i * per_gap : (i + 1) * per_gap]:
            producer.produce(spec.topics.events, orjson.dumps(event), b"k")
            sent_good.append(event["event_id"])
        if payload != b"":
            producer.produce(spec.topics.events, payload, b"k")
    assert producer.flush(30) == 0
    total = len(sent_good) + len(bad)

    worker = start_worker(spec, conn, max_events=total, idle_exit_s=60)
    stats = worker.join()

    assert stats.events_in == total
    assert stats.dead_letters == len(bad)
    predictions = read_json(conn, spec.topics.predictions, expected=len(sent_good))
    assert sorted(p["event_id"] for p in predictions) == sorted(sent_good)

    dead = read_topic(conn, spec.topics.dead_letter, expected=len(bad), timeout_s=60)
    assert len(dead) == len(bad)
    reasons = []
    for msg in sorted(dead, key=lambda m: int(dict(m.headers())["streamfer.source.offset"])):
        headers = dict(msg.headers())
        reasons.append(headers["streamfer.error.kind"].decode())
        assert headers["streamfer.error.message"]
        assert headers["streamfer.source.topic"].decode() == spec.topics.events
        assert headers["streamfer.source.partition"] == b"0"
    assert reasons == [reason for reason, _ in bad]


def test_with_the_payload_off_dead_letters_hold_no_key_value_or_details(conn, model_file, unique):
    spec = make_spec(
        unique, {"path": str(model_file)}, partitions=1, dead_letters={"payload": False}
    )
    ensure_topics(conn, spec)
    good = synthetic(20, seed=12)
    personal = b'{"event_id": "p1", "amount": "alice@example.com"}'
    bad = [personal, b'{"event_id": "alice@example.com", ']
    producer = Producer(conn.kafka_config())
    for event in good:
        producer.produce(spec.topics.events, orjson.dumps(event), b"k")
    for payload in bad:
        producer.produce(spec.topics.events, payload, b"card-of-alice")
    assert producer.flush(30) == 0
    total = len(good) + len(bad)

    stats = start_worker(spec, conn, max_events=total, idle_exit_s=60).join()

    assert (stats.events_in, stats.dead_letters) == (total, len(bad))
    dead = read_topic(conn, spec.topics.dead_letter, expected=len(bad), timeout_s=60)
    assert len(dead) == len(bad)
    for msg in dead:
        headers = dict(msg.headers())
        assert (msg.key(), msg.value()) == (None, None)
        assert b"alice" not in b"".join(headers.values())
        assert headers["streamfer.error.kind"]  # the reason stays
        offset = int(headers["streamfer.source.offset"])
        assert len(good) <= offset < total  # it points at the original in the events topic


def sqrt_of_column(path: Path, n_features: int, column: int) -> Path:
    """A model whose score is sqrt(features[:, column]): NaN where that column is negative."""
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["features", "column"], ["picked"], axis=1),
            helper.make_node("Sqrt", ["picked"], ["score"]),
        ],
        "sqrt_of_column",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", n_features])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n", 1])],
        [helper.make_tensor("column", TensorProto.INT64, [1], [column])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, path)
    return path


def test_an_event_the_model_scores_nan_is_dead_lettered_not_published_as_null(
    conn, unique, tmp_path
):
    probe = make_spec(unique, {"path": str(tmp_path / "m.onnx")}, partitions=1)
    names = probe.features.names
    path = sqrt_of_column(tmp_path / "m.onnx", len(names), names.index("card_last_amount"))
    spec = make_spec(unique, {"path": str(path), "providers": "cpu"}, partitions=1)
    ensure_topics(conn, spec)
    good = synthetic(60, seed=11)
    assert all(e["amount"] >= 0 for e in good)
    negative = {**good[0], "event_id": "negative", "card_id": "fresh-card", "amount": -4.0}
    payload = orjson.dumps(negative)
    producer = Producer(conn.kafka_config())
    for event in good[:30]:
        producer.produce(spec.topics.events, orjson.dumps(event), b"k")
    producer.produce(spec.topics.events, payload, b"neg")
    for event in good[30:]:
        producer.produce(spec.topics.events, orjson.dumps(event), b"k")
    assert producer.flush(30) == 0

    stats = start_worker(spec, conn, max_events=61, idle_exit_s=60).join()

    assert (stats.events_in, stats.predictions, stats.dead_letters) == (61, 60, 1)
    predictions = read_json(conn, spec.topics.predictions, expected=60)
    assert sorted(p["event_id"] for p in predictions) == sorted(e["event_id"] for e in good)
    assert all(p["score"] is not None for p in predictions)
    (dead,) = read_topic(conn, spec.topics.dead_letter, expected=1, timeout_s=60)
    headers = dict(dead.headers())
    assert headers["streamfer.error.kind"] == b"score_not_finite"
    assert b"the score is nan" in headers["streamfer.error.message"]
    assert (dead.key(), dead.value()) == (b"neg", payload)
