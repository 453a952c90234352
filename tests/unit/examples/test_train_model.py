"""examples/train_model.py: a time-ordered split of a dataset file, both models' metrics on
the validation slice, and an ONNX file a worker of the spec can serve."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from inference.rollout import check_servable
from streams.learner.bounded_reader import TopicRecord
from streams.ops.dataset import build_table
from streams.spec import load_spec
from streams.workloads.demo_model import training_set

ROOT = Path(__file__).parents[3]
SPEC_FILE = ROOT / "examples" / "card-payments.yaml"


def trainer():
    spec = importlib.util.spec_from_file_location("train_model", ROOT / "examples/train_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dataset(path: Path, n: int) -> Path:
    spec = load_spec(SPEC_FILE)
    X, y = training_set(spec, n, seed=4)
    columns = list(spec.model.feature_columns)
    features, predictions, labels = [], [], []
    for i, (row, label) in enumerate(zip(X.tolist(), y.tolist(), strict=True)):
        values = dict.fromkeys(spec.features.names, 0.0) | dict(zip(columns, row, strict=True))
        event_id = f"e{i:06d}"
        features.append(
            orjson.dumps({"event_id": event_id, "event_time": 1000 * i, "features": values})
        )
        predictions.append(
            orjson.dumps({"event_id": event_id, "score": 0.5, "scores": {"onnx": 0.5}})
        )
        labels.append(TopicRecord(0, i, None, orjson.dumps({"event_id": event_id, "label": label})))
    pq.write_table(build_table(spec.features.names, features, predictions, labels), path)
    return path


def test_trains_on_the_past_validates_on_the_recent_slice_and_exports(tmp_path: Path) -> None:
    data = dataset(tmp_path / "train.parquet", 3000)
    out, metrics = tmp_path / "candidate.onnx", tmp_path / "metrics.json"
    args = [str(data), "-s", str(SPEC_FILE), "-o", str(out), "--metrics", str(metrics)]
    assert trainer().main([*args, "--valid-fraction", "0.25"]) == 0
    spec = load_spec(SPEC_FILE)
    check_servable(out, spec.model, spec.features.names)  # raises if not servable
    report = json.loads(metrics.read_text())
    assert report["n"] == 750  # the last quarter
    assert report["roc_auc"] > 0.6  # the constant production score has 0.5
    assert report["production_roc_auc"] == 0.5


def test_the_split_keeps_time_order() -> None:
    import pyarrow as pa

    table = pa.table({"event_time_ms": [5, 1, 4, 2, 3], "event_id": list("abcde")})
    train, valid = trainer().time_split(table, 0.4)
    assert train.column("event_time_ms").to_pylist() == [1, 2, 3]
    assert valid.column("event_time_ms").to_pylist() == [4, 5]
