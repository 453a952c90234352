"""Process-control primitives of the local stack: pids, detached spawns, ports, logs, locks.

Nothing here knows Kafka or Redis; `LocalStack` composes these into up/down/status.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from streams.stack.config import LOCALHOST, StackError

LOG_TAIL_LINES = 20
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def alive(pid: int) -> bool:
    """Whether `pid` is a live (not zombie) process; reaps it if it is our dead child."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # An orphan whose parent never reaps it lingers as a zombie: it is gone for our purposes.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def process_args(pid: int) -> list[str] | None:
    """The argv of a process, or None when it cannot be read (gone, or no /proc and no ps)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return None
    except OSError:
        return None
    else:
        return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]
    try:  # no procfs (macOS): ps splits on spaces, good enough for our own paths
        out = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        return None
    return out.split() or None


def args_contain(args: list[str], marker: tuple[str, ...]) -> bool:
    """Whether `marker` occurs in `args` as consecutive entries."""
    n = len(marker)
    return any(tuple(args[i : i + n]) == marker for i in range(len(args) - n + 1))


def pid_if_ours(pid_file: Path, marker: tuple[str, ...]) -> int | None:
    """The pid in `pid_file` if that process is alive and its argv holds `marker`.

    Checking the argv (which names a path only we use) guards against a stale pid file
    whose pid the OS has since given to an unrelated process.
    """
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid <= 0 or not alive(pid):
        return None
    args = process_args(pid)
    if args is None:
        return None
    return pid if args_contain(args, marker) else None


def spawn_detached(args: list[str], log: Path) -> int:
    """Start `args` in a new session, reparented to init, stdout+stderr appended to `log`.

    A throwaway shell starts the command in the background and exits, so the service is not
    our child: it survives the caller and never lingers as our zombie.
    """
    script = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'
    launcher = subprocess.run(
        ["/bin/sh", "-c", script, "streamfer-launch", str(log), *args],
        capture_output=True,
        text=True,
        start_new_session=True,
        check=False,
    )
    pid = launcher.stdout.strip()
    if launcher.returncode != 0 or not pid.isdigit():
        raise StackError(f"could not start {args[0]}: {launcher.stderr.strip() or pid}")
    return int(pid)


def stop(pids: list[int], timeout_s: float) -> None:
    """SIGTERM `pids`, wait up to `timeout_s`, then SIGKILL the ones still alive."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        running = [pid for pid in pids if alive(pid)]
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        end = time.monotonic() + wait_s
        while running and time.monotonic() < end:
            time.sleep(0.05)
            running = [pid for pid in running if alive(pid)]
        if not running:
            return
    raise StackError(f"processes {pids} did not exit after SIGKILL")


def port_free(port: int) -> bool:
    """Whether 127.0.0.1:`port` can be bound (a listener on 0.0.0.0 also makes it busy)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOCALHOST, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def accepts(port: int, timeout_s: float = 0.25) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection((LOCALHOST, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def last_lines(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last non-blank `lines` lines of a tool's output, without terminal colour codes."""
    kept = [line for line in _ANSI_RE.sub("", text).splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def tail(paths: list[Path], lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of each existing, non-empty log, labelled by file name."""
    parts = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if text.strip():
            body = "\n".join(text.rstrip("\n").splitlines()[-lines:])
            parts.append(f"--- last lines of {path} ---\n{body}")
    return "\n".join(parts) if parts else "(no log output)"


@contextlib.contextmanager
def file_lock(path: Path, deadline: float, what: str) -> Iterator[None]:
    """An exclusive flock on `path`, so concurrent `up`/`down`/jar fetches take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StackError(f"timed out waiting for {what} (lock {path})") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_until(
    command: list[str],
    deadline: float,
    what: str,
    fix: str = "",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion by the monotonic `deadline` (at least 1 s), its output
    captured; a StackError "`what` timed out[: `fix`]" when it does not finish in time.
    `env` is the tool's whole environment (None: ours), e.g. with a password for it."""
    try:
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=max(deadline - time.monotonic(), 1.0),
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{what} timed out" + (f": {fix}" if fix else "")) from exc
