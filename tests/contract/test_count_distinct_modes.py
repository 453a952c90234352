"""count_distinct in features.lua's two modes equals the reference, and so do the keys.

An entity's count_distinct starts with its HyperLogLog registers in its state (registers
mode, the worker hashing the members); once a window's union would pass the state's cap it
moves to real HLL keys written from those registers (Redis's sparse encoding, or dense for a
register value above 32) and counts on with PFADD/PFCOUNT; once every bucket is trimmed it
is back in the state. A state written before registers mode (buckets as HLL keys) counts on
in keys mode. Each case is checked against `ReferenceFeatureStore` event by event, and the
keys against Redis's own registers (PFDEBUG GETREG, the admin user's).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pytest
import redis

from features.hll import SEED, HyperLogLog, murmurhash64a, register_and_value
from features.redis_store import RedisFeatureStore, aggregation_id
from features.reference import ReferenceFeatureStore
from features.shards import shard_of, shard_prefixes
from features.spec import FeatureSpec
from features.store import FeatureBatch
from tests.contract.test_feature_store import SPEC as CONTRACT_SPEC

pytestmark = pytest.mark.integration

S = 1_000
MIN = 60 * S
T0 = 28_333_334 * MIN
CAP = 64  # features.lua's registers per window union held in the state

# The contract spec's count_distinct (first column here) and count of the card.
_BY_NAME = {a.name: a.model_dump(exclude_none=True) for a in CONTRACT_SPEC.aggregations}
SPEC = FeatureSpec.model_validate(
    {"lateness": "90s", "aggregations": [_BY_NAME["merchants"], _BY_NAME["n"]]}
)
Event = tuple[int, dict[str, Any]]
_M = 0xC6A4A7935BD1E995
_MASK = (1 << 64) - 1


def high_member(rng: random.Random) -> str:
    """An 8-character ASCII member whose HLL register value is above 32 (probability 2^-32
    for a random member): MurmurHash64A is invertible, so pick a hash with bits 14..45 zero
    and invert it until the block is printable."""
    inverse = pow(_M, -1, 1 << 64)

    def unshift(x: int) -> int:  # x ^ (x >> 47) is its own inverse on 64 bits
        return x ^ (x >> 47)

    start = (SEED ^ (8 * _M)) & _MASK
    while True:
        h = rng.getrandbits(14) | (rng.getrandbits(18) << 46)
        after_blocks = unshift((unshift(h) * inverse) & _MASK)
        k = ((after_blocks * inverse) & _MASK) ^ start
        block = (unshift((k * inverse) & _MASK) * inverse) & _MASK
        data = block.to_bytes(8, "little")
        if all(0x21 <= c <= 0x7E for c in data):
            assert murmurhash64a(data) == h and register_and_value(data)[1] > 32
            return data.decode()


def run(
    store: RedisFeatureStore, reference: ReferenceFeatureStore, batches: Sequence[list[Event]]
) -> list[list[float]]:
    """Feeds both stores batch by batch; every value and flag must be equal."""
    seen = []
    for events in batches:
        batch = FeatureBatch([r for _, r in events], [t for t, _ in events])
        got, want = store.update_and_read(batch), reference.update_and_read(batch)
        np.testing.assert_array_equal(got.values, want.values)
        np.testing.assert_array_equal(got.late, want.late)
        seen.append(got.values[:, 0].tolist())
    return seen


def ev(t: int, merchant: Any, card: str = "c1") -> Event:
    return t, {"card": card, "merchant": merchant}


def many_members_stream(rng: random.Random) -> list[list[Event]]:
    """A card under the cap, then past it mid-batch, out-of-order and late events, one
    member of register value > 32, then quiet long enough that every bucket is trimmed."""
    high = high_member(rng)
    first = [ev(T0 + i * S, f"m{i}") for i in range(40)] + [ev(T0 + 41 * S, high)]
    # bucket 1: 40 more members pass the cap (union of 3m > 64 registers) at some event
    second = [ev(T0 + MIN + i * S, f"n{i}") for i in range(40)]
    second += [ev(T0 + 30 * S, "late-but-within-lateness"), ev(T0 + MIN + 45 * S, "m3")]
    third = [ev(T0 + 2 * MIN + i * S, f"m{i}") for i in range(0, 80, 3)]
    third += [ev(T0 + 10 * S, "too-late")]  # beyond the 90 s lateness: read, not applied
    # 10 minutes on: every bucket is below the retention floor, registers mode again
    fourth = [ev(T0 + 12 * MIN + i * S, f"k{i % 7}") for i in range(30)]
    return [first, second, third, fourth]


def test_past_the_cap_an_entity_counts_on_in_hll_keys_as_the_reference(
    module_client: Any,
) -> None:
    rng = random.Random(5)
    store = RedisFeatureStore(SPEC, module_client, f"cd-{uuid.uuid4().hex[:10]}")
    try:
        seen = run(store, ReferenceFeatureStore(SPEC), many_members_stream(rng))
    finally:
        store.close()
    assert seen[0][-1] > 40 and max(seen[1]) > CAP  # the union did pass the cap
    assert seen[3][-1] == 7


def test_registers_in_the_state_equal_small_sets_exactly_as_the_reference(
    module_client: Any,
) -> None:
    # Many cards of few members each, batch after batch, with members repeated.
    rng = random.Random(11)
    batches = []
    t = T0
    for _ in range(6):
        events = []
        for _ in range(200):
            t += rng.randint(0, 2) * S
            events.append(ev(t, f"m{rng.randint(0, 30)}", card=f"c{rng.randint(0, 40)}"))
        batches.append(events)
    store = RedisFeatureStore(SPEC, module_client, f"cd-{uuid.uuid4().hex[:10]}")
    try:
        run(store, ReferenceFeatureStore(SPEC), batches)
    finally:
        store.close()


def test_keys_written_past_the_cap_hold_redis_own_registers(
    client: redis.Redis, admin_client: redis.Redis
) -> None:
    rng = random.Random(5)
    namespace = f"cd-{uuid.uuid4().hex[:10]}"
    store = RedisFeatureStore(SPEC, client, namespace)
    batches = many_members_stream(rng)
    try:
        run(store, ReferenceFeatureStore(SPEC), batches[:2])  # in keys mode after these
    finally:
        store.close()
    applied: dict[int, HyperLogLog] = {}
    for events in batches[:2]:
        for t, record in events:
            if record["merchant"] != "too-late":
                hll = applied.setdefault(t // MIN, HyperLogLog())
                hll.add(record["merchant"].encode())
    prefix = shard_prefixes(namespace)[shard_of("card", "c1")]
    hk = f"{prefix}card=c1:h:{aggregation_id(SPEC.aggregations[0])}:"
    for bucket, hll in applied.items():
        key = f"{hk}{bucket}"
        registers = admin_client.execute_command("PFDEBUG", "GETREG", key)
        assert list(registers) == hll.registers.tolist(), f"bucket {bucket}"
        assert admin_client.pfcount(key) == hll.count()
    # The member of register value > 32 made bucket 0's key dense (sparse holds 1..32).
    assert admin_client.execute_command("PFDEBUG", "ENCODING", f"{hk}{T0 // MIN}") == b"dense"


def test_a_state_of_hll_keys_from_before_registers_mode_counts_on(
    client: redis.Redis, admin_client: redis.Redis
) -> None:
    # What the previous release wrote for this spec: buckets of 1, each a real HLL key.
    namespace = f"cd-{uuid.uuid4().hex[:10]}"
    prefix = shard_prefixes(namespace)[shard_of("card", "c1")]
    ids = [aggregation_id(a) for a in SPEC.aggregations]
    before = [ev(T0, "a"), ev(T0 + S, "b"), ev(T0 + MIN, "c"), ev(T0 + MIN + S, "a")]
    state = {"w": T0 + MIN + S, "a": {ids[0]: [T0 // MIN, 1, 1], ids[1]: [T0 // MIN, 2, 2]}}
    admin_client.eval(
        "return redis.call('SET', KEYS[1], cmsgpack.pack(cjson.decode(ARGV[1])), 'PX', ARGV[2])",
        1,
        f"{prefix}card=c1:s",
        orjson.dumps(state),
        600_000,
    )
    for t, record in before:
        admin_client.pfadd(f"{prefix}card=c1:h:{ids[0]}:{t // MIN}", record["merchant"])
    reference = ReferenceFeatureStore(SPEC)
    reference.update_and_read(FeatureBatch([r for _, r in before], [t for t, _ in before]))
    after = [[ev(T0 + MIN + 2 * S, "d"), ev(T0 + 2 * MIN, "b"), ev(T0 + 2 * MIN + S, "e")]]
    store = RedisFeatureStore(SPEC, client, namespace)
    try:
        assert run(store, reference, after) == [[4.0, 4.0, 5.0]]
    finally:
        store.close()
