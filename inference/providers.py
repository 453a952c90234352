"""Execution providers: whether CUDA really runs here (and why not), sessions that really run
on CUDA, and the choice `model.providers` makes (`auto`: CUDA when usable, else CPU;
`cuda`: CUDA or an error; `cpu`)."""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
from pathlib import Path
from typing import Final

import numpy as np
import onnxruntime as ort

from inference.model_ref import ModelLoadError, ModelRef
from inference.spec import ModelSpec

log = logging.getLogger(__name__)

CUDA: Final = "CUDAExecutionProvider"
CPU: Final = "CPUExecutionProvider"

# ORT's default logger prints environment-level warnings to stderr; streamfer logs its own
# reasons (one line per model load), so only ORT's errors get through.
_ORT_SEVERITY_ERROR: Final = 3
_ORT_SEVERITY_FATAL: Final = 4

# Per device id, why CUDA failed to initialise in this process (missing libraries, no
# device): that does not heal later, so `auto` stops retrying (and ORT's error spam) on reloads.
_cuda_unusable: dict[int, str] = {}
_cuda_libraries_preloaded = False


class ModelProviderError(ModelLoadError):
    """`providers: cuda` was asked for and CUDA could not be used."""


def gpu_visible() -> bool:
    """Whether this host shows a GPU to processes (an NVIDIA device node, the driver's GPU
    list, or WSL's GPU device): CUDA failing on such a host is worth a warning."""
    return (
        any(Path("/dev").glob("nvidia[0-9]*"))
        or any(Path("/proc/driver/nvidia/gpus").glob("*"))
        or Path("/dev/dxg").exists()
    )


def cuda_status(device_id: int = 0) -> tuple[bool, str]:
    """Whether CUDA really runs here (a session on CUDA runs a tiny graph), and why not."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "cuda_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])],
    )
    data = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8
    ).SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = _ORT_SEVERITY_ERROR
    session, why = cuda_session(data, options, device_id)
    if session is None:
        return False, why
    try:
        session.run(["y"], {"x": np.ones((2, 1), dtype=np.float32)})
    except Exception as exc:  # any CUDA runtime failure means "not usable"
        return False, f"a CUDA run failed: {exc}"
    return True, "CUDAExecutionProvider is usable"


def _why_cuda_missing() -> str:
    available = ort.get_available_providers()
    if CUDA not in available:
        return (
            f"this onnxruntime build has no {CUDA} (available: {available}); "
            "install onnxruntime-gpu"
        )
    library = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if library.exists():
        try:
            ctypes.CDLL(str(library))
        except OSError as exc:
            return (
                f"the CUDA provider library did not load ({exc}); install the CUDA/cuDNN "
                "versions this onnxruntime-gpu needs: NVIDIA's nvidia-* pip packages (found "
                "by onnxruntime.preload_dlls) or a system install on LD_LIBRARY_PATH"
            )
    return "onnxruntime could not initialise CUDA (no NVIDIA GPU or driver visible?)"


def _preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN from the `nvidia-*` pip packages (or PyTorch's) when they are
    installed, so `pip install onnxruntime-gpu nvidia-cudnn-cu13 …` works without
    LD_LIBRARY_PATH. Best effort and once per process: libraries the system loader finds
    need none of this, and a failure shows up as CUDA being unusable, with its reason."""
    global _cuda_libraries_preloaded
    if _cuda_libraries_preloaded:
        return
    _cuda_libraries_preloaded = True
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime-gpu ≥ 1.21
    if preload is None or CUDA not in ort.get_available_providers():
        return
    # It prints each library it cannot find; on a CPU-only host that is noise, and the one
    # reason that matters is reported by `cuda_status` / the provider error instead.
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            preload()
    except Exception as exc:  # a partial preload still leaves the system loader to try
        log.debug("onnxruntime.preload_dlls failed: %s", exc)
    if printed.getvalue().strip():
        log.debug("onnxruntime.preload_dlls: %s", printed.getvalue().strip())


def cuda_session(
    data: bytes, options: ort.SessionOptions, device_id: int, *, tf32: bool = False
) -> tuple[ort.InferenceSession | None, str]:
    """A session whose providers really include CUDA, or None and the reason.

    ORT's CUDA provider uses TF32 for float32 matmuls by default; a fraud score that moves
    by 1e-4 between a CPU and a GPU worker can flip a decision at the threshold, so TF32 is
    off unless the spec asks for it (`model.tf32`)."""
    if device_id in _cuda_unusable:
        return None, _cuda_unusable[device_id]
    _preload_cuda_libraries()
    # ORT prints a red stack of provider-bridge errors when CUDA can't load; we log one
    # precise reason instead, so its default logger is quiet for this attempt only.
    ort.set_default_logger_severity(_ORT_SEVERITY_FATAL)
    try:
        session = ort.InferenceSession(
            data,
            options,
            providers=[(CUDA, {"device_id": str(device_id), "use_tf32": str(int(tf32))}), CPU],
            # Without this, a failing CUDA provider makes ORT print an "EP Error" banner to
            # stdout and retry on CPU; the caller decides (and says why) instead.
            enable_fallback=0,
        )
    except Exception as exc:
        return None, f"creating a CUDA session failed: {exc}"
    finally:
        ort.set_default_logger_severity(_ORT_SEVERITY_ERROR)
    if CUDA not in session.get_providers():
        # ORT silently drops a provider it cannot initialise; that is per process.
        _cuda_unusable[device_id] = _why_cuda_missing()
        return None, _cuda_unusable[device_id]
    return session, ""


def cpu_session(ref: ModelRef, data: bytes, options: ort.SessionOptions) -> ort.InferenceSession:
    """A CPU session of the verified bytes, or a ModelLoadError naming the model."""
    try:
        return ort.InferenceSession(data, options, providers=[CPU])
    except Exception as exc:
        raise ModelLoadError(f"model {ref}: onnxruntime cannot open {ref.path}: {exc}") from exc


def open_session(
    ref: ModelRef, data: bytes, options: ort.SessionOptions, spec: ModelSpec, device_id: int
) -> tuple[ort.InferenceSession, str | None]:
    """The session `spec.providers` asks for, and why CUDA was not used when `auto` fell
    back to CPU (None otherwise). `cuda` without CUDA raises ModelProviderError."""
    if spec.providers == "cpu":
        return cpu_session(ref, data, options), None
    session, why = cuda_session(data, options, device_id, tf32=spec.tf32)
    if session is not None:
        return session, None
    if spec.providers == "cuda":
        raise ModelProviderError(
            f"model {ref}: providers is 'cuda' but CUDA is not usable: {why}. "
            "Fix the GPU setup or set model.providers to 'auto' or 'cpu'"
        )
    return cpu_session(ref, data, options), why
