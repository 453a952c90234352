"""ONNX Runtime on CUDA against CPU: throughput and latency per batch size.

    python bench/gpu.py [--tiny] [--out DIR] [--demo-model PATH]

Two models: the demo model (`examples/models/card-fraud.onnx` when present, else an MLP of
the same shape, 15 → 16 → 1, with random weights) and a large MLP (8 layers of 2048,
float32, random weights, built here with onnx.helper). For each execution provider (CUDA
when a GPU is usable, CPU always), IO binding off and on, and each batch size from 1 to
4096: warm-up, then timed runs; per-batch latency p50/p99 and rows per second.

IO binding modes: `off` = `session.run` with numpy arrays (ORT copies in and out);
`on` = what streamfer does on CUDA: the batch copied to the device into an OrtValue, the
output bound on the device and copied back once; `resident` (CUDA only) = input already
on the device and output left there, i.e. the compute alone.

CUDA runs twice: `cuda` in exact float32 (ORT's `use_tf32=0`, streamfer's default) and
`cuda-tf32` (TensorFloat-32 matmuls, `model.tf32: true`); each row gives the largest
difference from the CPU's scores on 1024 random rows, so the speed and the accuracy cost
of TF32 are read off the same table.

Depends only on numpy, onnx and onnxruntime (no streamfer imports), so it runs on a bare
GPU machine with onnxruntime-gpu. Without a usable GPU the CUDA rows are skipped (the
reason is recorded) and the CPU rows still run; `--tiny` (two batch sizes, a small MLP,
short timings) is what CI runs. The card (nvidia-smi, else torch) is named in the output.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
BATCH_SIZES = (1, 4, 16, 64, 256, 1024, 4096)
TINY_BATCH_SIZES = (1, 64)
REPO = Path(__file__).resolve().parent.parent
DEMO_MODEL = REPO / "examples" / "models" / "card-fraud.onnx"


@dataclass(frozen=True)
class Model:
    """A model under test: its file and the width of its single float32 input."""

    name: str
    path: Path
    input_name: str
    width: int
    note: str


def mlp(path: Path, *, width: int, depth: int, inputs: int, seed: int = 0) -> Path:
    """An MLP of `depth` ReLU layers of `width` units and a sigmoid output, random weights."""
    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    previous, size = "x", inputs
    for i in range(depth):
        w = rng.standard_normal((size, width), dtype=np.float32) * np.float32(np.sqrt(2 / size))
        b = np.zeros(width, dtype=np.float32)
        initializers += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [
            helper.make_node("Gemm", [previous, f"w{i}", f"b{i}"], [f"g{i}"]),
            helper.make_node("Relu", [f"g{i}"], [f"h{i}"]),
        ]
        previous, size = f"h{i}", width
    w = rng.standard_normal((size, 1), dtype=np.float32) * np.float32(np.sqrt(1 / size))
    initializers += [
        numpy_helper.from_array(w, "w_out"),
        numpy_helper.from_array(np.zeros(1, dtype=np.float32), "b_out"),
    ]
    nodes += [
        helper.make_node("Gemm", [previous, "w_out", "b_out"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        f"mlp_{depth}x{width}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", inputs])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n", 1])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def demo_model(workdir: Path, path: Path | None) -> Model:
    """The demo model file if there is one, else an MLP of its shape (15 → 16 → 1)."""
    path = path or DEMO_MODEL
    if path.exists():
        graph = onnx.load(str(path)).graph
        arg = graph.input[0]
        width = arg.type.tensor_type.shape.dim[1].dim_value
        return Model("demo", path, arg.name, width, f"{path.name} (trained demo model)")
    built = mlp(workdir / "demo-shaped.onnx", width=16, depth=1, inputs=15, seed=1)
    return Model("demo", built, "x", 15, "demo-shaped MLP 15→16→1, random weights")


def large_mlp(workdir: Path, *, tiny: bool) -> Model:
    width, depth = (64, 2) if tiny else (2048, 8)
    path = mlp(workdir / f"mlp-{depth}x{width}.onnx", width=width, depth=depth, inputs=width)
    return Model(f"mlp-{depth}x{width}", path, "x", width, f"{depth} ReLU layers of {width}, fp32")


def gpu_name() -> dict[str, Any]:
    """The NVIDIA card (nvidia-smi, else torch), or why there is none."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=name,driver_version,memory.total",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.strip()
            if out:
                name, driver, memory = (part.strip() for part in out.splitlines()[0].split(","))
                return {"name": name, "driver": driver, "memory": memory, "source": "nvidia-smi"}
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    try:
        import torch  # type: ignore[import-not-found]

        if torch.cuda.is_available():
            return {"name": torch.cuda.get_device_name(0), "source": "torch"}
    except ImportError:
        pass
    return {"name": None, "source": "no NVIDIA GPU found (nvidia-smi/torch)"}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Variant:
    """An execution provider as benchmarked: CUDA in exact float32 (streamfer's default,
    `model.tf32: false`) or with TF32 matmuls (`model.tf32: true`), or the CPU."""

    label: str
    provider: str
    tf32: bool = False

    def provider_entry(self) -> str | tuple[str, dict[str, str]]:
        if self.provider == CUDA:
            return (CUDA, {"use_tf32": str(int(self.tf32))})
        return self.provider


