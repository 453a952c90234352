"""ensure_topics: the examples log is created with one partition and a retention tied to
the checkpoint interval (what a replica or a restarted learner may still read)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from inference.adaptation.snapshots import SNAPSHOT_GRACE_S
from streams.ops import topics
from streams.spec import Connections, load_spec

WEATHER = Path(__file__).resolve().parents[4] / "examples" / "weather.yaml"


class FakeAdmin:
    """Records what ensure_topics asks to create; `existing` topics are listed."""

    def __init__(self, existing: set[str]) -> None:
        self.existing = existing
        self.created: list[Any] = []

    def list_topics(self, timeout: float) -> Any:
        return type("Meta", (), {"topics": {n: None for n in self.existing}})()

    def create_topics(self, wanted: list[Any], operation_timeout: float) -> dict[str, Any]:
        self.created.extend(wanted)
        done = type("Done", (), {"result": lambda self: None})
        return {t.topic: done() for t in wanted}


def spec_with_examples(tmp_path: Path, every: str) -> Any:
    raw = yaml.safe_load(WEATHER.read_text())
    raw["topics"]["examples"] = "weather.examples"
    raw["adaptation"]["snapshot"] = {"every_labels": 100, "every": every}
    raw["model"]["path"] = str(tmp_path / "m.onnx")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)


@pytest.mark.parametrize("every", ["2s", "30m"])
def test_examples_log_is_one_partition_with_retention_from_the_checkpoint_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, every: str
) -> None:
    spec = spec_with_examples(tmp_path, every)
    admin = FakeAdmin(existing={spec.topics.events})
    monkeypatch.setattr(topics, "admin_for", lambda _conn: admin)

    topics.ensure_topics(Connections(), spec)

    created = {t.topic: t for t in admin.created}
    assert spec.topics.events not in created  # existing topics are left as they are
    log = created["weather.examples"]
    assert log.num_partitions == 1
    lifetime_ms = spec.adaptation.snapshot.every + SNAPSHOT_GRACE_S * 1000
    retention = int(log.config["retention.ms"])
    # every checkpoint a worker may load (the newest, or the previous during its grace)
    # stays readable several times over, and never less than an hour
    assert retention >= topics.EXAMPLES_KEEP_CHECKPOINTS * lifetime_ms
    assert retention >= topics.EXAMPLES_MIN_RETENTION_MS
    assert retention == max(
        topics.EXAMPLES_KEEP_CHECKPOINTS * lifetime_ms, topics.EXAMPLES_MIN_RETENTION_MS
    )
    # whole segments are deleted: they roll well within the retention
    assert 0 < int(log.config["segment.ms"]) < retention
    assert log.config["cleanup.policy"] == "delete"
    for other in (spec.topics.predictions, spec.topics.labels):
        assert not created[other].config  # only the examples log gets this retention


def test_a_longer_checkpoint_interval_keeps_the_log_longer() -> None:
    short = int(topics.examples_log_config(1_000)["retention.ms"])
    hour = 3_600_000
    long = int(topics.examples_log_config(2 * hour)["retention.ms"])
    assert long > short
    assert long >= topics.EXAMPLES_KEEP_CHECKPOINTS * 2 * hour
