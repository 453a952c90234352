"""Which model file to serve (`ModelRef`: path + the sha256 it must have), its bytes read only
when they are the registered ones, and the errors of loading a model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path


class ModelLoadError(Exception):
    """A model could not be loaded; the message names the model, the cause and the fix."""


class ModelIntegrityError(ModelLoadError):
    """The model file's sha256 differs from the one recorded for it: it is not loaded."""


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
            "was changed after it was registered or pinned. Re-register (or re-pin) the "
            "intended file (it is not loaded)"
        )
    return data
