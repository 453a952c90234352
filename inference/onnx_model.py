"""`OnnxModel`: one verified ONNX model file, one ORT session, one run per batch.

Loading reads the file once, checks its sha256 against the `ModelRef`, picks the execution
provider (`auto` tries CUDA and falls back to CPU with a logged reason), checks the model's
signature against the spec's input mapping and the featurizer's columns, and warms up.
`predict` turns the featurizer's (n, k) float64 matrix into (n,) float64 scores with
precomputed column selections and one `session.run` (CPU) or IO-bound run (CUDA).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnxruntime as ort

from inference.spec import ModelSpec

log = logging.getLogger(__name__)

CUDA: Final = "CUDAExecutionProvider"
CPU: Final = "CPUExecutionProvider"

_FLOAT_OUTPUTS = ("tensor(float)", "tensor(double)", "tensor(float16)")
_FLOAT32_MAX: Final = float(np.finfo(np.float32).max)

# Per device id, why CUDA failed to initialise in this process (missing libraries, no
# device): that does not heal later, so `auto` stops retrying (and ORT's error spam) on reloads.
_cuda_unusable: dict[int, str] = {}
_cuda_libraries_preloaded = False


class ModelLoadError(Exception):
    """A model could not be loaded; the message names the model, the cause and the fix."""


class ModelIntegrityError(ModelLoadError):
    """The model file's sha256 differs from the one recorded for it: it is not loaded."""


class ModelSignatureError(ModelLoadError):
    """The model's inputs/outputs do not match `model.inputs` / `model.output` / features."""


class ModelProviderError(ModelLoadError):
    """`providers: cuda` was asked for and CUDA could not be used."""


@dataclass(frozen=True)
class ModelRef:
    """A model file and the sha256 it must have; `version` is what operators see."""

    name: str
    version: str
    path: Path
    sha256: str

    @classmethod
    def for_file(cls, name: str, path: Path | str) -> ModelRef:
        """A plain file (no registry): its version is the first 12 hex digits of its sha256."""
        path = Path(path)
        try:
            digest = file_sha256(path)
        except OSError as exc:
            raise ModelLoadError(
                f"model {name!r}: cannot read {path} ({exc.strerror}); fix model.path"
            ) from exc
        return cls(name=name, version=digest[:12], path=path, sha256=digest)

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_verified(ref: ModelRef) -> bytes:
    """The file's bytes, only if their sha256 equals `ref.sha256`.

    The session is built from these very bytes, so what was verified is what runs.
    """
    try:
        data = ref.path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"model {ref}: cannot read {ref.path} ({exc.strerror})") from exc
    found = hashlib.sha256(data).hexdigest()
    if found != ref.sha256:
        raise ModelIntegrityError(
            f"model {ref}: {ref.path} has sha256 {found}, expected {ref.sha256}; the file "
            "was changed after it was registered. Re-register the intended file as a new "
            "version (it is not loaded)"
        )
    return data


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
    options.log_severity_level = 3
    session, why = _cuda_session(data, options, device_id)
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


