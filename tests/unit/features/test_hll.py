"""The HyperLogLog port equals Redis: hashes, registers and estimates, bit for bit."""

from __future__ import annotations

import random
import uuid

import pytest
import redis

from features.hll import (
    HyperLogLog,
    count_union,
    member_bytes,
    register_and_value,
    register_codes,
)


def _hll(members: list[str]) -> HyperLogLog:
    hll = HyperLogLog()
    for member in members:
        hll.add(member.encode())
    return hll


def test_empty_hll_counts_zero() -> None:
    assert HyperLogLog().count() == 0
    assert count_union([]) == 0


def test_one_member_sets_the_register_redis_sets() -> None:
    # PFADD k a; PFDEBUG GETREG k → register 12711 holds 2 (Redis 7.0).
    assert register_and_value(b"a") == (12711, 2)
    assert _hll(["a"]).count() == 1


def test_estimates_equal_redis_pfcount() -> None:
    # Values read from redis-server 7.0 for the same members.
    thousand = _hll([str(i) for i in range(1000)])
    many = _hll([f"user:{j}" for j in range(100_000)])
    assert thousand.count() == 1001
    assert many.count() == 99471
    assert count_union([thousand, many]) == 100614


def test_add_reports_whether_a_register_changed() -> None:
    hll = HyperLogLog()
    assert hll.add(b"x") is True
    assert hll.add(b"x") is False


def test_member_bytes_are_the_text_redis_py_sends() -> None:
    assert member_bytes(123) == b"123"
    assert member_bytes("é") == "é".encode()
    assert member_bytes(1.5) == b"1.5"


def test_register_codes_of_a_batch_equal_one_member_at_a_time() -> None:
    # Vectorised per byte length: lengths with and without whole 8-byte blocks, empty,
    # multi-byte UTF-8, and None passed through.
    rng = random.Random(3)
    members: list[bytes | None] = [
        bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40))) for _ in range(3000)
    ]
    members += [None, b"", "é€".encode(), b"a"]
    codes = register_codes(members)
    assert codes[-4] is None
    for member, code in zip(members, codes, strict=True):
        if member is not None:
            register, value = register_and_value(member)
            assert code == register * 64 + value
    assert register_codes([]).tolist() == []


@pytest.mark.integration
def test_registers_and_counts_equal_live_redis(admin_client: redis.Redis) -> None:
    # PFDEBUG and keys outside sf:* are the admin user's, not the streamfer user's.
    client = admin_client
    rng = random.Random(7)
    keys = [f"test-hll:{uuid.uuid4().hex}:{i}" for i in range(3)]
    hlls = []
    try:
        for key, size in zip(keys, (3, 700, 20_000), strict=True):
            members = [str(rng.getrandbits(48)) for _ in range(size)]
            for start in range(0, size, 1000):
                client.pfadd(key, *members[start : start + 1000])
            hlls.append(_hll(members))
            assert hlls[-1].count() == client.pfcount(key)
            registers = client.execute_command("PFDEBUG", "GETREG", key)
            assert hlls[-1].registers.tolist() == list(registers)
        assert count_union(hlls) == client.pfcount(*keys)
        assert count_union(hlls[:2]) == client.pfcount(*keys[:2])
    finally:
        client.delete(*keys)
