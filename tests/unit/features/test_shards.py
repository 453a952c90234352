"""The shard layout: tags whose slots spread evenly, a stable shard per entity value."""

from __future__ import annotations

import zlib

from redis.crc import key_slot

from features.shards import SHARDS, ShardMap, epoch_keys, shard_of, shard_slots, shard_tags


def test_each_shard_slot_lies_in_its_own_sixteenth_of_the_slot_range() -> None:
    for namespace in ("default", "card-payments", "x"):
        slots = shard_slots(namespace)
        assert len(slots) == SHARDS
        span = 16384 // SHARDS
        assert [s // span for s in slots] == list(range(SHARDS))
        # Every key of a shard hashes to its tag's slot.
        assert [key_slot(k.encode()) for k in epoch_keys(namespace)] == list(slots)


def test_tags_differ_per_namespace_and_name_it() -> None:
    a, b = shard_tags("a"), shard_tags("b")
    assert all(t.startswith("a/") for t in a) and all(t.startswith("b/") for t in b)
    assert len(set(a)) == SHARDS


def test_the_shard_of_a_value_is_crc32_of_field_and_text() -> None:
    values = ["c1", "c2", "123", "a}b", "ü"]
    want = [zlib.crc32(f"card_id={v}".encode()) % SHARDS for v in values]
    assert [shard_of("card_id", v) for v in values] == want
    mapped = ShardMap(["card_id"]).shards("card_id", [*values, None, *values])
    assert mapped.tolist() == [*want, -1, *want]  # cached values map the same
