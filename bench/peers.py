"""The Python environments the peers run in.

Faust runs in the project's environment (faust-streaming is a dependency). Quix Streams
pins `confluent-kafka<2.13`, older than the one streamfer is tested with, so it gets a
virtual environment of its own under `$STREAMFER_HOME/bench/quix-venv` (default
`.streamfer/bench/quix-venv`), built on first use with pinned versions; the repository
root goes on its PYTHONPATH so the runner imports the same `features`/`streams` code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.workload import REPO

QUIX_REQUIREMENTS = (
    "quixstreams==3.28.1",
    "redis[hiredis]==8.1.0",
    "onnxruntime==1.31.1",
    "numpy==2.4.6",
    "orjson==3.13.0",
    "PyYAML==6.0.4",
)


def home() -> Path:
    return Path(os.environ.get("STREAMFER_HOME", REPO / ".streamfer"))


def quix_python(*, create: bool = True) -> Path:
    """The Quix Streams environment's interpreter, built (a minute, once) when missing."""
    venv = home() / "bench" / "quix-venv"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    wanted = "\n".join(QUIX_REQUIREMENTS)
    if marker.exists() and marker.read_text() == wanted:
        return python
    if not create:
        raise FileNotFoundError(f"no Quix Streams environment at {venv}")
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *QUIX_REQUIREMENTS],
        check=True,
    )
    marker.write_text(wanted)
    return python


def python_for(venv: str) -> Path:
    if venv == "quix":
        return quix_python()
    return Path(sys.executable)


def environment() -> dict[str, str]:
    """The runners' environment: the repository importable, no stray Kafka settings."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env
