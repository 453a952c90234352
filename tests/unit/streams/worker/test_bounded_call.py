"""A call with a deadline Python keeps: its result, its exception, or CallTimedOut in time;
and an exactly-once output that gives a stuck producer up instead of hanging with it."""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

import pytest

from streams.worker import delivery
from streams.worker.bounded_call import CallTimedOut, call_within
from streams.worker.consumer import MessageBatch
from streams.worker.delivery import BatchAborted, OutputBatch, OutputTopics, TransactionalOutput
from streams.worker.metrics import WorkerMetrics


def test_the_result_and_the_exception_come_back() -> None:
    assert call_within(lambda: 42, 5.0, "answer") == 42
    with pytest.raises(KeyError):
        call_within(lambda: {}["missing"], 5.0, "lookup")


def test_a_call_that_never_returns_times_out_on_time() -> None:
    never = threading.Event()
    started = time.monotonic()
    with pytest.raises(CallTimedOut, match="stuck call did not return within 0 s"):
        call_within(never.wait, 0.2, "stuck call")
    assert time.monotonic() - started < 2.0
    never.set()  # lets the abandoned thread end


class _Producer:
    """A transactional producer whose `send_offsets_to_transaction` blocks until released."""

    made: ClassVar[list[_Producer]] = []
    release: ClassVar[threading.Event] = threading.Event()

    def __init__(self, _config: dict[str, Any]) -> None:
        self.committed = 0
        self.stuck = len(_Producer.made) == 0  # the first one hangs, as librdkafka#5456
        _Producer.made.append(self)

    def init_transactions(self, _timeout: float) -> None: ...
    def begin_transaction(self) -> None: ...
    def produce(self, *_args: Any, **_kwargs: Any) -> None: ...
    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float) -> int:
        return 0

    def send_offsets_to_transaction(self, *_args: Any) -> None:
        if self.stuck:
            _Producer.release.wait()

    def commit_transaction(self, _timeout: float) -> None:
        self.committed += 1


class _Offsets:
    def store_offsets(self, offsets: dict[tuple[str, int], int]) -> None: ...
    def commit(self) -> None: ...
    def group_metadata(self) -> Any:
        return None


def test_a_stuck_send_offsets_aborts_the_batch_and_the_next_uses_a_fresh_producer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(delivery, "Producer", _Producer)
    monkeypatch.setattr(delivery, "STUCK_GRACE_S", 0.0)
    monkeypatch.setattr(delivery, "SEND_OFFSETS_BOUND_S", 0.2)
    output = TransactionalOutput(
        {}, "tx-1", _Offsets(), OutputTopics("p", "d"), WorkerMetrics(), timeout_s=30.0
    )
    batch = OutputBatch(MessageBatch([], 0.0))
    started = time.monotonic()
    with pytest.raises(BatchAborted, match="did not return"):
        output.send(batch)
    assert time.monotonic() - started < 5.0, "the bound is the output's, not librdkafka's"
    output.send(batch)  # scored again on the replacement
    first, second = _Producer.made
    assert (first.committed, second.committed) == (0, 1)
    _Producer.release.set()
