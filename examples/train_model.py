"""Retrain the ONNX model from a `streamfer dataset` file (see docs/retraining.md).

    streamfer dataset -s SPEC --since 7d -o train.parquet
    python examples/train_model.py -s SPEC train.parquet -o candidate.onnx --metrics m.json
    streamfer model publish candidate.onnx -s SPEC --metrics m.json

Time-ordered split: train on the past, validate on the most recent slice (never shuffled, so
the validation slice is the future the model did not see). Reports accuracy, precision,
recall, F1 and ROC AUC of the candidate and of the model in production (the ONNX scores it
served for the same events), exports the candidate to ONNX with the spec's input signature
(input name and float32 width from `model.inputs`, the score output named `model.output`)
and checks that the exported file scores as scikit-learn does. Needs the `train` extra:
`pip install -e '.[train]'` (scikit-learn, skl2onnx).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def metrics_of(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float | None]:
    """The five classification metrics of scores `p` against labels `y`."""
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    decided = p >= threshold
    positive = y >= 0.5
    both_classes = positive.any() and (~positive).any()
    return {
        "n": len(y),
        "accuracy": float(accuracy_score(positive, decided)),
        "precision": float(precision_score(positive, decided, zero_division=0)),
        "recall": float(recall_score(positive, decided, zero_division=0)),
        "f1": float(f1_score(positive, decided, zero_division=0)),
        "roc_auc": float(roc_auc_score(positive, p)) if both_classes else None,
    }


def time_split(table: Any, valid_fraction: float) -> tuple[Any, Any]:
    """Rows sorted by event time; the last `valid_fraction` of them is the validation slice."""
    table = table.sort_by([("event_time_ms", "ascending"), ("event_id", "ascending")])
    cut = round(table.num_rows * (1 - valid_fraction))
    return table.slice(0, cut), table.slice(cut)


def fit(X: np.ndarray, y: np.ndarray, kind: str, seed: int) -> Any:
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logreg":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    else:
        model = GradientBoostingClassifier(n_estimators=150, max_depth=3, random_state=seed)
    return model.fit(X, y)


def export(model: Any, input_name: str, width: int, output: str, path: Path) -> Path:
    """ONNX with one float32 (batch, width) input and the P(class) output named `output`."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType

    onx = to_onnx(
        model,
        initial_types=[(input_name, FloatTensorType([None, width]))],
        final_types=[("label", Int64TensorType([None])), (output, FloatTensorType([None, 2]))],
        options={id(model): {"zipmap": False}},
        target_opset=17,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onx.SerializeToString())
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="a `streamfer dataset` Parquet file")
    parser.add_argument("-s", "--spec", type=Path, required=True, help="the pipeline spec")
    parser.add_argument("-o", "--output", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--metrics", type=Path, help="write the metrics as JSON here")
    parser.add_argument("--valid-fraction", type=float, default=0.2)
    parser.add_argument("--model", choices=("gbdt", "logreg"), default="gbdt")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import pyarrow.parquet as pq

    from inference.model_ref import ModelLoadError, ModelRef
    from inference.onnx_model import OnnxModel
    from streams.spec import SpecError, load_spec

    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.dataset.is_file():
        print(
            f"error: {args.dataset} does not exist: build it with `streamfer dataset`",
            file=sys.stderr,
        )
        return 2
    if len(spec.model.inputs) != 1:
        print("error: this trainer exports one model input; the spec maps several", file=sys.stderr)
        return 2
    ((input_name, columns),) = spec.model.inputs.items()
    import pyarrow.compute as pc

    table = pq.read_table(args.dataset)
    table = table.filter(pc.is_valid(table.column("label")))  # --unlabelled rows left out
    train, valid = time_split(table, args.valid_fraction)
    if train.num_rows == 0 or valid.num_rows == 0:
        print(f"error: {table.num_rows} labelled rows are too few to split", file=sys.stderr)
        return 2

    def xy(part: Any) -> tuple[np.ndarray, np.ndarray]:
        X = np.column_stack([part.column(c).to_numpy(zero_copy_only=False) for c in columns])
        return X.astype(np.float32), part.column("label").to_numpy(zero_copy_only=False)

    X_train, y_train = xy(train)
    X_valid, y_valid = xy(valid)
    model = fit(X_train, y_train, args.model, args.seed)
    path = export(model, input_name, len(columns), spec.model.output, args.output)

    # The exported file, loaded as a worker loads it, must score as scikit-learn does.
    cpu = spec.model.model_copy(update={"providers": "cpu", "sha256": None})
    names = list(spec.features.names)
    try:
        onnx_model = OnnxModel.load(ModelRef.for_file(spec.model.name, path), cpu, names)
    except ModelLoadError as exc:
        print(f"error: the exported model cannot be served: {exc}", file=sys.stderr)
        return 1
    full = np.column_stack([valid.column(c).to_numpy(zero_copy_only=False) for c in names])
    candidate = onnx_model.predict(full.astype(np.float64))
    expected = model.predict_proba(X_valid)[:, 1]
    if not np.allclose(candidate, expected, atol=1e-4):
        print("error: the exported model does not score as the trained one", file=sys.stderr)
        return 1

    threshold = spec.model.threshold
    served = valid.column("score_onnx").to_numpy(zero_copy_only=False).astype(np.float64)
    has_served = ~np.isnan(served)
    report = {
        "train_rows": train.num_rows,
        "valid_rows": valid.num_rows,
        "valid_from_ms": int(valid.column("event_time_ms")[0].as_py()),
        "candidate": metrics_of(y_valid, candidate, threshold),
        "production": metrics_of(y_valid[has_served], served[has_served], threshold),
    }
    print(f"{'':12}{'candidate':>12}{'production':>12}")
    for metric in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        row = [report["candidate"][metric], report["production"][metric]]
        cells = "".join(f"{v:12.4f}" if v is not None else f"{'-':>12}" for v in row)
        print(f"{metric:12}{cells}")
    print(f"wrote {path} (validated on the last {valid.num_rows} of {table.num_rows} rows)")
    if args.metrics is not None:
        flat = {k: v for k, v in report["candidate"].items() if v is not None}
        flat["production_roc_auc"] = report["production"]["roc_auc"] or 0.0
        args.metrics.write_text(json.dumps(flat, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
