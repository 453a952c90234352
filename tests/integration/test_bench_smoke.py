"""`python -m bench` end to end at toy size: passthrough and one streamfer worker."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bench.suite import Options, run_suite

pytestmark = pytest.mark.integration


def test_a_tiny_run_drains_every_event_and_writes_json_markdown_and_plots(conn, tmp_path: Path):
    options = Options(
        events=2_000,
        systems=("passthrough", "streamfer-1w"),
        loads=(),
        profile=False,
        out=tmp_path,
    )

    result = run_suite(options, conn)

    written = json.loads((tmp_path / "results.json").read_text())
    for key in ("date", "command", "machine", "config", "prefill", "drain", "drain_summary"):
        assert key in written
    rows = {r["system"]: r for r in written["drain"]}
    assert set(rows) == {"passthrough", "streamfer-1w"}
    for row in rows.values():
        assert row["complete"], row["error"]
        assert row["predictions"] == 2_000
        assert row["events_per_s"] > 0 and row["seconds"] > 0
        assert sum(r["events"] for r in row["reports"]) == 2_000
    streamfer = rows["streamfer-1w"]["reports"][0]
    assert set(streamfer["stages"]) >= {"decode", "features", "inference", "encode", "produce"}
    assert "streamfer-1w/passthrough" in written["ratios"]
    assert written["stages"]["features"] > 0
    table = (tmp_path / "results.md").read_text()
    assert "| streamfer-1w | 1 | 2,000 |" in table and "| passthrough | 1 | 2,000 |" in table
    if importlib.util.find_spec("matplotlib") is not None:  # the `bench` extra
        assert "drain.png" in result["plots"]
        assert (tmp_path / "drain.png").stat().st_size > 0
