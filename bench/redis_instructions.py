"""`python -m bench.redis_instructions`: machine instructions Redis runs per event, per script.

On a shared virtual machine the CPU time of the same feature script on the same batches
varies by ±15% from one minute to the next (measured 2026-12-01: 14.9 to 30.1 µs/event of
Redis CPU for one version, idle machine, load average < 1), far more than most changes to
the script. An instruction count does not: this runs a private redis-server under
valgrind's cachegrind (instructions only, no cache model), feeds it the workload of
`bench.feature_store` (one round, the version as base and candidate: 2 × `--events`
events, plus `--history`), and prints the instructions the whole server executed, per event
measured. Counts repeat within ~1% (hash seeds differ per start); valgrind runs Redis about
50× slower, so keep `--events` near 10,000–20,000. Compare versions by their counts;
convert to time only with a timing run of `bench.feature_store` beside it.

Needs `valgrind` (Debian: `apt-get install valgrind`) and `redis-server` on PATH; starts its
server with the stack's persistence settings (AOF, fsync once a second) on a free port.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench.feature_store import SCRIPT_PATH


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def count(version: str, bench_args: list[str], events: int) -> int:
    """Instructions redis-server executed while `bench.feature_store` fed it `version`."""
    for tool in ("valgrind", "redis-server"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not on PATH (Debian: apt-get install {tool})")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="sf-instructions-") as tmp:
        out = Path(tmp) / "cachegrind.out"
        log = Path(tmp) / "valgrind.log"
        server = subprocess.Popen(
            ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}",
             "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp,
             "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
             "--logfile", str(Path(tmp) / "redis.log")],
            stdout=log.open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        client = redis.Redis(port=port, socket_timeout=5)
        fed_ok = False
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(
                            f"redis-server under valgrind did not start: {log}"
                        ) from None
                    time.sleep(0.1)
            env = {**os.environ, "STREAMFER_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
            command = [sys.executable, "-m", "bench.feature_store", "--base", version]
            command += ["--candidate", version, "--rounds", "1", "--events", str(events)]
            fed = subprocess.run(command + bench_args, env=env, capture_output=True, text=True)
            if fed.returncode != 0:
                raise SystemExit(f"bench.feature_store failed:\n{fed.stdout}{fed.stderr}")
            fed_ok = True
            client.shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # SHUTDOWN closes the connection
        finally:
            client.close()
            if server.poll() is None and fed_ok is False:
                server.terminate()
            server.wait(timeout=120)
        found = re.search(r"I\s+refs:\s+([\d,]+)", log.read_text())
        if found is None:
            raise SystemExit(f"no instruction count in {log}")
        return int(found.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.redis_instructions", description=__doc__)
    p.add_argument("versions", nargs="*", default=["HEAD", SCRIPT_PATH],
                   help="git revisions or files of features.lua (default: HEAD and the "
                   "working tree's)")  # fmt: skip
    p.add_argument("--events", type=int, default=20_000, help="events per feed (two feeds)")
    args, bench_args = p.parse_known_args(argv)
    print(f"{args.events} events × 2, bench.feature_store {' '.join(bench_args) or '(defaults)'}")
    first = None
    for version in args.versions:
        total = count(version, bench_args, args.events)
        per_event = total / (2 * args.events)
        first = first or per_event
        print(f"{version:40} {total:>16,} instructions  {per_event:>10,.0f} per event  "
              f"×{per_event / first:.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