def _cuda_session(
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
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(
            data,
            options,
            providers=[(CUDA, {"device_id": str(device_id), "use_tf32": str(int(tf32))}), CPU],
        )
    except Exception as exc:
        return None, f"creating a CUDA session failed: {exc}"
    finally:
        ort.set_default_logger_severity(2)
    if CUDA not in session.get_providers():
        # ORT silently drops a provider it cannot initialise; that is per process.
        _cuda_unusable[device_id] = _why_cuda_missing()
        return None, _cuda_unusable[device_id]
    return session, ""


def _session_options(spec: ModelSpec) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if spec.threads:
        options.intra_op_num_threads = spec.threads
    options.log_severity_level = 3
    return options


# A column selection: a slice when the columns are contiguous (a view, no gather).
Selection = slice | np.ndarray


def _selection(indices: Sequence[int]) -> Selection:
    start = indices[0]
    if list(indices) == list(range(start, start + len(indices))):
        return slice(start, start + len(indices))
    return np.asarray(indices, dtype=np.intp)


@dataclass(frozen=True)
class _Plan:
    inputs: tuple[tuple[str, Selection], ...]
    output: str
    output_index: int | None


def _plan(
    ref: ModelRef,
    spec: ModelSpec,
    session: ort.InferenceSession,
    feature_names: Sequence[str],
) -> _Plan:
    """Check the model's signature; return the precomputed column selection per input."""
    problems: list[str] = []
    position: dict[str, int] = {}
    for i, column in enumerate(feature_names):
        position.setdefault(column, i)
    model_inputs = {arg.name: arg for arg in session.get_inputs()}

    plan_inputs: list[tuple[str, Selection]] = []
    for name, columns in spec.inputs.items():
        arg = model_inputs.get(name)
        if arg is None:
            problems.append(
                f"model.inputs maps {name!r}, which the model does not have; its inputs "
                f"are {sorted(model_inputs)}: rename the key in model.inputs"
            )
            continue
        if arg.type != "tensor(float)":
            problems.append(
                f"input {name!r} is {arg.type}, expected tensor(float) (float32): "
                "export the model with a float32 input"
            )
        shape = arg.shape
        if shape is None or len(shape) != 2:
            problems.append(
                f"input {name!r} has shape {shape}, expected (batch, {len(columns)}): "
                "export a rank-2 input"
            )
        else:
            batch, width = shape
            if isinstance(width, int) and width != len(columns):
                problems.append(
                    f"input {name!r} takes {width} columns but model.inputs.{name} maps "
                    f"{len(columns)}: map exactly {width} feature columns"
                )
            if isinstance(batch, int) and batch > 0:
                problems.append(
                    f"input {name!r} has a fixed batch size {batch}: export it with a "
                    "dynamic (symbolic) batch dimension"
                )
        unknown = [c for c in columns if c not in position]
        if unknown:
            known = list(feature_names)
            shown = ", ".join(known[:20]) + (", …" if len(known) > 20 else "")
            problems.append(
                f"model.inputs.{name} maps {unknown}, which are not feature columns "
                f"(known: {shown}): declare them in features or fix the names"
            )
        else:
            plan_inputs.append((name, _selection([position[c] for c in columns])))

    unmapped = sorted(set(model_inputs) - set(spec.inputs))
    if unmapped:
        problems.append(
            f"model inputs {unmapped} are not mapped: add them to model.inputs with their "
            "feature columns"
        )

    outputs = {arg.name: arg for arg in session.get_outputs()}
    out = outputs.get(spec.output)
    output_index = spec.output_index
    if out is None:
        problems.append(
            f"model.output is {spec.output!r}, which the model does not have; its outputs "
            f"are {sorted(outputs)}: set model.output to one of them"
        )
    else:
        if out.type not in _FLOAT_OUTPUTS:
            problems.append(
                f"output {spec.output!r} is {out.type}, expected a float tensor of scores: "
                "pick the probability/score output"
            )
        shape = out.shape
        if shape is not None and len(shape) not in (1, 2):
            problems.append(
                f"output {spec.output!r} has shape {shape}, expected (n,), (n, 1) or (n, 2)"
            )
        elif shape is not None and len(shape) == 1 and output_index is not None:
            problems.append(
                f"output {spec.output!r} is (n,) so model.output_index does not apply: remove it"
            )
        elif shape is not None and len(shape) == 2 and isinstance(shape[1], int):
            width = shape[1]
            index = width - 1 if output_index is None else output_index
            if not -width <= index < width:
                problems.append(
                    f"model.output_index {output_index} is out of range for output "
                    f"{spec.output!r} of width {width}: use 0..{width - 1}"
                )

    if problems:
        lines = "\n  - ".join(problems)
        raise ModelSignatureError(f"model {ref} ({ref.path}) does not match the spec:\n  - {lines}")
    return _Plan(tuple(plan_inputs), spec.output, output_index)


class OnnxModel:
    """A loaded, verified, warmed-up model: `predict` scores a whole batch in one run."""

    def __init__(
        self,
        ref: ModelRef,
        session: ort.InferenceSession,
        plan: _Plan,
        feature_names: Sequence[str],
        *,
        provider: str,
        device_id: int = 0,
        fallback_reason: str | None = None,
    ) -> None:
        self._ref = ref
        self._session = session
        self._plan = plan
        self._feature_names = tuple(feature_names)
        self._provider = provider
        self._device_id = device_id
        self._fallback_reason = fallback_reason

    @classmethod
    def load(
        cls,
        ref: ModelRef,
        spec: ModelSpec,
        feature_names: Sequence[str],
        *,
        device_id: int = 0,
    ) -> OnnxModel:
        """Verify, open, check and warm up `ref` as `spec` says.

        Raises `ModelIntegrityError` (sha256), `ModelSignatureError` (inputs/outputs),
        `ModelProviderError` (`providers: cuda` without CUDA) or `ModelLoadError`.
        """
        if len(set(feature_names)) != len(feature_names):
            raise ValueError(f"feature_names has duplicates: {list(feature_names)}")
        data = read_verified(ref)
        options = _session_options(spec)

        fallback: str | None = None
        session: ort.InferenceSession | None = None
        if spec.providers in ("cuda", "auto"):
            session, why = _cuda_session(data, options, device_id, tf32=spec.tf32)
            if session is None:
                if spec.providers == "cuda":
                    raise ModelProviderError(
                        f"model {ref}: providers is 'cuda' but CUDA is not usable: {why}. "
                        "Fix the GPU setup or set model.providers to 'auto' or 'cpu'"
                    )
                fallback = why
        if session is None:
            session = cls._cpu_session(ref, data, options)
        plan = _plan(ref, spec, session, feature_names)
        provider = CUDA if CUDA in session.get_providers() else CPU
        model = cls(ref, session, plan, feature_names, provider=provider, device_id=device_id)
        try:
            model._warm_up(spec, verify=provider == CUDA)
        except Exception as exc:
            if provider == CUDA and spec.providers == "auto":
                fallback = f"warm-up on CUDA failed: {exc}"
                model = cls(
                    ref,
                    cls._cpu_session(ref, data, options),
                    plan,
                    feature_names,
                    provider=CPU,
                )
                model._warm_up(spec, verify=False, wrap=True)
            elif provider == CUDA:
                raise ModelProviderError(
                    f"model {ref}: warm-up on CUDA failed: {exc}. Fix the GPU setup or "
                    "set model.providers to 'auto' or 'cpu'"
                ) from exc
            else:
                raise ModelLoadError(
                    f"model {ref}: a warm-up batch of zeros failed: {exc}. Check that the "
                    "model runs on (batch, columns) float32 inputs"
                ) from exc
        if fallback is not None:
            model._fallback_reason = fallback
            log.warning("model %s: using CPU, CUDA not used: %s", ref, fallback)
        log.info("model %s loaded on %s (sha256 %s)", ref, model.provider, ref.sha256[:12])
        return model

    @staticmethod
    def _cpu_session(
        ref: ModelRef, data: bytes, options: ort.SessionOptions
    ) -> ort.InferenceSession:
        try:
            return ort.InferenceSession(data, options, providers=[CPU])
        except Exception as exc:
            raise ModelLoadError(f"model {ref}: onnxruntime cannot open {ref.path}: {exc}") from exc

    def _warm_up(self, spec: ModelSpec, *, verify: bool, wrap: bool = False) -> None:
        """Run `warmup_batches` zero batches (at least one when CUDA must be proven)."""
        batches = max(spec.warmup_batches, 1 if verify else 0)
        zeros = np.zeros((spec.warmup_batch_size, len(self._feature_names)), dtype=np.float64)
        for _ in range(batches):
            try:
                self.predict(zeros)
            except Exception as exc:
                if wrap:
                    raise ModelLoadError(
                        f"model {self._ref}: a warm-up batch of zeros failed on CPU: {exc}"
                    ) from exc
                raise

    # -- properties -----------------------------------------------------------------------

    @property
    def ref(self) -> ModelRef:
        return self._ref

    @property
    def name(self) -> str:
        return self._ref.name

    @property
    def version(self) -> str:
        return self._ref.version

    @property
    def sha256(self) -> str:
        return self._ref.sha256

    @property
    def provider(self) -> str:
        """The execution provider in use: CUDAExecutionProvider or CPUExecutionProvider."""
        return self._provider

    @property
    def fallback_reason(self) -> str | None:
        """Why `auto` did not use CUDA (None when it did, or when CPU was asked for)."""
        return self._fallback_reason

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self._feature_names

    @property
    def metadata(self) -> Mapping[str, str]:
        """The model's custom metadata_props (e.g. the demo model's feature names)."""
        return dict(self._session.get_modelmeta().custom_metadata_map)

    # -- scoring --------------------------------------------------------------------------

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Scores (n,) float64 for an (n, k) matrix whose columns are `feature_names`."""
        if features.ndim != 2 or features.shape[1] != len(self._feature_names):
            raise ValueError(
                f"model {self._ref}: expected an (n, {len(self._feature_names)}) feature "
                f"matrix, got shape {features.shape}"
            )
        n = features.shape[0]
        if n == 0:
            return np.empty(0, dtype=np.float64)
        # Saturate instead of overflowing: an aggregate beyond float32's range (a sum of
        # huge amounts) would reach the model as inf and come out as a NaN score.
        features = np.clip(features, -_FLOAT32_MAX, _FLOAT32_MAX)
        feeds = {
            name: np.ascontiguousarray(features[:, selection], dtype=np.float32)
            for name, selection in self._plan.inputs
        }
        if self._provider == CUDA:
            out = self._run_cuda(feeds)
        else:
            out = self._session.run([self._plan.output], feeds)[0]
        return self._scores(np.asarray(out), n)

    def _run_cuda(self, feeds: Mapping[str, np.ndarray]) -> Any:
        """Inputs copied to the GPU once, output allocated on the GPU, one copy back."""
        binding = self._session.io_binding()
        on_device = []  # keep the device buffers alive until the run is done
        for name, array in feeds.items():
            value = ort.OrtValue.ortvalue_from_numpy(array, "cuda", self._device_id)
            on_device.append(value)
            binding.bind_ortvalue_input(name, value)
        binding.bind_output(self._plan.output, "cuda", self._device_id)
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def _scores(self, out: np.ndarray, n: int) -> np.ndarray:
        if out.ndim == 2:
            index = -1 if self._plan.output_index is None else self._plan.output_index
            out = out[:, index]
        if out.ndim != 1 or out.shape[0] != n:
            raise ValueError(
                f"model {self._ref}: output {self._plan.output!r} has shape {out.shape} for "
                f"a batch of {n}; expected (n,), (n, 1) or (n, 2)"
            )
        return out.astype(np.float64, copy=False)

    def __repr__(self) -> str:
        return f"OnnxModel({self._ref}, provider={self._provider})"
