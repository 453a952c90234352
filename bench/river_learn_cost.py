"""Learn cost per label of the River models a replica repeats (docs/adaptation.md).

    python -m bench.river_learn_cost [--labels 5000]

`learn_one` on weather.csv rows (8 features + an `onnx_score` column), as a replica applies
the examples log: the cost every worker pays per label in `adaptation.serving: replica`.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Any

from inference.adaptation.modes import AdaptationTask
from inference.adaptation.river_build import build_river_model

WEATHER = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "weather.csv"
MODELS: dict[str, tuple[Any, ...]] = {
    "StandardScaler + LogisticRegression": (
        "preprocessing.StandardScaler",
        "linear_model.LogisticRegression",
    ),
    "HoeffdingAdaptiveTreeClassifier": ("tree.HoeffdingAdaptiveTreeClassifier",),
    "ARFClassifier(10)": ({"forest.ARFClassifier": {"n_models": 10, "seed": 1}},),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=5000)
    n = parser.parse_args().labels
    with WEATHER.open() as f:
        rows = list(csv.reader(f))[1 : n + 1]
    xs = [
        {f"feat_{i + 1}": float(v) for i, v in enumerate(r[:8])} | {"onnx_score": 0.5} for r in rows
    ]
    ys = [r[8] == "1" for r in rows]
    for name, steps in MODELS.items():
        model = build_river_model(steps, AdaptationTask.CLASSIFICATION)
        started = time.perf_counter()
        for x, y in zip(xs, ys, strict=True):
            model.learn_one(x, y)
        per_label = (time.perf_counter() - started) / len(xs)
        print(f"{name}: {per_label * 1e6:.0f} µs per label ({len(xs)} labels)", flush=True)


if __name__ == "__main__":
    main()
