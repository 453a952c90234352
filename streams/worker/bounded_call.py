"""A blocking client call with a deadline Python keeps, for calls whose own timeout fails.

librdkafka's `send_offsets_to_transaction(..., timeout)` can block for good: its coordinator
request (FindCoordinator for the consumer group) has a timeout field that is never checked,
and when a FindCoordinator answer fails (e.g. just after the broker came back) the request
waits for a broker state change that may never come (confluentinc/librdkafka#5456, open,
fix proposed in PR #5457; reported on 2.14.2; it hung here with 2.16.1, the newest on PyPI). The
Python binding releases the GIL during the call, so it can run on a thread of its own while
the caller waits with a deadline; past it the caller gets `CallTimedOut` and gives the stuck
client up (the thread, and the client it holds, are left to end whenever librdkafka lets go).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class CallTimedOut(Exception):
    """The call did not return within its deadline; the client it used may be stuck."""


class _Outcome(Generic[T]):
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None


def call_within(fn: Callable[[], T], timeout_s: float, what: str) -> T:
    """`fn()`'s result or exception, or `CallTimedOut` once `timeout_s` passed without one."""
    outcome: _Outcome[T] = _Outcome()

    def run() -> None:
        try:
            outcome.value = fn()
        except BaseException as exc:  # handed to the caller below
            outcome.error = exc
        finally:
            outcome.done.set()

    # A daemon: a thread stuck in librdkafka must not keep the process from exiting.
    threading.Thread(target=run, name=f"bounded {what}", daemon=True).start()
    if not outcome.done.wait(timeout_s):
        raise CallTimedOut(f"{what} did not return within {timeout_s:.0f} s")
    if outcome.error is not None:
        raise outcome.error
    return outcome.value  # type: ignore[return-value]
