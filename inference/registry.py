"""`ModelRegistry`: versioned model files with sha256; `ModelSwitch`: hot swap between batches.

Layout under the registry root::

    <name>/<version>/model.onnx      the registered bytes, never rewritten
    <name>/<version>/manifest.json   {name, version, sha256, created_at, source, signature,
                                      hmac_sha256}
    <name>/ACTIVE                    the active version, replaced atomically

Versions are 1, 2, 3, … . A version directory without a manifest is an interrupted
registration and is ignored. Loading checks the file against the manifest's sha256, so a
changed file is refused instead of served. With the model key (`STREAMFER_MODEL_KEY`, given
by the caller), manifests are signed at registration and verified at every resolve, so a
file rewritten together with its manifest is refused too (`signed_manifest`); a spec's
`model.sha256` pins the one file a worker may serve.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import onnx

from inference.model_ref import ModelIntegrityError, ModelLoadError, ModelRef, file_sha256
from inference.onnx_model import OnnxModel
from inference.signed_manifest import (
    MODEL_KEY_ENV,
    ManifestSignatureError,
    model_key,
    sign_manifest,
    verify_manifest,
)
from inference.spec import ModelSpec, check_model_name, check_version_selector

__all__ = [
    "ManifestSignatureError",
    "ModelIntegrityError",
    "ModelRef",
    "ModelRegistry",
    "ModelSwitch",
    "RegistryError",
    "SwapEvent",
]

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
ACTIVE_FILE = "ACTIVE"


class RegistryError(Exception):
    """A registry request that cannot be served (unknown name/version, no ACTIVE, bad file)."""


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory + fsync + os.replace: all or nothing."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _signature(model: onnx.ModelProto) -> dict[str, Any]:
    """Input/output names, element types and shapes (ints, symbolic names or null)."""

    def describe(value: onnx.ValueInfoProto) -> dict[str, Any]:
        tensor = value.type.tensor_type
        dims: list[int | str | None] = []
        for dim in tensor.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(dim.dim_value)
            elif dim.HasField("dim_param"):
                dims.append(dim.dim_param)
            else:
                dims.append(None)
        return {
            "name": value.name,
            "type": onnx.TensorProto.DataType.Name(tensor.elem_type).lower(),
            "shape": dims,
        }

    initializers = {init.name for init in model.graph.initializer}
    return {
        "inputs": [describe(v) for v in model.graph.input if v.name not in initializers],
        "outputs": [describe(v) for v in model.graph.output],
    }


class ModelRegistry:
    """Versioned ONNX models on a filesystem (local disk or a shared mount).

    `key` is the model key (`STREAMFER_MODEL_KEY`): with it, `register` signs manifests and
    every resolve refuses one that is unsigned or does not verify; without it, manifests
    are written unsigned and read unverified (the file's sha256 is still checked).
    """

    def __init__(self, root: Path | str, *, key: str | None = None) -> None:
        self.root = Path(root)
        self._key = model_key(key)

    @property
    def verifies(self) -> bool:
        """Whether manifests are signed and verified (a model key was given)."""
        return self._key is not None

    # -- writing --------------------------------------------------------------------------

    def register(
        self,
        name: str,
        file: Path | str,
        *,
        activate: bool = True,
        source: str | None = None,
        version: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ModelRef:
        """Copy `file` in as the next version of `name` (or as `version`, which must be
        free), record its sha256, maybe activate.

        The file must be a valid ONNX model; `source` (default: the file's path) is kept in
        the manifest for provenance; `extra` (e.g. a trainer's metrics) is kept beside it.
        """
        name = self._name(name)
        file = Path(file)
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise RegistryError(f"cannot register {file}: {exc.strerror}") from exc
        try:
            model = onnx.load_model_from_string(data)
            onnx.checker.check_model(model)
        except Exception as exc:
            raise RegistryError(
                f"cannot register {file} as {name!r}: not a valid ONNX model ({exc})"
            ) from exc

        model_dir = self.root / name
        model_dir.mkdir(parents=True, exist_ok=True)
        version_dir = self._new_version_dir(model_dir, version)
        version = version_dir.name
        _write_atomic(version_dir / MODEL_FILE, data)
        digest = file_sha256(version_dir / MODEL_FILE)
        manifest = {
            "name": name,
            "version": version,
            "sha256": digest,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": source if source is not None else str(file.resolve()),
            "size_bytes": len(data),
            "signature": _signature(model),
            "metadata": {p.key: p.value for p in model.metadata_props},
            **(extra or {}),
        }
        if self._key is not None:
            manifest = sign_manifest(self._key, manifest)
        # The manifest is written last: its presence marks the version complete.
        _write_atomic(version_dir / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode())
        ref = ModelRef(name=name, version=version, path=version_dir / MODEL_FILE, sha256=digest)
        log.info("registered %s from %s (sha256 %s)", ref, file, digest[:12])
        if self._key is None:
            log.warning(
                "registered %s UNSIGNED: %s is not set, so workers that have it refuse this "
                "version; set it and register again to approve it",
                ref,
                MODEL_KEY_ENV,
            )
        if activate:
            self.activate(name, version)
        return ref

    @staticmethod
    def _new_version_dir(model_dir: Path, version: str | None = None) -> Path:
        # mkdir is atomic, so concurrent registrations never share a version number.
        if version is not None:
            if not version.isdigit() or int(version) < 1:
                raise RegistryError(f"version {version!r} is not a positive integer")
            wanted = model_dir / str(int(version))
            try:
                wanted.mkdir()
            except FileExistsError:
                raise RegistryError(
                    f"{model_dir.name} v{int(version)} already exists: versions are never "
                    "rewritten; publish without --version to take the next one"
                ) from None
            return wanted
        while True:
            taken = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()]
            candidate = model_dir / str(max(taken, default=0) + 1)
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            return candidate

    def write_pointer(self, name: str, pointer: str, text: str) -> None:
        """Replace the small pointer file `pointer` of `name` (ACTIVE, SHADOW…) atomically."""
        _write_atomic(self.root / self._name(name) / pointer, text.encode())

    def read_pointer(self, name: str, pointer: str) -> str | None:
        """The text of a pointer file of `name`, or None when it does not exist."""
        try:
            return (self.root / self._name(name) / pointer).read_text()
        except FileNotFoundError:
            return None

    def activate(self, name: str, version: str | int, *, verify: bool = True) -> ModelRef:
        """Point ACTIVE at `version` (atomically). With `verify`, a changed file is refused."""
        ref = self.resolve(name, str(version))
        if verify:
            found = file_sha256(ref.path)
            if found != ref.sha256:
                raise ModelIntegrityError(
                    f"model {ref}: {ref.path} has sha256 {found}, expected {ref.sha256}; "
                    "not activated. Re-register the intended file as a new version"
                )
        _write_atomic(self.root / ref.name / ACTIVE_FILE, f"{ref.version}\n".encode())
        log.info("activated %s", ref)
        return ref

    # -- reading --------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Registered model names."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str) -> list[str]:
        """Complete versions of `name`, oldest first."""
        model_dir = self.root / self._name(name)
        if not model_dir.is_dir():
            return []
        found = [
            int(p.name)
            for p in model_dir.iterdir()
            if p.name.isdigit() and (p / MANIFEST_FILE).is_file()
        ]
        return [str(v) for v in sorted(found)]

    def manifest(self, name: str, version: str | int) -> dict[str, Any]:
        """The manifest of one version."""
        name = self._name(name)
        version = check_version_selector(str(version))
        path = self.root / name / version / MANIFEST_FILE
        try:
            manifest: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            known = self.versions(name)
            raise RegistryError(
                f"model {name!r} has no version {version} in {self.root} "
                f"(versions: {known or 'none'}); register it first"
            ) from None
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read {path}: {exc}") from exc
        if not isinstance(manifest, dict) or not isinstance(manifest.get("sha256"), str):
            raise RegistryError(f"{path} has no sha256: the version is damaged, re-register")
        return manifest

    def active_version(self, name: str) -> str | None:
        """The version ACTIVE points at, or None when nothing was activated."""
        path = self.root / self._name(name) / ACTIVE_FILE
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            return None
        try:
            return check_version_selector(text)
        except ValueError as exc:
            raise RegistryError(
                f"{path} holds {text!r}, not a version: run activate again"
            ) from exc

    def active(self, name: str) -> ModelRef:
        """The active version of `name`."""
        version = self.active_version(name)
        if version is None:
            raise RegistryError(
                f"model {name!r} has no active version in {self.root}: activate one "
                f"(versions: {self.versions(name) or 'none'})"
            )
        return self._ref(name, version)

    def resolve(self, name: str, version: str = "latest") -> ModelRef:
        """`latest` (newest registered), `active` (the ACTIVE pointer) or a version number."""
        try:
            selector = check_version_selector(str(version))
        except ValueError as exc:
            raise RegistryError(str(exc)) from exc
        if selector == "active":
            return self.active(name)
        if selector == "latest":
            versions = self.versions(name)
            if not versions:
                raise RegistryError(
                    f"model {name!r} has no registered versions in {self.root}: register one"
                )
            return self._ref(name, versions[-1])
        return self._ref(name, selector)

    def _ref(self, name: str, version: str) -> ModelRef:
        manifest = self.manifest(name, version)
        if self._key is not None:
            verify_manifest(self._key, manifest, name=name, version=version)
        # Signed or not, a manifest speaks for its own directory only (a copied one is not).
        if (manifest.get("name"), str(manifest.get("version"))) != (name, version):
            raise ManifestSignatureError(
                f"model {name} v{version}: the manifest is for {manifest.get('name')} "
                f"v{manifest.get('version')}: refused (copied from another version?)",
                name=name,
                version=version,
            )
        path = self.root / name / version / MODEL_FILE
        return ModelRef(name=name, version=version, path=path, sha256=manifest["sha256"])

    @staticmethod
    def _name(name: str) -> str:
        try:
            return check_model_name(name)
        except ValueError as exc:
            raise RegistryError(str(exc)) from exc


@dataclass(frozen=True)
class SwapEvent:
    """The outcome of one attempted swap, returned by `ModelSwitch.poll`."""

    previous: str  # the version served before
    target: str  # the version the registry pointed at ("?" when it could not be read)
    ok: bool
    error: str | None
    at: float  # clock time the outcome was seen


def open_ref(spec: ModelSpec, *, key: str | None = None) -> tuple[ModelRef, ModelRegistry | None]:
    """The model `spec` names: a plain file (no registry) or the registry's selected version.

    What nothing vouches for is served with one WARNING: a plain file without `model.sha256`,
    or a registry read without a model key (its manifests unverified) and no pin.
    """
    if spec.path is not None:
        ref = ModelRef.for_file(spec.name, spec.path)
        if spec.sha256 is None:
            log.warning(
                "model %s: %s is not pinned: serving sha256 %s. Add `sha256: %s` to the "
                "spec's model section so that any other file is refused",
                spec.name,
                spec.path,
                ref.sha256,
                ref.sha256,
            )
        return ref, None
    assert spec.registry is not None  # ModelSpec guarantees exactly one
    registry = ModelRegistry(spec.registry, key=key)
    try:
        ref = registry.resolve(spec.name, spec.version)
    except RegistryError as exc:
        raise ModelLoadError(f"model.registry: {exc}") from exc
    if not registry.verifies and spec.sha256 is None:
        log.warning(
            "model %s: %s is not set, so registry manifests are not verified (a file "
            "rewritten with its manifest would be served): set it, or pin model.sha256",
            spec.name,
            MODEL_KEY_ENV,
        )
    return ref, registry


class ModelSwitch:
    """Serves one `OnnxModel` and swaps in a newly activated version between batches.

    The worker calls `poll()` between batches and scores each batch with `current()`.
    `poll` re-resolves the spec's version at most every `swap_poll`; a new version is
    loaded, verified and warmed up in a background thread while the old one keeps serving,
    and a later `poll` installs it. A batch therefore runs on exactly one version. A
    version that fails to load is refused (the old one stays), reported as a failed
    `SwapEvent`, and not retried until the registry points at something else or its file
    changes.
    """

    def __init__(
        self,
        model: OnnxModel,
        spec: ModelSpec,
        feature_names: Sequence[str],
        *,
        registry: ModelRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        loader: Callable[[ModelRef], OnnxModel] | None = None,
    ) -> None:
        self._model = model
        self._spec = spec
        self._registry = registry
        self._clock = clock
        self._loader = loader or (lambda ref: OnnxModel.load(ref, spec, feature_names))
        self._next_check = clock() + spec.swap_poll_s
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loading: ModelRef | None = None
        self._done: tuple[ModelRef, OnnxModel | None, BaseException | None] | None = None
        self._refused: tuple[str, str, int, int] | None = None
        self._registry_error: str | None = None
        self.swaps = 0
        self.failed_swaps = 0
        self.last_failure: SwapEvent | None = None

    @classmethod
    def open(
        cls,
        spec: ModelSpec,
        feature_names: Sequence[str],
        *,
        key: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> ModelSwitch:
        """Load the model `spec` names (raising if it cannot be served) and wrap it; `key`
        is the model key that registry manifests must be signed with (None: unverified)."""
        ref, registry = open_ref(spec, key=key)
        model = OnnxModel.load(ref, spec, feature_names)
        return cls(model, spec, feature_names, registry=registry, clock=clock)

    def current(self) -> OnnxModel:
        """The model to score the next whole batch with."""
        return self._model

    @property
    def loading(self) -> str | None:
        """The version being loaded in the background, if any."""
        ref = self._loading
        return ref.version if ref is not None else None

    def poll(self) -> SwapEvent | None:
        """Between batches: install a ready model, or check the registry when due."""
        finished = self._finish()
        if finished is not None:
            return finished
        if self._registry is None or self._loading is not None:
            return None
        now = self._clock()
        if now < self._next_check:
            return None
        self._next_check = now + self._spec.swap_poll_s
        return self._check(now)

    def _check(self, now: float) -> SwapEvent | None:
        assert self._registry is not None
        try:
            ref = self._registry.resolve(self._spec.name, self._spec.version)
            key = self._file_key(ref)
        except (RegistryError, ManifestSignatureError, OSError) as exc:
            if isinstance(exc, ManifestSignatureError):
                target, message = exc.version, f"{type(exc).__name__}: {exc}"
            else:
                target, message = "?", f"cannot read the registry: {exc}"
            if message == self._registry_error:
                return None  # reported once, not on every poll
            self._registry_error = message
            return self._failed(target, message, now)
        self._registry_error = None
        served = self._model.ref
        if ref.version == served.version and ref.sha256 == served.sha256:
            return None
        if key == self._refused:
            return None
        self._loading = ref
        self._thread = threading.Thread(
            target=self._load, args=(ref,), name=f"model-load-{ref}", daemon=True
        )
        self._thread.start()
        log.info("model %s: loading %s in the background", served, ref)
        return None

    @staticmethod
    def _file_key(ref: ModelRef) -> tuple[str, str, int, int]:
        # A refused version is retried only if its file changes (e.g. restored).
        stat = ref.path.stat()
        return (ref.version, ref.sha256, stat.st_mtime_ns, stat.st_size)

    def _load(self, ref: ModelRef) -> None:
        model: OnnxModel | None = None
        error: BaseException | None = None
        try:
            model = self._loader(ref)
        except Exception as exc:
            error = exc
        with self._lock:
            self._done = (ref, model, error)

    def _finish(self) -> SwapEvent | None:
        with self._lock:
            done, self._done = self._done, None
        if done is None:
            return None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._loading = None
        ref, model, error = done
        previous = self._model.version
        now = self._clock()
        if model is None:
            with contextlib.suppress(OSError):
                self._refused = self._file_key(ref)
            return self._failed(ref.version, f"{type(error).__name__}: {error}", now)
        self._model = model
        self.swaps += 1
        log.info("model %s: now serving v%s (was v%s)", ref.name, ref.version, previous)
        return SwapEvent(previous=previous, target=ref.version, ok=True, error=None, at=now)

    def _failed(self, target: str, error: str, now: float) -> SwapEvent:
        event = SwapEvent(
            previous=self._model.version, target=target, ok=False, error=error, at=now
        )
        self.failed_swaps += 1
        self.last_failure = event
        log.error(
            "model %s: refused v%s, still serving v%s: %s",
            self._spec.name,
            target,
            self._model.version,
            error,
        )
        return event

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a background load has finished (tests, shutdown); True if none left."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def close(self) -> None:
        """Wait for a background load so the process exits cleanly."""
        self.wait()
