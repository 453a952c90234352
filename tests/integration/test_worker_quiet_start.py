"""`streamfer run` started as a new user would: no WARNING and no librdkafka line on stderr
while it scores a topic, the metrics URL it bound, and its summary as JSON on stdout."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import orjson
import pytest

from streams.spec import load_spec
from tests.integration.harness import produce, synthetic, write_spec

pytestmark = pytest.mark.integration

# librdkafka's own lines: `%4|1700000000.123|CONFWARN|rdkafka#producer-1| ...` on stderr
# when no logger is set, or anything naming an rdkafka client.
RDKAFKA_LINE = re.compile(r"^%\d\|\d+\.\d+\||rdkafka", re.MULTILINE)


def test_a_run_prints_no_warning_and_no_librdkafka_line(conn, model_file, unique, tmp_path):
    spec_file = write_spec(tmp_path / "spec.yaml", unique, {"path": str(model_file)})
    prefix = f"p{unique[:4]}"
    spec = load_spec(spec_file, prefix=prefix)  # `--name` runs the prefixed pipeline
    events = synthetic(1500, seed=71)
    assert produce(conn, spec, events) == len(events)

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STREAMFER_RDKAFKA_")},
        "STREAMFER_BOOTSTRAP": conn.bootstrap,
        "STREAMFER_REDIS_URL": conn.redis_url,
    }
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams",
            "run",
            "-s",
            str(spec_file),
            "--name",
            prefix,
            "--max-events",
            str(len(events)),
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert run.returncode == 0, run.stderr
    assert "WARNING" not in run.stderr, run.stderr
    assert not RDKAFKA_LINE.search(run.stderr), run.stderr
    assert re.search(r"^worker 0: metrics on http://[\w.]+:\d+/metrics$", run.stderr, re.M), (
        run.stderr
    )
    summary = orjson.loads(run.stdout.strip().splitlines()[-1])
    assert summary["pipeline"] == spec.name
    assert summary["events"] == summary["predictions"] == len(events)
    assert summary["dead_letters"] == 0
