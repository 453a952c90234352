"""The state epoch: one key per shard saying "this feature state is whole".

Written by the first batch of a fresh pipeline and by `streamfer rebuild` when it is done;
checked by `features.lua` on every batch (no extra round trip). Each of the namespace's
`features.shards` has its own epoch key, in its own slot (`sf:<ns>:{<shard tag>}:epoch`):
a Redis (or one cluster node) losing its data (restart without persistence, FLUSHALL,
eviction) takes its shards' epochs with it, so the next batch of a worker that saw an
epoch, or of a worker whose partitions have history, raises `StateLost` instead of serving
features computed on empty state. A rebuild sets every shard's epoch to `REBUILDING_EPOCH`
first, wipes the other state keys (not the epochs), and writes one new epoch to all shards
when done.
"""

from __future__ import annotations

import uuid

from features.redis_connect import RedisClient
from features.semantics import LOST_EPOCH, REBUILDING_EPOCH
from features.shards import epoch_keys


def epoch_key(namespace: str, shard: int = 0) -> str:
    """The epoch key of one shard of the namespace."""
    return epoch_keys(namespace)[shard]


def new_epoch() -> str:
    """A fresh epoch id: any value differs from every earlier one."""
    return uuid.uuid4().hex


def read_epoch(client: RedisClient, namespace: str) -> str | None:
    """The namespace's epoch as one value: None when any shard's is gone (or was never
    written), else LOST_EPOCH or REBUILDING_EPOCH if any shard says so, else shard 0's."""
    values = []
    for key in epoch_keys(namespace):  # one GET per shard: keys in 16 slots
        value = client.get(key)
        if value is None:
            return None
        values.append(value.decode() if isinstance(value, bytes) else str(value))
    for mark in (LOST_EPOCH, REBUILDING_EPOCH):
        if mark in values:
            return mark
    return values[0]


def mark_rebuilding(client: RedisClient, namespace: str) -> None:
    """Hold every guarded batch off the namespace until `write_epoch`: a rebuild running
    (or one that did not finish) is lost state to the workers."""
    for key in epoch_keys(namespace):
        client.set(key, REBUILDING_EPOCH)


def write_epoch(client: RedisClient, namespace: str) -> str:
    """Declare the namespace's state whole (after a rebuild): a new epoch, no TTL."""
    epoch = new_epoch()
    for key in epoch_keys(namespace):
        client.set(key, epoch)
    return epoch
