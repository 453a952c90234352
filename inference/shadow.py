"""`ShadowModel`: the candidate version workers score beside the active one, if any.

The registry's SHADOW pointer (`inference.rollout`) names it. `poll()` re-reads the pointer
at most every `swap_poll`, between batches, and loads a newly named version in a background
thread (like `ModelSwitch`), so a batch is shadow-scored by one version or none. A version
that fails to load is logged and skipped until the pointer changes. Shadow scores go to the
prediction log only: they are never served.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from inference.onnx_model import OnnxModel
from inference.registry import ModelRegistry, RegistryError
from inference.rollout import ModelRollout
from inference.spec import ModelSpec

log = logging.getLogger(__name__)


class ShadowModel:
    """The shadow version of the spec's model (None when there is none)."""

    def __init__(
        self,
        spec: ModelSpec,
        feature_names: Sequence[str],
        registry: ModelRegistry,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._spec = spec
        self._names = tuple(feature_names)
        self._rollout = ModelRollout(registry)
        self._clock = clock
        self._next_check = clock()
        self._model: OnnxModel | None = None
        self._wanted: str | None = None
        self._thread: threading.Thread | None = None
        self._loaded: OnnxModel | None = None
        self._lock = threading.Lock()

    def current(self) -> OnnxModel | None:
        """The shadow model to score the next whole batch with, or None."""
        return self._model

    def poll(self) -> None:
        """Between batches: install a loaded version; re-read SHADOW when due."""
        with self._lock:
            loaded, self._loaded = self._loaded, None
        if loaded is not None and loaded.version == self._wanted:
            self._model = loaded
            log.info("model %s: shadow scoring with v%s", self._spec.name, loaded.version)
        now = self._clock()
        if now < self._next_check or (self._thread is not None and self._thread.is_alive()):
            return
        self._next_check = now + self._spec.swap_poll_s
        try:
            wanted = self._rollout.shadow_version(self._spec.name)
        except (RegistryError, OSError) as exc:
            log.warning("model %s: cannot read the shadow pointer: %s", self._spec.name, exc)
            return
        if wanted == self._wanted:
            return
        self._wanted = wanted
        self._model = None  # the old shadow stops at once; the new one starts when loaded
        if wanted is None:
            log.info("model %s: shadow scoring stopped", self._spec.name)
            return
        self._thread = threading.Thread(
            target=self._load, args=(wanted,), name=f"shadow-load-{wanted}", daemon=True
        )
        self._thread.start()

    def _load(self, version: str) -> None:
        try:
            ref = self._rollout.registry.resolve(self._spec.name, version)
            model = OnnxModel.load(ref, self._spec.model_copy(update={"sha256": None}), self._names)
        except Exception as exc:
            log.error("model %s: shadow v%s refused: %s", self._spec.name, version, exc)
            return
        with self._lock:
            self._loaded = model

    def close(self) -> None:
        """Wait for a background load (bounded) so the process exits cleanly."""
        if self._thread is not None:
            self._thread.join(30)
