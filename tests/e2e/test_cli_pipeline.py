"""The whole loop as an operator runs it, command by command: `streamfer produce` (labelled
payments) → `streamfer run` → `streamfer learn` → `streamfer report`, each a real process on
the real broker and Redis, the example spec run under `--name` so nothing collides.

Every number checked is derived from what the commands were asked to do and from the
topics, never typed in.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from streams.spec import Connections, load_spec
from tests.integration.harness import read_json

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "card-payments-adaptive.yaml"
PAYMENTS = 3000
LABEL_DELAY = 50  # rows between a payment and its label


def run_cli(env: dict[str, str], *args: str, timeout_s: float = 300) -> str:
    """Run one `streamfer` command to completion (bounded); returns its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, f"streamfer {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def streamfer(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run one `streamfer` command with `--json`; returns its summary."""
    [line] = [line for line in run_cli(env, *args, "--json").splitlines() if line.strip()]
    return dict(orjson.loads(line))


def test_produce_run_learn_report_from_the_command_line(
    tmp_path: Path, conn: Connections, unique: str
) -> None:
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["model"]["path"] = str(tmp_path / "card-fraud.onnx")
    spec["adaptation"]["snapshot"] = {"every_labels": 100, "every": "1s"}
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    name = f"e2e-{unique}"
    pipeline = load_spec(spec_file, prefix=name)
    env = {
        **os.environ,
        "STREAMFER_BOOTSTRAP": conn.bootstrap,
        "STREAMFER_REDIS_URL": conn.redis_url,
        "STREAMFER_SNAPSHOT_KEY": secrets.token_hex(32),
    }
    common = ("-s", str(spec_file), "--name", name)

    run_cli(env, "demo-model", "-s", str(spec_file), "--events", "4000")
    assert (tmp_path / "card-fraud.onnx").stat().st_size > 0

    produced = streamfer(
        env,
        "produce",
        *common,
        "--synthetic",
        str(PAYMENTS),
        "--label-delay",
        str(LABEL_DELAY),
    )
    assert produced["events"] == PAYMENTS and produced["labels"] == PAYMENTS
    assert produced["topic"] == pipeline.topics.events

    scored = streamfer(env, "run", *common, "--max-events", str(PAYMENTS), "--idle-exit", "30")
    assert scored["events"] == PAYMENTS
    assert scored["predictions"] + scored["dead_letters"] == PAYMENTS
    predictions = read_json(conn, pipeline.topics.predictions, expected=scored["predictions"])
    assert len({p["event_id"] for p in predictions}) == scored["predictions"]

    run_cli(env, "learn", *common, "--web-port", "0", "--idle-exit", "15")

    report = streamfer(env, "report", *common, "-o", str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 0
    # Every label joined one served prediction; the learner learned every label.
    assert report["served_join"]["labels"] == PAYMENTS
    assert report["served_join"]["joined"] == scored["predictions"]
    assert report["total"]["served"]["labels"] == scored["predictions"]
    assert report["total"]["learner"]["labels"] == scored["predictions"]
    served = {p["event_id"]: p["decision"] for p in predictions}
    labels = read_json(conn, pipeline.topics.labels, expected=PAYMENTS)
    correct = sum(
        served[x["event_id"]] == bool(x["label"]) for x in labels if x["event_id"] in served
    )
    assert report["total"]["served"]["final"]["accuracy"] == pytest.approx(correct / len(served))
