"""Dead letters: headers as documented, and withheld details when the payload is off."""

from __future__ import annotations

from streams.events import dead_letters
from streams.events.dead_letters import DeadLetter, Reason, dead_letter_headers, withheld

DEAD = DeadLetter(
    Reason.INVALID_TYPE,
    "field 'amount': expected a number, got 'alice@example.com'",
    "payments",
    3,
    1234,
    b"card-42",
    b'{"amount": "alice@example.com"}',
)


def test_headers_carry_the_reason_message_and_source() -> None:
    headers = dict(dead_letter_headers(DEAD))
    assert headers[dead_letters.KIND] == b"invalid_type"
    assert headers[dead_letters.MESSAGE] == DEAD.message.encode()
    assert headers[dead_letters.SOURCE_TOPIC] == b"payments"
    assert (headers[dead_letters.SOURCE_PARTITION], headers[dead_letters.SOURCE_OFFSET]) == (
        b"3",
        b"1234",
    )


def test_withheld_keeps_the_reason_and_source_and_drops_what_can_be_personal() -> None:
    kept = withheld(DEAD)
    assert (kept.key, kept.value) == (None, None)
    assert (kept.reason, kept.topic, kept.partition, kept.offset) == (
        DEAD.reason,
        DEAD.topic,
        DEAD.partition,
        DEAD.offset,
    )
    assert "alice@example.com" not in kept.message
    assert "payments/3/1234" in kept.message
    headers = dict(dead_letter_headers(kept))
    assert b"alice" not in b"".join(headers.values())
