"""`OnnxModel`: one verified ONNX model file, one ORT session, one run per batch.

Loading reads the file once, checks its sha256 against the `ModelRef` (`model_ref`), opens
a session on the provider the spec asks for (`providers`: `auto` uses CUDA when it runs
here and says why not otherwise), checks the model's signature against the spec's input
mapping and the featurizer's columns (`signature`), warms up and logs one line saying where
the model runs. `predict` turns the featurizer's (n, k) float64 matrix into (n,) float64
scores with precomputed column selections and one `session.run` (CPU) or IO-bound run (CUDA).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import onnxruntime as ort

from inference.model_ref import (
    ModelIntegrityError,
    ModelLoadError,
    ModelRef,
    file_sha256,
    read_verified,
)
from inference.providers import (
    CPU,
    CUDA,
    ModelProviderError,
    cpu_session,
    cuda_status,
    gpu_visible,
    open_session,
)
from inference.signature import InputPlan, ModelSignatureError, check_signature
from inference.spec import ModelSpec

__all__ = [
    "CPU",
    "CUDA",
    "ModelIntegrityError",
    "ModelLoadError",
    "ModelProviderError",
    "ModelRef",
    "ModelSignatureError",
    "OnnxModel",
    "cuda_status",
    "file_sha256",
    "read_verified",
]

log = logging.getLogger(__name__)

_FLOAT32_MAX: Final = float(np.finfo(np.float32).max)


def _session_options(spec: ModelSpec) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if spec.threads:
        options.intra_op_num_threads = spec.threads
    options.log_severity_level = 3  # ORT's own warnings are noise next to our one line
    return options


class OnnxModel:
    """A loaded, verified, warmed-up model: `predict` scores a whole batch in one run."""

    def __init__(
        self,
        ref: ModelRef,
        session: ort.InferenceSession,
        plan: InputPlan,
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

        Raises `ModelIntegrityError` (sha256, or not the `model.sha256` the spec pins),
        `ModelSignatureError` (inputs/outputs),
        `ModelProviderError` (`providers: cuda` without CUDA) or `ModelLoadError`.
        """
        if len(set(feature_names)) != len(feature_names):
            raise ValueError(f"feature_names has duplicates: {list(feature_names)}")
        if spec.sha256 is not None and ref.sha256 != spec.sha256:
            raise ModelIntegrityError(
                f"model {ref}: {ref.path} has sha256 {ref.sha256}, but the spec pins "
                f"model.sha256 {spec.sha256}: refused. Serve the pinned file, or check the "
                "new one and pin its sha256"
            )
        # For a pinned file `ref.sha256` is the pin, so the bytes read are held to it.
        data = read_verified(ref)
        options = _session_options(spec)
        session, fallback = open_session(ref, data, options, spec, device_id)
        plan = check_signature(ref, spec, session, feature_names)
        provider = CUDA if CUDA in session.get_providers() else CPU
        model = cls(ref, session, plan, feature_names, provider=provider, device_id=device_id)
        gpu_failed = False  # CUDA loaded, so a GPU is there, and then failed
        try:
            model._warm_up(spec, verify=provider == CUDA)
        except Exception as exc:
            if provider == CUDA and spec.providers == "auto":
                fallback, gpu_failed = f"warm-up on CUDA failed: {exc}", True
                model = cls(ref, cpu_session(ref, data, options), plan, feature_names, provider=CPU)
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
        model._fallback_reason = fallback
        model._log_placement(gpu_failed=gpu_failed)
        return model

    def _log_placement(self, *, gpu_failed: bool) -> None:
        """One line saying where the model runs. CPU without CUDA on a host that shows no
        GPU is the expected case (INFO); a GPU that is there but unused is a WARNING."""
        sha = self._ref.sha256[:12]
        why = self._fallback_reason
        if why is None:
            where = f"CUDA (device {self._device_id})" if self._provider == CUDA else "CPU"
            log.info("model %s on %s (sha256 %s)", self._ref, where, sha)
        elif gpu_failed or gpu_visible():
            log.warning(
                "model %s on CPU: a GPU is present but CUDA is not used: %s (sha256 %s)",
                self._ref,
                why,
                sha,
            )
        else:
            log.info("model %s on CPU (no CUDA: %s; sha256 %s)", self._ref, why, sha)

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
