"""SIGTERM asks a worker to stop; a second one while it stops forces the exit, even while
the main thread is busy (e.g. stuck in a C call)."""

from __future__ import annotations

import os
import signal
import threading

from streams.worker.supervisor import StopSignals


def test_the_first_signal_stops_and_the_second_forces() -> None:
    stopped, forced = threading.Event(), threading.Event()
    seen: list[tuple[str, int]] = []

    def on_stop(signum: int) -> None:
        seen.append(("stop", signum))
        stopped.set()

    def on_force(signum: int) -> None:
        seen.append(("force", signum))
        forced.set()

    with StopSignals(on_stop, on_force):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stopped.wait(5), "the first SIGTERM was not answered"
        os.kill(os.getpid(), signal.SIGINT)
        assert forced.wait(5), "the second signal was not answered"
    assert seen == [("stop", signal.SIGTERM), ("force", signal.SIGINT)]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back as it was
