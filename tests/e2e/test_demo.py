"""`streamfer demo`'s adaptation stage on real Kafka and Redis: if the demo stops showing
adaptation across the drift, this fails.

The stage runs as `make demo` runs it — the worker in the demo process, the learner as a
`streamfer learn` process, labels behind their payments, the fraud pattern changing halfway —
on fewer payments, with no STREAMFER_SNAPSHOT_KEY set (the demo brings its own).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from rich.console import Console

from streams.spec import Connections, load_spec
from streams.workloads.demo_adaptation import run_adaptation_demo

pytestmark = pytest.mark.integration

ADAPTIVE_SPEC = Path(__file__).resolve().parents[2] / "examples" / "card-payments-adaptive.yaml"
PAYMENTS = 6000


def test_demo_shows_adaptation_before_and_after_the_drift(
    tmp_path: Path, conn: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STREAMFER_SNAPSHOT_KEY", raising=False)
    spec = load_spec(ADAPTIVE_SPEC)
    # the demo builds its model when the file is missing; here into tmp, not the checkout
    model = spec.model.model_copy(update={"path": str(tmp_path / "card-fraud.onnx")})
    spec = spec.model_copy(update={"model": model})
    log = io.StringIO()

    summary = run_adaptation_demo(spec, conn, PAYMENTS, log=Console(file=log, width=120))

    acc = summary.accuracy
    print({name: (round(a.before, 3), round(a.after, 3)) for name, a in acc.items()})
    assert summary.drift_at == PAYMENTS // 2
    assert summary.before_from < summary.drift_at, "River scored nothing before the drift"
    assert acc["onnx"].before - acc["onnx"].after >= 0.10, "the drift must hurt the ONNX model"
    assert acc["final"].after >= acc["onnx"].after + 0.08, "adaptation must beat ONNX-only"
    assert acc["river"].after >= acc["onnx"].after + 0.08
    assert acc["final"].before >= acc["onnx"].before - 0.02, "River must not hurt before it"
    assert summary.labels_learned == PAYMENTS and summary.labels_expired == 0
    assert summary.versions_loaded, "the worker never scored with a snapshot"
    assert summary.snapshots_published >= summary.versions_loaded[-1]
    assert summary.rejected_snapshots == 0
    # labels follow the predictions and each block waits for them to be learned: the served
    # replica is at most one block behind, so served River is the learner's within 0.01
    assert summary.serving == "replica"
    assert summary.served_river is not None and summary.learner_river is not None
    assert abs(summary.served_river - summary.learner_river) <= 0.01, (
        f"served River {summary.served_river:.3f} vs the learner's {summary.learner_river:.3f}"
    )
    assert any(
        a["kind"] == "output"
        and a["name"] == "onnx"
        and a["event_time_ms"] >= summary.drift_time_ms
        for a in summary.alerts
    ), f"no drift alert on the ONNX error stream after the drift: {summary.alerts}"

    # the key: random for the demo's own processes, said so, and gone afterwards
    assert summary.random_key and "STREAMFER_SNAPSHOT_KEY" not in os.environ
    assert "STREAMFER_SNAPSHOT_KEY is not set" in log.getvalue()

    # what `streamfer demo` prints: before → after for each output
    rows = dict(summary.rows())
    for label in ("ONNX only", "River only", "final (what was served)"):
        (line,) = [v for k, v in rows.items() if k.strip().startswith(label)]
        assert "→" in line
    assert "after the drift" in rows["drift alerts"]
