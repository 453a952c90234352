"""Every /metrics endpoint passes `promtool check metrics` (Debian's prometheus package).

The worker is scraped after it has scored events and dead-lettered a bad one, so every
labelled series (stages, dead-letter reasons, lag per partition, model info) is exported.
The learner is scraped after it has learned labels across a drift and published snapshots,
so its labelled series (prequential metrics per output, label outcomes, drift alerts,
adaptation info) are exported too.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streams.spec import Connections
from tests.integration.harness import make_spec, produce, start_worker, synthetic, wait_for
from tests.integration.test_learner import (
    SNAPSHOT_KEY,
    ScoringLoop,
    produce_labels,
    setup_pipeline,
    start_learner,
)

pytestmark = pytest.mark.integration


def promtool_check(exposition: bytes) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (make prerequisites)"
    return subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition.decode(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_worker_metrics_pass_promtool(conn, model_file, unique):
    spec = make_spec(unique, {"path": str(model_file)})
    good = produce(conn, spec, synthetic(500, seed=31))
    producer = Producer(conn.kafka_config())
    producer.produce(spec.topics.events, b"not json")
    assert producer.flush(10) == 0
    worker = start_worker(spec, conn)
    try:
        port = worker.worker.metrics.serve("127.0.0.1", 0)
        total = good + 1
        wait_for(lambda: worker.worker.stats.events_in >= total, 60, "the worker to score")
        # librdkafka's statistics (consumer lag per partition) arrive every 5 s.
        wait_for(lambda: b"streamfer_consumer_lag{" in scrape(port), 30, "per-partition lag series")
        exposition = scrape(port)
    finally:
        worker.stop()
        worker.join()
    for family in (b"streamfer_dead_letters_total{", b"streamfer_stage_seconds_bucket{"):
        assert family in exposition
    result = promtool_check(exposition)
    assert result.returncode == 0, result.stdout + result.stderr


def test_learner_metrics_pass_promtool(
    tmp_path: Path, conn: Connections, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMFER_SNAPSHOT_KEY", SNAPSHOT_KEY)
    # An abrupt drift at row 800 of 1500, so the drift counter gets its labelled series.
    spec, spec_file, rows = setup_pipeline(tmp_path, unique, 1500, 800, 300)
    ScoringLoop(spec, conn, alert=lambda a: None).score(rows)
    learner = start_learner(spec_file, conn)
    try:
        learner.wait(lambda s: True, 60, "the learner's web view")
        produce_labels(conn, spec, rows)
        learner.wait(
            lambda s: s["labels_seen"] >= len(rows) and s["pending"] == 0,
            120,
            "every label learned",
        )
        wait_for(
            lambda: b"streamfer_adaptation_info{" in scrape(learner.port),
            30,
            "a published snapshot in the learner's metrics",
        )
        exposition = scrape(learner.port)
    finally:
        learner.stop()
    for family in (
        b"streamfer_prequential_accuracy{",
        b"streamfer_learner_labels_total{",
        b"streamfer_learner_prequential_overall{",
        b"streamfer_drift_alerts_total{",
    ):
        assert family in exposition, family
    result = promtool_check(exposition)
    assert result.returncode == 0, result.stdout + result.stderr


def scrape(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return bytes(response.read())


def test_promtool_rejects_a_badly_named_counter():
    """The check has teeth: a counter without `_total` is reported."""
    bad = b"# HELP jobs Jobs done\n# TYPE jobs counter\njobs 3\n"
    result = promtool_check(bad)
    assert result.returncode != 0
    assert "_total" in result.stdout + result.stderr


def test_the_alert_rules_in_the_operators_guide_are_valid(tmp_path):
    """docs/operations.md carries the alert rules operators copy: promtool must accept them."""
    guide = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    block = guide.split("<!-- alert-rules -->", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    rules = tmp_path / "streamfer.rules.yml"
    rules.write_text(block)
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (make prerequisites)"
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    declared = sum(1 for line in block.splitlines() if line.strip().startswith("- alert:"))
    assert declared > 0 and f"SUCCESS: {declared} rules found" in result.stdout
