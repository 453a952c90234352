"""Signed River snapshots in Redis: the key check, HMAC signing, publish and verified load.

A snapshot is pickled and HMAC-SHA256 signed with the secret shared by the learner and the
workers (`STREAMFER_SNAPSHOT_KEY`, passed in with the connection settings); it is verified
*before* it is unpickled, because unpickling runs code. The signed metadata names the
snapshot's version and its pipeline (the Redis namespace), so a signed snapshot copied under
another version number or into another pipeline's keys is refused, not served.

Redis keys (the namespace is the hash tag, so one Redis Cluster slot holds them all, and
the publish is one MULTI/EXEC on a single Redis and on a cluster alike: redis-py's cluster
pipeline runs a transaction whose keys share a slot on that slot's node):
    sf:{<ns>}:adapt:version       latest published version (int)
    sf:{<ns>}:adapt:snap:<v>      hash: meta (JSON), model (pickle), sig, state, state_sig
Older versions expire `SNAPSHOT_GRACE_S` after a newer one is published, so a worker that
read the pointer just before can still fetch what it points to.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import orjson

from features.redis_connect import RedisClient

log = logging.getLogger(__name__)

# Only named in messages: the settings (streams.spec.Connections) read the variable.
SNAPSHOT_KEY_ENV = "STREAMFER_SNAPSHOT_KEY"
SNAPSHOT_GRACE_S = 600
_MIN_KEY_LEN = 16


class SnapshotKeyMissing(Exception):
    """Adaptation is on but no usable signing key (`STREAMFER_SNAPSHOT_KEY`) was given."""


class SnapshotRejected(Exception):
    """A snapshot that fails verification; it is never unpickled."""


def snapshot_key(value: str | None) -> bytes:
    """The HMAC key shared by learner and workers, checked; a clear error when it is
    missing or too short to be a secret."""
    value = value or ""
    if len(value) < _MIN_KEY_LEN:
        state = "is not set" if not value else f"is shorter than {_MIN_KEY_LEN} characters"
        raise SnapshotKeyMissing(
            f"adaptation is on but {SNAPSHOT_KEY_ENV} {state}. Snapshots are pickles and are "
            "only loaded when signed: set the same secret for the learner and every worker, "
            f"e.g. `export {SNAPSHOT_KEY_ENV}=$(openssl rand -hex 32)`, or set "
            "adaptation.mode: off."
        )
    return value.encode()


def sign(key: bytes, meta: bytes, payload: bytes) -> str:
    """HMAC-SHA256 over the metadata and the payload (length-prefixed, so no splicing)."""
    mac = hmac.new(key, len(meta).to_bytes(8, "big"), hashlib.sha256)
    mac.update(meta)
    mac.update(payload)
    return mac.hexdigest()


def verify(key: bytes, meta: bytes, payload: bytes, signature: bytes | str | None) -> bool:
    """Whether `signature` is the one `sign` gives (compared in constant time)."""
    if signature is None:
        return False
    given = signature.decode("ascii", "replace") if isinstance(signature, bytes) else signature
    return hmac.compare_digest(sign(key, meta, payload), given)


@dataclass(frozen=True)
class Snapshot:
    version: int
    meta: dict[str, Any]
    model: Any
    state: Any = None  # the learner's companions (drift detectors, challenger window)


class SnapshotStore:
    """Publish and load signed snapshots of one namespace."""

    def __init__(self, client: RedisClient, namespace: str, key: bytes) -> None:
        self._client = client
        self._key = key
        self.namespace = namespace
        self.prefix = f"sf:{{{namespace}}}:adapt:"
        # The highest version this store has published or loaded: Redis losing its data
        # (a restart without persistence, FLUSHALL) resets the counter to 0, and workers
        # refuse any version below the one they serve, so a learner that outlived the loss
        # carries on above it instead of starting again at 1.
        self._floor = 0

    @property
    def version_key(self) -> str:
        return self.prefix + "version"

    def snapshot_key(self, version: int) -> str:
        return f"{self.prefix}snap:{version}"

    def latest_version(self) -> int | None:
        raw = self._client.get(self.version_key)
        return int(raw) if raw is not None else None

    def publish(self, model: Any, meta: Mapping[str, Any], state: Any = None) -> int:
        """Sign and store a new version atomically; the version pointer moves last. The
        signed metadata carries the version and the namespace (see `load`)."""
        counter = self.prefix + "counter"
        version = int(self._client.incr(counter))
        if version <= self._floor:
            log.warning(
                "adaptation snapshot counter was at %d, below version %d published before: "
                "Redis lost its data; going on from %d",
                version - 1,
                self._floor,
                self._floor + 1,
            )
            version = self._floor + 1
            self._client.set(counter, version)
        self._floor = version
        bound = {**meta, "version": version, "namespace": self.namespace}
        meta_bytes = orjson.dumps(bound, option=orjson.OPT_SORT_KEYS)
        payload = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        state_bytes = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(
            self.snapshot_key(version),
            mapping={
                "meta": meta_bytes,
                "model": payload,
                "sig": sign(self._key, meta_bytes, payload),
                "state": state_bytes,
                "state_sig": sign(self._key, meta_bytes, state_bytes),
            },
        )
        previous = self.latest_version()
        pipe.set(self.version_key, version)
        if previous is not None:
            pipe.expire(self.snapshot_key(previous), SNAPSHOT_GRACE_S)
        pipe.execute()
        return version

    def load(
        self, version: int, *, with_state: bool = False, allow_unbound: bool = False
    ) -> Snapshot | None:
        """Fetch, verify, then unpickle; None if the version is gone (expired).

        Refused (`SnapshotRejected`): a bad signature, and a signed version or namespace that
        is not `version` and this store's. A snapshot published before the namespace was
        signed carries none: refused too, unless `allow_unbound` (the learner resuming from
        its own last snapshot across the upgrade; it then publishes a bound one).
        """
        fields = ["meta", "model", "sig"] + (["state", "state_sig"] if with_state else [])
        values = cast(list[bytes | None], self._client.hmget(self.snapshot_key(version), fields))
        if values[0] is None and values[1] is None:
            return None
        meta, payload, sig = values[0], values[1], values[2]
        if meta is None or payload is None or not verify(self._key, meta, payload, sig):
            raise SnapshotRejected(
                f"snapshot version {version} has a bad signature: refused (tampered, or signed "
                f"with another {SNAPSHOT_KEY_ENV})"
            )
        state_bytes = values[3] if with_state else None
        if with_state and (
            state_bytes is None or not verify(self._key, meta, state_bytes, values[4])
        ):
            raise SnapshotRejected(f"snapshot version {version}: learner state bad signature")
        decoded = orjson.loads(meta)
        self._check_binding(version, decoded, allow_unbound=allow_unbound)
        self._floor = max(self._floor, version)
        # Only now, signed and bound, is anything unpickled.
        state = pickle.loads(state_bytes) if state_bytes is not None else None
        return Snapshot(version, decoded, pickle.loads(payload), state)

    def _check_binding(self, version: int, meta: dict[str, Any], *, allow_unbound: bool) -> None:
        """The signed version and namespace must be the pointer's and this store's."""
        signed_version, signed_ns = meta.get("version"), meta.get("namespace")
        if signed_ns is None:
            if not allow_unbound:
                raise SnapshotRejected(
                    f"snapshot version {version} carries no signed pipeline name (published "
                    "by a streamfer from before snapshots were bound to their version and "
                    "pipeline): refused; the learner publishes a bound one at its next "
                    "snapshot"
                )
            log.warning(
                "snapshot version %d carries no signed pipeline name (published before "
                "snapshots were bound): resuming from it once",
                version,
            )
        elif signed_ns != self.namespace:
            raise SnapshotRejected(
                f"snapshot version {version} is signed for pipeline {signed_ns!r}, not "
                f"{self.namespace!r}: refused (copied from another pipeline's keys?)"
            )
        if signed_version != version:
            raise SnapshotRejected(
                f"snapshot under version {version} is signed as version {signed_version}: "
                "refused (a signed snapshot copied under another version: a rollback?)"
            )
