"""bench/gpu.py in its CI setting: --tiny on whatever this machine has (CPU at least)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import gpu


def test_tiny_run_measures_both_models_on_cpu_with_and_without_io_binding(tmp_path: Path):
    result = gpu.main(["--tiny", "--out", str(tmp_path)])

    cpu_rows = [r for r in result["rows"] if r["provider"] == "cpu"]
    seen = {(r["model"], r["io_binding"], r["batch"]) for r in cpu_rows}
    assert seen == {
        (model, mode, batch)
        for model in ("demo", "mlp-2x64")
        for mode in ("off", "on")
        for batch in gpu.TINY_BATCH_SIZES
    }
    for row in cpu_rows:
        assert row["runs"] >= 3
        assert 0 < row["p50_ms"] <= row["p99_ms"]
        assert row["rows_per_s"] > 0
    # CUDA rows exist exactly when CUDA was usable; otherwise the reason is recorded.
    has_cuda = any(r["provider"] == "cuda" for r in result["rows"])
    assert has_cuda != bool(result["cuda_skipped"])
    assert "gpu" in result and "name" in result["gpu"]

    written = json.loads((tmp_path / "gpu.json").read_text())
    assert written["rows"] == result["rows"]
    table = (tmp_path / "gpu.md").read_text()
    assert "| model | provider | IO binding | batch | p50 ms | p99 ms | rows/s |" in table
    assert table.count("| demo | cpu |") == 2 * len(gpu.TINY_BATCH_SIZES)
    assert "GPU: " in table


def test_the_large_mlp_is_eight_layers_of_2048(tmp_path: Path):
    import onnx

    model = gpu.large_mlp(tmp_path, tiny=False)
    graph = onnx.load(str(model.path)).graph
    gemms = [n for n in graph.node if n.op_type == "Gemm"]
    assert len(gemms) == 9  # 8 hidden layers + the output layer
    widths = {tuple(i.dims) for i in graph.initializer if i.name.startswith("w")}
    assert (2048, 2048) in widths and (2048, 1) in widths
    assert model.width == 2048
