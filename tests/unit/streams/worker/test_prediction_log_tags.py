"""The prediction log's per-shard hash tags spread a batch evenly over a Redis Cluster."""

from __future__ import annotations

from collections import Counter

import pytest
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from streams.worker.prediction_log import SHARD_TAGS, SHARDS


def _even_split_owner(slot: int, nodes: int) -> int:
    """The node owning `slot` when `nodes` primaries split the slots evenly, in order (as
    `redis-cli --cluster create` does)."""
    return slot * nodes // REDIS_CLUSTER_HASH_SLOTS


def test_each_shard_has_its_own_slot_and_the_key_hashes_by_the_tag_alone() -> None:
    slots = [key_slot(f"sf:ns:plh:{{{tag}}}:123".encode()) for tag in SHARD_TAGS]
    assert len(SHARD_TAGS) == SHARDS
    assert len(set(slots)) == SHARDS
    assert slots == [key_slot(f"sf:other:plh:{{{tag}}}:9".encode()) for tag in SHARD_TAGS]


@pytest.mark.parametrize("nodes", range(1, 9))
def test_the_shards_spread_over_an_even_split_within_one_of_the_mean(nodes: int) -> None:
    per_node = Counter(_even_split_owner(key_slot(tag.encode()), nodes) for tag in SHARD_TAGS)
    assert set(per_node) == set(range(nodes))
    assert all(abs(count - SHARDS / nodes) < 1 for count in per_node.values()), per_node