CPU_VARIANT = Variant("cpu", CPU)
CUDA_VARIANTS = (Variant("cuda", CUDA), Variant("cuda-tf32", CUDA, tf32=True))


def session(model: Model, variant: Variant, threads: int) -> ort.InferenceSession | None:
    """A session on the variant's provider, or None when ORT fell back (CUDA not usable)."""
    provider = variant.provider
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    providers = [variant.provider_entry()] if provider == CPU else [variant.provider_entry(), CPU]
    try:
        sess = ort.InferenceSession(str(model.path), options, providers=providers)
    except Exception:  # a broken CUDA install raises here; the caller records the reason
        return None
    return sess if provider in sess.get_providers() else None


def cuda_opens(model: Model, threads: int) -> bool:
    """Whether a CUDA session opens; ORT's red provider-bridge errors are muted meanwhile
    (the reason recorded in the output says what is missing)."""
    ort.set_default_logger_severity(4)
    try:
        return session(model, CUDA_VARIANTS[0], threads) is not None
    finally:
        ort.set_default_logger_severity(3)


def runner(
    sess: ort.InferenceSession, model: Model, provider: str, mode: str, x: np.ndarray
) -> Callable[[], Any]:
    """A zero-argument callable doing one scoring run of batch `x` in the given mode."""
    output = sess.get_outputs()[0].name
    if mode == "off":
        feeds = {model.input_name: x}
        return lambda: sess.run([output], feeds)[0]
    device = "cuda" if provider == CUDA else "cpu"
    binding = sess.io_binding()
    if mode == "resident":
        value = ort.OrtValue.ortvalue_from_numpy(x, device, 0)
        binding.bind_ortvalue_input(model.input_name, value)
        binding.bind_output(output, device, 0)

        def resident() -> Any:
            sess.run_with_iobinding(binding)
            return value  # keeps the device buffer alive

        return resident

    def bound() -> Any:
        value = ort.OrtValue.ortvalue_from_numpy(x, device, 0)
        binding.bind_ortvalue_input(model.input_name, value)
        binding.bind_output(output, device, 0)
        sess.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    return bound


