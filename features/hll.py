"""Redis-compatible HyperLogLog, so `count_distinct` in the reference equals Redis bit for bit.

A port of the parts of Redis 7's src/hyperloglog.c that decide a result: MurmurHash64A with
seed 0xadc83b19, P = 14 (16384 six-bit registers), the register update rule of
`hllPatLen` (low 14 bits pick the register, the run of zeros above them plus one is the
candidate value), and `hllCount`, Otmar Ertl's improved estimator ("New cardinality
estimation algorithms for HyperLogLog sketches", arXiv:1702.01284). PFCOUNT over several
keys is the estimator on the register-wise maximum, which `count_union` reproduces.
Registers are kept unpacked (one byte each); Redis's sparse/dense encodings hold the
same register values, so the estimate is the same.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

P = 14
Q = 64 - P
REGISTERS = 1 << P
SEED = 0xADC83B19
ALPHA_INF = 0.721347520444481703680  # 0.5 / ln(2)
_M = 0xC6A4A7935BD1E995
_R = 47
_MASK64 = (1 << 64) - 1


def murmurhash64a(data: bytes, seed: int = SEED) -> int:
    """Redis's endian-neutral MurmurHash64A (64-bit MurmurHash2) of `data`."""
    h = (seed ^ (len(data) * _M)) & _MASK64
    whole = len(data) - len(data) % 8
    for i in range(0, whole, 8):
        k = (int.from_bytes(data[i : i + 8], "little") * _M) & _MASK64
        k ^= k >> _R
        k = (k * _M) & _MASK64
        h = ((h ^ k) * _M) & _MASK64
    if whole != len(data):
        # The C switch XORs the tail bytes in little-endian order, then multiplies once.
        h = ((h ^ int.from_bytes(data[whole:], "little")) * _M) & _MASK64
    h ^= h >> _R
    h = (h * _M) & _MASK64
    h ^= h >> _R
    return h


def register_and_value(member: bytes) -> tuple[int, int]:
    """`hllPatLen`: the register a member hashes to, and the value it proposes (1..Q+1)."""
    h = murmurhash64a(member)
    rest = (h >> P) | (1 << Q)  # the sentinel bit caps the run at Q zeros
    return h & (REGISTERS - 1), (rest & -rest).bit_length()


_M64 = np.uint64(_M)
_R64 = np.uint64(_R)


def _murmurhash64a_many(data: np.ndarray) -> np.ndarray:
    """`murmurhash64a` of each row of `data` (uint8, every row of one length), vectorised:
    numpy's uint64 arithmetic wraps modulo 2**64 as the C does."""
    n, length = data.shape
    h = np.full(n, (SEED ^ (length * _M)) & _MASK64, dtype=np.uint64)
    whole = length - length % 8
    if whole:
        blocks = np.ascontiguousarray(data[:, :whole]).view("<u8")
        for c in range(whole // 8):
            k = blocks[:, c] * _M64
            k ^= k >> _R64
            k *= _M64
            h ^= k
            h *= _M64
    if whole != length:
        tail = np.zeros(n, dtype=np.uint64)
        for j in range(length - whole):
            tail |= data[:, whole + j].astype(np.uint64) << np.uint64(8 * j)
        h ^= tail
        h *= _M64
    h ^= h >> _R64
    h *= _M64
    h ^= h >> _R64
    return h


def register_codes(members: Sequence[bytes | None]) -> np.ndarray:
    """Per member `register * 64 + value` of `register_and_value` (None stays None), as an
    object array, hashed a batch at a time (one numpy pass per member length): features.lua
    keeps small count_distinct sets as these registers."""
    codes = np.full(len(members), None, dtype=object)
    by_length: dict[int, list[int]] = {}
    for i, m in enumerate(members):
        if m is not None:
            by_length.setdefault(len(m), []).append(i)
    for length, rows in by_length.items():
        data = np.frombuffer(b"".join([members[i] for i in rows]), dtype=np.uint8)  # type: ignore[misc]
        h = _murmurhash64a_many(data.reshape(len(rows), length))
        rest = (h >> np.uint64(P)) | np.uint64(1 << Q)
        lowest = rest & (~rest + np.uint64(1))  # a power of two: its log2 is exact
        values = np.log2(lowest.astype(np.float64)).astype(np.int64) + 1
        codes[rows] = ((h & np.uint64(REGISTERS - 1)).astype(np.int64) * 64 + values).tolist()
    return codes


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        z_prime = z
        z += x * y
        y += y
        if z_prime == z:
            return z


def _tau(x: float) -> float:
    if x == 0.0 or x == 1.0:
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = math.sqrt(x)
        z_prime = z
        y *= 0.5
        d = 1.0 - x
        z -= d * d * y  # C: pow(1 - x, 2) * y; pow(d, 2) is exactly d * d rounded once
        if z_prime == z:
            return z / 3.0


def _round_half_away(x: float) -> int:
    # C's llroundl; x - floor(x) is exact for any double.
    whole = math.floor(x)
    return int(whole) + (1 if x - whole >= 0.5 else 0)


def estimate(registers: np.ndarray) -> int:
    """`hllCount`: Ertl's improved estimator over 16384 register values."""
    histogram = np.bincount(registers, minlength=64).tolist()
    m = float(REGISTERS)
    z = m * _tau((m - histogram[Q + 1]) / m)
    for j in range(Q, 0, -1):
        z += histogram[j]
        z *= 0.5
    z += m * _sigma(histogram[0] / m)
    return _round_half_away(ALPHA_INF * m * m / z)


class HyperLogLog:
    """One HLL (one Redis key): `add` is PFADD of one member, `count` is PFCOUNT."""

    __slots__ = ("registers",)

    def __init__(self) -> None:
        self.registers = np.zeros(REGISTERS, dtype=np.uint8)

    def add(self, member: bytes) -> bool:
        """Add one member; True when a register changed (PFADD's reply)."""
        index, value = register_and_value(member)
        if value > self.registers[index]:
            self.registers[index] = value
            return True
        return False

    def count(self) -> int:
        """The cardinality estimate (PFCOUNT key)."""
        return estimate(self.registers)


def count_union(hlls: Iterable[HyperLogLog]) -> int:
    """PFCOUNT k1 k2 …: the estimate of the register-wise maximum; 0 for no keys."""
    merged: np.ndarray | None = None
    for hll in hlls:
        merged = hll.registers.copy() if merged is None else np.maximum(merged, hll.registers)
    return 0 if merged is None else estimate(merged)


def member_bytes(value: object) -> bytes:
    """The bytes hashed for a record value: UTF-8 of str(value), as redis-py would send it."""
    return (value if isinstance(value, str) else str(value)).encode()
