"""Signed registry manifests: the model key check, HMAC-SHA256 over a manifest, verification.

A manifest records the sha256 of the model file next to it, so whoever can write the
registry folder could rewrite both together. Signed with the operator's model key
(`STREAMFER_MODEL_KEY`, passed in by the caller, never read here), a rewritten manifest no
longer verifies: only someone holding the key can approve a model file.

The signature covers every other field of the manifest (name, version, sha256, source, …)
as canonical JSON behind a domain tag, so a signed manifest copied to another name or
version, or any edited field, is refused, and a key shared with snapshots by mistake cannot
turn a snapshot signature into a manifest signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from inference.model_ref import ModelIntegrityError, ModelLoadError

# Only named in messages: the settings (streams.spec.Connections) read the variable.
MODEL_KEY_ENV = "STREAMFER_MODEL_KEY"
SIGNATURE_FIELD = "hmac_sha256"
_DOMAIN = b"streamfer model manifest v1\n"
_MIN_KEY_LEN = 16


class ModelKeyError(ModelLoadError):
    """A model key was given but is too short to be a secret."""


class ManifestSignatureError(ModelIntegrityError):
    """A manifest that is unsigned, or whose signature is not the model key's: not served."""

    def __init__(self, message: str, *, name: str, version: str) -> None:
        super().__init__(message)
        self.name = name
        self.version = version


def model_key(value: str | None) -> bytes | None:
    """The manifest key as bytes, None when unset; a clear error when it is too short."""
    if not value:
        return None
    if len(value) < _MIN_KEY_LEN:
        raise ModelKeyError(
            f"{MODEL_KEY_ENV} is shorter than {_MIN_KEY_LEN} characters: use a real secret, "
            f"e.g. `export {MODEL_KEY_ENV}=$(openssl rand -hex 32)`"
        )
    return value.encode()


def _canonical(manifest: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != SIGNATURE_FIELD}
    return _DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def manifest_signature(key: bytes, manifest: Mapping[str, Any]) -> str:
    """HMAC-SHA256 (hex) of every field of `manifest` but the signature itself."""
    return hmac.new(key, _canonical(manifest), hashlib.sha256).hexdigest()


def sign_manifest(key: bytes, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """`manifest` with its signature field set."""
    body = {k: v for k, v in manifest.items() if k != SIGNATURE_FIELD}
    return {**body, SIGNATURE_FIELD: manifest_signature(key, body)}


def is_signed(manifest: Mapping[str, Any]) -> bool:
    return isinstance(manifest.get(SIGNATURE_FIELD), str)


def verify_manifest(key: bytes, manifest: Mapping[str, Any], *, name: str, version: str) -> None:
    """Raise `ManifestSignatureError` unless `manifest` carries the signature `key` gives."""
    given = manifest.get(SIGNATURE_FIELD)
    if not isinstance(given, str):
        raise ManifestSignatureError(
            f"model {name} v{version}: the manifest is not signed, and this worker has "
            f"{MODEL_KEY_ENV}: refused. Register the file again with the operator's "
            f"{MODEL_KEY_ENV} set (`streamfer model register`)",
            name=name,
            version=version,
        )
    if not hmac.compare_digest(manifest_signature(key, manifest), given):
        raise ManifestSignatureError(
            f"model {name} v{version}: manifest signature does not match: re-register with "
            f"the operator's {MODEL_KEY_ENV} (the manifest was edited, or signed with "
            "another key): refused",
            name=name,
            version=version,
        )
