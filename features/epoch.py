"""The state epoch: one key per namespace saying "this feature state is whole".

Written by the first batch of a fresh pipeline and by `streamfer rebuild` when it is done;
checked by `features.lua` on every batch (no extra round trip). Redis losing its data
(restart without persistence, FLUSHALL, eviction) takes the key with it, so the next batch
of a worker that saw it, or of a worker whose partitions have history, raises `StateLost`
instead of serving features computed on empty state. `sf:<ns>:epoch` lies outside the
feature-state keys proper (`sf:<ns>:{*`, what a rebuild wipes and compares): a rebuild
sets it to `REBUILDING_EPOCH` first and to a new epoch when done.
"""

from __future__ import annotations

import uuid

import redis

from features.semantics import REBUILDING_EPOCH


def epoch_key(namespace: str) -> str:
    """The epoch's key; without a hash tag, as nothing else is read in its slot."""
    return f"sf:{namespace}:epoch"


def new_epoch() -> str:
    """A fresh epoch id: any value differs from every earlier one."""
    return uuid.uuid4().hex


def read_epoch(client: redis.Redis, namespace: str) -> str | None:
    """The namespace's epoch, None when the state is gone (or was never written)."""
    value = client.get(epoch_key(namespace))
    return None if value is None else value.decode() if isinstance(value, bytes) else str(value)


def mark_rebuilding(client: redis.Redis, namespace: str) -> None:
    """Hold every guarded batch off the namespace until `write_epoch`: a rebuild running
    (or one that did not finish) is lost state to the workers."""
    client.set(epoch_key(namespace), REBUILDING_EPOCH)


def write_epoch(client: redis.Redis, namespace: str) -> str:
    """Declare the namespace's state whole (after a rebuild): a new epoch, no TTL."""
    epoch = new_epoch()
    client.set(epoch_key(namespace), epoch)
    return epoch