def time_runs(run: Callable[[], Any], *, warmup: int, min_runs: int, budget_s: float) -> np.ndarray:
    """Per-run seconds: `warmup` untimed runs, then at least `min_runs`, up to `budget_s`."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    clock = time.perf_counter
    while len(times) < min_runs or (clock() < deadline and len(times) < 100_000):
        started = clock()
        run()
        times.append(clock() - started)
    return np.asarray(times)


def max_difference(
    model: Model, sess: ort.InferenceSession, reference: ort.InferenceSession
) -> float:
    """Largest |score - CPU score| over 1024 random rows: what a variant costs in accuracy."""
    x = np.random.default_rng(1).standard_normal((1024, model.width), dtype=np.float32)
    name = sess.get_outputs()[0].name
    ours = sess.run([name], {model.input_name: x})[0]
    theirs = reference.run([name], {model.input_name: x})[0]
    return float(np.abs(ours.astype(np.float64) - theirs).max())


def measure(
    models: list[Model],
    variants: list[Variant],
    batch_sizes: tuple[int, ...],
    *,
    threads: int,
    warmup: int,
    min_runs: int,
    budget_s: float,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    for model in models:
        reference = session(model, CPU_VARIANT, threads)
        assert reference is not None, "the CPU provider always opens"
        for variant in variants:
            sess = session(model, variant, threads)
            if sess is None:
                continue
            provider = variant.provider
            difference = max_difference(model, sess, reference)
            modes = ("off", "on", "resident") if provider == CUDA else ("off", "on")
            for mode in modes:
                for batch in batch_sizes:
                    x = rng.standard_normal((batch, model.width), dtype=np.float32)
                    run = runner(sess, model, provider, mode, x)
                    times = time_runs(run, warmup=warmup, min_runs=min_runs, budget_s=budget_s)
                    ms = times * 1000
                    rows.append(
                        {
                            "model": model.name,
                            "provider": variant.label,
                            "max_abs_diff_vs_cpu": difference,
                            "io_binding": mode,
                            "batch": batch,
                            "runs": int(times.size),
                            "p50_ms": float(np.percentile(ms, 50)),
                            "p99_ms": float(np.percentile(ms, 99)),
                            "mean_ms": float(ms.mean()),
                            "rows_per_s": float(batch / times.mean()),
                        }
                    )
    return rows


def markdown(result: dict[str, Any]) -> str:
    gpu = result["gpu"]
    lines = [
        f"# ONNX Runtime: CUDA vs CPU, {result['date']}",
        "",
        f"GPU: {gpu.get('name') or 'none'}"
        + (f" (driver {gpu['driver']}, {gpu['memory']})" if gpu.get("driver") else "")
        + f"; CPU: {result['cpu']} ({result['cpu_count']} CPUs); onnxruntime "
        f"{result['onnxruntime']}; command: `{result['command']}`",
        "",
    ]
    if result.get("cuda_skipped"):
        lines += [f"CUDA rows skipped: {result['cuda_skipped']}", ""]
    for model in result["models"]:
        lines.append(f"- **{model['name']}**: {model['note']} (input width {model['width']})")
    lines += [
        "",
        "| model | provider | IO binding | batch | p50 ms | p99 ms | rows/s | max diff vs CPU |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['provider']} | {r['io_binding']} | {r['batch']} | "
            f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['rows_per_s']:,.0f} | "
            f"{r['max_abs_diff_vs_cpu']:.1e} |"
        )
    lines.append("")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> bool:
    """rows/s against batch size per model, provider and mode (if matplotlib is there)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    models = [m["name"] for m in result["models"]]
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 3.8), squeeze=False)
    for ax, name in zip(axes[0], models, strict=True):
        series: dict[tuple[str, str], list[tuple[int, float]]] = {}
        for r in result["rows"]:
            if r["model"] == name:
                series.setdefault((r["provider"], r["io_binding"]), []).append(
                    (r["batch"], r["rows_per_s"])
                )
        for (provider, mode), points in series.items():
            xs, ys = zip(*sorted(points), strict=True)
            ax.plot(xs, ys, marker="o", label=f"{provider}, binding {mode}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("rows/s")
        ax.set_title(name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    ort.set_default_logger_severity(3)
    if hasattr(ort, "preload_dlls") and not args.cpu_only:
        # CUDA/cuDNN from the nvidia-* pip packages, as streamfer's OnnxModel does; it prints
        # what it cannot find, which the skipped-CUDA reason below already says.
        with contextlib.redirect_stdout(io.StringIO()):
            ort.preload_dlls()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        workdir = Path(tmp)
        models = [demo_model(workdir, args.demo_model), large_mlp(workdir, tiny=args.tiny)]
        variants = [CPU_VARIANT]
        cuda_skipped = None
        if args.cpu_only:
            cuda_skipped = "--cpu-only"
        elif CUDA not in ort.get_available_providers():
            cuda_skipped = f"this onnxruntime has no {CUDA} (install onnxruntime-gpu)"
        elif not cuda_opens(models[0], args.threads):
            cuda_skipped = "CUDA could not be initialised (no usable NVIDIA GPU, driver or libs)"
        else:
            variants[:0] = CUDA_VARIANTS
        batch_sizes = TINY_BATCH_SIZES if args.tiny else BATCH_SIZES
        if args.batch_sizes:
            batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
        rows = measure(
            models,
            variants,
            batch_sizes,
            threads=args.threads,
            warmup=2 if args.tiny else 10,
            min_runs=3 if args.tiny else 20,
            budget_s=0.05 if args.tiny else args.seconds,
        )
        return {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join(["python bench/gpu.py", *argv]),
            "gpu": gpu_name(),
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "cpu_threads": args.threads or "onnxruntime default",
            "onnxruntime": ort.__version__,
            "python": platform.python_version(),
            "tiny": args.tiny,
            "cuda_skipped": cuda_skipped,
            "models": [{"name": m.name, "note": m.note, "width": m.width} for m in models],
            "rows": rows,
        }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/gpu.py", description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="2 batch sizes, a 2x64 MLP, short runs")
    p.add_argument("--out", type=Path, default=None, help="default bench/results/<date>/gpu")
    p.add_argument("--demo-model", type=Path, default=None, help=f"default {DEMO_MODEL}")
    p.add_argument("--batch-sizes", default=None, help="comma-separated, e.g. 1,64,4096")
    p.add_argument("--seconds", type=float, default=1.0, help="timed seconds per setting")
    p.add_argument("--threads", type=int, default=0, help="CPU intra-op threads (0: ORT's)")
    p.add_argument("--cpu-only", action="store_true", help="skip CUDA even if present")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    result = run(args, argv)
    out = args.out or REPO / "bench" / "results" / dt.date.today().isoformat() / "gpu"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(result, indent=1))
    text = markdown(result)
    (out / "gpu.md").write_text(text)
    if plot(result, out / "gpu.png"):
        result["plot"] = "gpu.png"
    print(text)
    return result


if __name__ == "__main__":
    main()
