"""`streamfer demo`'s retraining stage on real Kafka and Redis: after the drift River adapts,
then dataset → train → publish → shadow → promote, and the ONNX model's accuracy recovers;
if the demo stops showing that, this fails."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
from rich.console import Console

from streams.spec import Connections, load_spec
from streams.workloads.demo_retraining import POINTS, run_retraining_demo

pytestmark = pytest.mark.integration

ADAPTIVE_SPEC = Path(__file__).resolve().parents[2] / "examples" / "card-payments-adaptive.yaml"
PAYMENTS = 5000


def test_retraining_recovers_the_onnx_model_after_the_drift(
    tmp_path: Path, conn: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STREAMFER_SNAPSHOT_KEY", raising=False)
    monkeypatch.delenv("STREAMFER_MODEL_KEY", raising=False)
    spec = load_spec(ADAPTIVE_SPEC)
    model = spec.model.model_copy(update={"path": str(tmp_path / "card-fraud.onnx")})
    spec = spec.model_copy(update={"model": model})
    log = io.StringIO()
    summary = run_retraining_demo(spec, conn, PAYMENTS, log=Console(file=log, width=120))

    acc = {point: summary.accuracy[point] for point in POINTS}
    print({p: {o: round(v, 3) for o, v in a.items()} for p, a in acc.items()})
    before, drifted, adapted, retrained = (acc[p] for p in POINTS)
    assert before["onnx"] - drifted["onnx"] >= 0.10, "the drift must hurt the ONNX model"
    assert adapted["final"] >= adapted["onnx"] + 0.08, "River must adapt before retraining"
    assert retrained["onnx"] >= drifted["onnx"] + 0.10, "retraining must recover ONNX"
    assert summary.versions == ("1", "2")
    assert summary.dataset_rows > 0 and 0 < summary.trained_on < summary.dataset_rows
    shadow = summary.shadow
    # the learner measured the shadow on labelled payments it scored (the metrics table is
    # read from its changelog, which may trail the last labels by a flush)
    assert 0 < shadow["labels"] <= PAYMENTS // 5, shadow
    assert math.isclose(shadow["shadow"]["n"], shadow["active"]["n"])
    assert shadow["learner_gauges"], "the learner's /metrics must carry the shadow's metrics"
    lines = dict(summary.rows())
    assert all(f"  {p}" in lines for p in POINTS)
