"""`streamfer learn` as a child process, watched through its status view (`/adaptation/`).

`streamfer demo` runs its learner this way, and so do the tests that SIGKILL and restart
one: the learner is a faust app that owns its event loop and exits the interpreter when
done, so a process of its own is how it is run next to a worker.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from streams.spec import Connections


class LearnerProcessError(Exception):
    """The learner exited or did not reach a state in time; the message has its log's tail."""


class LearnerProcess:
    """`python -m streams learn -s SPEC` on a free port, its output in `workdir/learner.log`.

    `workdir` is also its working directory: faust keeps its data folder there, not in the
    caller's checkout. `args` are extra `streamfer learn` options, `env` extra variables.
    """

    def __init__(
        self,
        spec_file: Path,
        connections: Connections,
        workdir: Path,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.log_file = workdir / "learner.log"
        environment = {
            **os.environ,
            "STREAMFER_BOOTSTRAP": connections.bootstrap,
            "STREAMFER_REDIS_URL": connections.redis_url,
            **(env or {}),
        }
        command = [sys.executable, "-m", "streams", "learn", "-s", str(spec_file)]
        with self.log_file.open("ab") as log_out:
            self.proc = subprocess.Popen(
                [*command, "--web-port", str(self.port), *args],
                env=environment,
                cwd=workdir,
                stdout=log_out,
                stderr=subprocess.STDOUT,
            )

    def status(self) -> dict[str, Any] | None:
        """The learner's `/adaptation/` view, or None while it does not answer."""
        try:
            url = f"http://127.0.0.1:{self.port}/adaptation/"
            with urllib.request.urlopen(url, timeout=5) as response:
                return dict(orjson.loads(response.read()))
        except OSError:
            return None

    def wait(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float, what: str
    ) -> dict[str, Any]:
        """Poll the status view until `predicate` holds; the learner's log on failure."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise LearnerProcessError(
                    f"the learner exited ({self.proc.returncode}) before {what}:\n{self.log_tail()}"
                )
            status = self.status()
            if status is not None and predicate(status):
                return status
            if time.monotonic() > deadline:
                raise LearnerProcessError(
                    f"timed out after {timeout_s:.0f}s waiting for {what}; last learner status: "
                    f"{status}\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_file.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def kill(self) -> None:
        """SIGKILL: no last snapshot, no leaving the group (what a crash looks like)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        """SIGTERM: the learner publishes a last snapshot and leaves its group."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
