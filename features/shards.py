"""The feature state's shards: 16 hash tags per namespace, the same on one Redis and a cluster.

Every key of the feature state lies in one of `SHARDS` shards, each one Redis Cluster hash
tag (`{<ns>/<i>.<j>}`), so everything a shard holds is in one slot and a script call to
one node touches only that node's slots. The layout does not depend on the deployment: a
single Redis holds the same keys as a cluster would, so its state can be moved into a
cluster (MIGRATE) without a rebuild.

An entity value's shard is a stable hash of (entity field, value text): zlib.crc32 of
`<field>=<value>` mod `SHARDS`, computed in Python while a batch is encoded. Each shard's
tag is chosen so that the 16 slots spread evenly over 0..16383 (shard i's slot lies in the
i-th sixteenth), so a cluster created with even slot ranges gets ~16/N shards per node.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence

import numpy as np
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

SHARDS = 16

# A shard-of-value cache per field is dropped when it grows past this: bounded memory,
# and busy entities (most of the events) stay cached.
_CACHE_LIMIT = 200_000


@functools.cache
def shard_tags(namespace: str) -> tuple[str, ...]:
    """The hash tag text of each shard (without braces): `<ns>/<i>.<j>`, j the first suffix
    whose slot lies in shard i's sixteenth of the slot range."""
    span = REDIS_CLUSTER_HASH_SLOTS // SHARDS
    tags = []
    for i in range(SHARDS):
        j = 0
        while not i * span <= key_slot(f"{namespace}/{i}.{j}".encode()) < (i + 1) * span:
            j += 1
        tags.append(f"{namespace}/{i}.{j}")
    return tuple(tags)


def shard_slots(namespace: str) -> tuple[int, ...]:
    """The cluster slot of each shard."""
    return tuple(key_slot(t.encode()) for t in shard_tags(namespace))


def shard_prefixes(namespace: str) -> tuple[str, ...]:
    """Each shard's key prefix `sf:<ns>:{<tag>}:`."""
    return tuple(f"sf:{namespace}:{{{t}}}:" for t in shard_tags(namespace))


def epoch_keys(namespace: str) -> tuple[str, ...]:
    """Each shard's state epoch key (see `features.epoch`)."""
    return tuple(p + "epoch" for p in shard_prefixes(namespace))


def shard_of(field: str, value: str) -> int:
    """The shard of one entity value (its text, as the store keys it)."""
    return zlib.crc32(f"{field}={value}".encode()) % SHARDS


class ShardMap:
    """Shards of a batch's entity values, with a bounded cache per field (a busy entity
    is hashed once, not per event)."""

    def __init__(self, fields: Sequence[str]) -> None:
        self._caches: dict[str, dict[str, int]] = {f: {} for f in fields}

    def shards(self, field: str, values: Sequence[str | None]) -> np.ndarray:
        """int8 per value: its shard, -1 for a missing value."""
        cache = self._caches[field]
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        out = np.empty(len(values), dtype=np.int8)
        for i, v in enumerate(values):
            if v is None:
                out[i] = -1
                continue
            s = cache.get(v)
            if s is None:
                s = cache[v] = zlib.crc32(f"{field}={v}".encode()) % SHARDS
            out[i] = s
        return out
