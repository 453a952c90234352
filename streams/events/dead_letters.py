"""Dead letters: an input message that could not be scored, why, and where it came from.

The reasons and the header names are defined here once; `docs/schemas.md` lists them for
the consumers of the dead-letter topic, and `streamfer rebuild` reads them back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Reason(StrEnum):
    """`streamfer.error.kind` of a dead letter."""

    EMPTY = "empty"  # a tombstone: the message has no value
    NOT_AN_OBJECT = "not_an_object"  # JSON, but not an object
    OVERSIZED = "oversized"  # over event.max_bytes
    DECODE_ERROR = "decode_error"  # not JSON
    MISSING_FIELD = "missing_field"
    INVALID_TYPE = "invalid_type"
    INVALID_VALUE = "invalid_value"
    EVENT_TIME_OUT_OF_RANGE = "event_time_out_of_range"  # too old or too far in the future
    FEATURE_ERROR = "feature_error"  # the feature script refused the event (after decoding)
    SCORE_NOT_FINITE = "score_not_finite"  # the model gave NaN or ±inf (after scoring)


# Header names, one per field of DeadLetter besides the payload.
KIND = "streamfer.error.kind"
MESSAGE = "streamfer.error.message"
SOURCE_TOPIC = "streamfer.source.topic"
SOURCE_PARTITION = "streamfer.source.partition"
SOURCE_OFFSET = "streamfer.source.offset"
MESSAGE_MAX_BYTES = 1000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input message that could not be scored, with why and where it came from."""

    reason: str
    message: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def dead_letter_headers(dead: DeadLetter) -> list[tuple[str, bytes]]:
    """The Kafka headers of a dead letter (its value and key are the original message's)."""
    return [
        (KIND, dead.reason.encode()),
        (MESSAGE, dead.message.encode()[:MESSAGE_MAX_BYTES]),
        (SOURCE_TOPIC, dead.topic.encode()),
        (SOURCE_PARTITION, str(dead.partition).encode()),
        (SOURCE_OFFSET, str(dead.offset).encode()),
    ]


def withheld(dead: DeadLetter) -> DeadLetter:
    """`dead` without what can be personal data: no key, no value, and no error message
    (it may quote a field). The reason and the source's topic, partition and offset stay,
    and point at the original in the events topic (`dead_letters.payload: false`)."""
    where = f"{dead.topic}/{dead.partition}/{dead.offset}"
    return replace(
        dead,
        key=None,
        value=None,
        message=f"{dead.reason} (details withheld: dead_letters.payload is false; the "
        f"event is at {where})",
    )
