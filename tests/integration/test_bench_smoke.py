"""`python -m bench` end to end at toy size: passthrough and one streamfer worker, against the
single Redis and against the session's Redis Cluster (given as STREAMFER_BENCH_CLUSTER_URL)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bench.suite import Options, run_suite
from features.redis_connect import connect

pytestmark = pytest.mark.integration


def test_a_tiny_run_drains_every_event_and_writes_json_markdown_and_plots(
    conn, redis_cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("STREAMFER_BENCH_CLUSTER_URL", redis_cluster.url)
    monkeypatch.setenv("STREAMFER_BENCH_CLUSTER_ADMIN_URL", redis_cluster.admin_url)
    options = Options(
        events=2_000,
        systems=("passthrough", "streamfer-1w"),
        loads=(),
        profile=False,
        out=tmp_path,
        redis_cluster=True,
    )

    result = run_suite(options, conn)

    written = json.loads((tmp_path / "results.json").read_text())
    for key in ("date", "command", "machine", "config", "prefill", "drain", "drain_summary"):
        assert key in written
    rows = {r["system"]: r for r in written["drain"]}
    assert set(rows) == {"passthrough", "streamfer-1w", "streamfer-1w@cluster"}
    for row in rows.values():
        assert row["complete"], row["error"]
        assert row["redis_cpu_s"] >= 0 and row["redis_cpu_us_per_event"] >= 0
        assert row["predictions"] == 2_000
        assert row["events_per_s"] > 0 and row["seconds"] > 0
        assert sum(r["events"] for r in row["reports"]) == 2_000
    streamfer = rows["streamfer-1w"]["reports"][0]
    assert set(streamfer["stages"]) >= {"decode", "features", "inference", "encode", "produce"}
    cluster = rows["streamfer-1w@cluster"]
    assert cluster["redis"] == "cluster" and len(cluster["node_cpu_us_per_event"]) == 3
    assert cluster["redis_cpu_us_per_event"] == pytest.approx(sum(cluster["node_cpu_us_per_event"]))
    assert cluster["redis_cpu_s"] > 0  # the features of 2,000 events cost the cluster CPU
    assert "streamfer-1w/passthrough" in written["ratios"]
    for url in (redis_cluster.admin_url, conn.redis_url):  # every run's keys given back
        client = connect(url)
        try:
            assert not list(client.scan_iter(match=f"*bench-{written['config']['token']}-*"))
        finally:
            client.close()
    assert "streamfer-1w@cluster/streamfer-1w" in written["ratios"]
    assert written["stages"]["features"] > 0
    table = (tmp_path / "results.md").read_text()
    for system, row in rows.items():
        assert f"| {system} | {row['redis']} | 1 | 2,000 |" in table
    if importlib.util.find_spec("matplotlib") is not None:  # the `bench` extra
        assert "drain.png" in result["plots"]
        assert (tmp_path / "drain.png").stat().st_size > 0
