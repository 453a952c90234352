"""The process-control primitives of the local stack, on throwaway processes and sockets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.stack.config import StackError
from streams.stack.processes import (
    accepts,
    alive,
    args_contain,
    file_lock,
    last_lines,
    pid_if_ours,
    port_free,
    spawn_detached,
    stop,
    tail,
)

_BOUND_S = 10.0


def _wait_for(condition: object, what: str) -> None:
    """Poll `condition()` until true; fail (never hang) after a bound."""
    end = time.monotonic() + _BOUND_S
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_args_contain_needs_consecutive_entries() -> None:
    args = ["redis-server", "--port", "6379", "--dir", "/x"]
    assert args_contain(args, ("--port", "6379"))
    assert not args_contain(args, ("--port", "/x"))
    assert not args_contain(args, ("--dir", "/x", "--extra"))


def test_last_lines_drops_colour_codes_and_blank_lines() -> None:
    text = "\n".join(f"\x1b[31mline {i}\x1b[0m\n   " for i in range(30))
    assert last_lines(text, lines=3) == "line 27\nline 28\nline 29"


def test_tail_labels_each_log_and_skips_missing_or_empty(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("".join(f"a{i}\n" for i in range(5)))
    (tmp_path / "empty.log").write_text("\n")
    logs = [tmp_path / "a.log", tmp_path / "empty.log", tmp_path / "missing.log"]
    assert tail(logs, lines=2) == f"--- last lines of {tmp_path / 'a.log'} ---\na3\na4"
    assert tail([tmp_path / "missing.log"]) == "(no log output)"


def test_a_held_lock_times_out_naming_what_waits(tmp_path: Path) -> None:
    lock = tmp_path / "home" / ".lock"
    with (
        file_lock(lock, time.monotonic() + 1.0, "the first"),
        pytest.raises(StackError, match=f"timed out waiting for the second.*{lock}"),
        file_lock(lock, time.monotonic(), "the second"),
    ):
        pass
    with file_lock(lock, time.monotonic(), "the third"):  # released: taken at once
        pass


def test_port_free_and_accepts_follow_a_listener() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = int(listener.getsockname()[1])
        listener.listen()
        assert not port_free(port)
        assert accepts(port)
    assert port_free(port)
    assert not accepts(port)


@pytest.fixture
def stubborn() -> Iterator[subprocess.Popen[str]]:
    """A child that ignores SIGTERM and says when it is ready."""
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    yield proc
    proc.kill()
    proc.wait()


def test_stop_falls_back_to_sigkill(stubborn: subprocess.Popen[str]) -> None:
    stop([stubborn.pid], timeout_s=0.2)
    assert not alive(stubborn.pid)


def test_pid_if_ours_checks_the_pid_file_and_the_argv(
    tmp_path: Path, stubborn: subprocess.Popen[str]
) -> None:
    pid_file = tmp_path / "x.pid"
    pid_file.write_text(f"{stubborn.pid}\n")
    assert pid_if_ours(pid_file, ("-c",)) == stubborn.pid
    assert pid_if_ours(pid_file, ("--dir", str(tmp_path))) is None  # someone else's process
    pid_file.write_text("not a pid\n")
    assert pid_if_ours(pid_file, ("-c",)) is None
    assert pid_if_ours(tmp_path / "missing.pid", ("-c",)) is None


def test_spawn_detached_is_not_our_child_and_logs_to_the_file(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    code = "import time; print('hello', flush=True); time.sleep(60)"
    pid = spawn_detached([sys.executable, "-c", code], log)
    try:
        _wait_for(lambda: log.exists() and "hello" in log.read_text(), "the spawned output")
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[1])
        assert ppid != os.getpid()
    finally:
        stop([pid], timeout_s=5.0)
    assert not alive(pid)
