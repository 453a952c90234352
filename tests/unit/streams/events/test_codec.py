import math
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest

from streams.events.codec import Scored, decode_batch, encode_predictions
from streams.events.schema import EventValidator, event_json_schema, prediction_json_schema
from streams.spec import load_spec

SPEC = load_spec(Path(__file__).parents[4] / "examples" / "card-payments.yaml")
NOW = 1_750_000_000_000


@dataclass
class Msg:
    _value: bytes | None
    _offset: int = 0

    def value(self):
        return self._value

    def key(self):
        return b"k"

    def topic(self):
        return "payments"

    def partition(self):
        return 0

    def offset(self):
        return self._offset


def good(**changes):
    event = {
        "event_id": "e1",
        "event_time": NOW - 1000,
        "card_id": "c1",
        "merchant_id": "m1",
        "amount": 12.5,
        "mcc": 5411,
    }
    event.update(changes)
    return orjson.dumps({k: v for k, v in event.items() if v is not ...})


def decode(*values):
    msgs = [Msg(v, i) for i, v in enumerate(values)]
    return decode_batch(
        msgs, EventValidator(SPEC.event), max_bytes=SPEC.event.max_bytes, now_ms=NOW
    )


def test_a_good_event_is_decoded_with_defaults_and_its_time_in_ms():
    batch = decode(good())
    assert batch.records[0]["channel"] == "pos"  # default from the spec
    assert batch.event_time_ms.tolist() == [NOW - 1000]
    assert batch.sources == [("payments", 0, 0)]
    assert batch.ids.tolist() == ["e1"]
    assert {e: c.tolist() for e, c in batch.entities.items()} == {
        "card_id": ["c1"],
        "merchant_id": ["m1"],
    }
    assert not batch.dead_letters


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "decode_error"),
        (b'{"amount": NaN}', "decode_error"),
        (b"[1, 2]", "not_an_object"),
        (good(amount="12"), "invalid_type"),
        (good(amount=True), "invalid_type"),
        (good(mcc=54.1), "invalid_type"),
        (good(card_id=...), "missing_field"),
        (good(event_id=...), "missing_field"),
        (good(event_time=...), "missing_field"),
        (good(card_id=""), "invalid_value"),
        (good(event_time=NOW - 30 * 86_400_000), "event_time_out_of_range"),
        (good(event_time=NOW + 3_600_000), "event_time_out_of_range"),
        (good(event_time="yesterday"), "invalid_type"),
        (b'{"pad": "' + b"x" * 20_000 + b'"}', "oversized"),
        (None, "empty"),
    ],
)
def test_bad_input_becomes_a_dead_letter_with_its_reason(value, reason):
    batch = decode(good(event_id="before"), value, good(event_id="after"))
    assert [r["event_id"] for r in batch.records] == ["before", "after"]
    assert [d.reason for d in batch.dead_letters] == [reason]
    dead = batch.dead_letters[0]
    assert (dead.topic, dead.partition, dead.offset) == ("payments", 0, 1)
    assert dead.message


def test_huge_number_is_rejected_not_infinite():
    batch = decode(
        b'{"event_id":"e","event_time":1,"card_id":"c","merchant_id":"m","amount":1e999}'
    )
    assert not batch.records
    assert batch.dead_letters[0].reason in {"decode_error", "invalid_value"}


@pytest.mark.parametrize("amount", [1e39, -1e308])
def test_a_number_beyond_float32_is_rejected_as_the_model_would_see_inf(amount):
    batch = decode(good(event_id="before"), good(amount=amount), good(event_id="after"))
    assert [r["event_id"] for r in batch.records] == ["before", "after"]
    (dead,) = batch.dead_letters
    assert dead.reason == "invalid_value"
    assert "field 'amount'" in dead.message and "float32" in dead.message
    assert dead.value == good(amount=amount)  # the raw message, unchanged


def test_the_largest_float32_is_accepted_and_raw_values_are_kept():
    batch = decode(good(amount=3.4e38), good(amount=-3.4e38))
    assert [r["amount"] for r in batch.records] == [3.4e38, -3.4e38]
    assert batch.values.tolist() == [good(amount=3.4e38), good(amount=-3.4e38)]


def scored_for(n):
    return Scored(
        features=np.zeros((n, 2)),
        scores=np.linspace(0, 1, n),
        onnx_scores=np.linspace(0, 1, n),
        river_scores=None,
        decisions=np.linspace(0, 1, n) >= 0.5,
        late=np.zeros(n, bool),
        replayed=np.zeros(n, bool),
        model_name="card-fraud",
        model_version="3",
        adaptation_version=None,
        scored_at_ms=NOW,
    )


def test_predictions_match_the_published_json_schema():
    batch = decode(good(event_id="a"), good(event_id="b"))
    payloads = encode_predictions(batch, scored_for(2))
    schema = prediction_json_schema(SPEC.event, SPEC.name)
    for payload in payloads:
        jsonschema.validate(orjson.loads(payload), schema)
    first = orjson.loads(payloads[0])
    assert first["event_id"] == "a"
    assert first["model"] == {"name": "card-fraud", "version": "3"}
    assert first["keys"] == {"card_id": "c1", "merchant_id": "m1"}
    assert math.isclose(orjson.loads(payloads[1])["score"], 1.0)


def test_events_schema_accepts_a_good_event_and_rejects_a_bad_one():
    schema = event_json_schema(SPEC.event, SPEC.name)
    jsonschema.validate(orjson.loads(good()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(orjson.loads(good(amount="12")), schema)


def test_keep_shrinks_every_column_with_one_mask():
    batch = decode(good(event_id="a"), b"{not json", good(event_id="b"), good(event_id="c"))
    kept = batch.keep(np.array([True, False, True]))
    assert kept.ids.tolist() == ["a", "c"] and [r["event_id"] for r in kept.records] == ["a", "c"]
    assert kept.sources == [("payments", 0, 0), ("payments", 0, 3)]
    assert kept.values.tolist() == [good(event_id="a"), good(event_id="c")]
    assert kept.event_time_ms.tolist() == [NOW - 1000] * 2
    assert kept.entities["card_id"].tolist() == ["c1", "c1"]
    assert [d.reason for d in kept.dead_letters] == ["decode_error"]
    assert len(batch) == 3  # the input batch is left as it was


def test_reject_moves_events_to_dead_letters_with_their_raw_message():
    batch = decode(good(event_id="a"), good(event_id="b"))
    kept = batch.reject(np.array([False, True]), "feature_error", ["bad value"])
    assert kept.ids.tolist() == ["a"]
    (dead,) = kept.dead_letters
    assert (dead.reason, dead.message, dead.offset) == ("feature_error", "bad value", 1)
    assert (dead.key, dead.value) == (b"k", good(event_id="b"))


def test_in_partitions_masks_the_events_of_owned_partitions():
    batch = decode(good(event_id="a"), good(event_id="b"))
    assert batch.in_partitions({("payments", 0)}).tolist() == [True, True]
    assert batch.in_partitions({("payments", 1), ("other", 0)}).tolist() == [False, False]
