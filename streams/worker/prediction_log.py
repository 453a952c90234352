"""The prediction log: what each event was scored with, kept until its label is due.

Each event's entry (the feature vector as scored, the scores and the versions) is a field of
a hash: the hash of its shard (crc32 of the event id, 32 shards) in the slot of wall-clock time
it was written in (a quarter of the spec's label horizon). A batch is one pipeline: one HSET
and one PEXPIRE per shard, instead of one SET PX per event from a script (a key and an expiry
per event, and every entry copied through Lua, cost Redis about 2.5× the CPU per event:
`python -m bench.prediction_log`). A hash expires a
horizon after its slot ends, so an entry lives between one and 1.25 label horizons. The
learner joins a label by reading the event id's shard in every slot that can still hold it,
newest first (one or two pipelines of HMGET per batch of labels). Feature names
are stored once per feature set (keyed by a hash of the names) instead of in every entry.

An entry is packed, not JSON: a magic prefix, a small JSON header shared by the whole batch
(feature set, score names, versions), then one little-endian float64 row: the features,
the scores, the event time. Building it is a bytes slice and a concatenation per event
(JSON cost ~6 µs of Python per event), and NaN survives the round trip.

Key layout: `sf:<ns>:plh:{<tag>}:<slot>` (hash: event id → entry; slot = wall-clock ms //
slot length; one hash tag per shard, `SHARD_TAGS`) and `sf:{<ns>}:featureset:<id>`. Each
shard's tag is chosen so that its Redis Cluster slot lies in the middle of its own 1/32 of
the 16384 slots: the shards spread evenly over the nodes of any cluster whose slots are
split evenly (11/10/11 over 3 primaries), instead of every write going to the one node of
the namespace's slot. The write pipeline and the learner's reads are then one round trip per
node (redis-py's cluster pipeline groups the commands by node); on a single Redis nothing
changes. At R events/s a hash holds about R × horizon / 128 entries, freed at once when it
expires: at high rates give Redis `lazyfree-lazy-expire yes` so that this happens off its
main thread.

Upgrading: the learner also reads the layouts of earlier versions, for the ids the current
one does not hold: the namespace-tagged hashes `sf:{<ns>}:plh:<slot>:<shard>` and the
one-key-per-event entries `sf:{<ns>}:pl:<event_id>` (packed, or JSON). So a rolling upgrade
loses no join as long as the learner is upgraded first; an earlier worker's entries are
joined until they expire, a label horizon (and a quarter) after that worker stopped.
"""

from __future__ import annotations

import hashlib
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from features.redis_connect import RedisClient

SHARDS = 32
"""Hashes per slot: a batch writes each with one HSET and reads each with one HMGET per slot;
more shards make smaller hashes (a hash is freed at once when it expires) but more calls."""
SLOTS_PER_HORIZON = 4
"""The slot is a quarter of the label horizon: an entry outlives its horizon by at most that."""


# Starts with a NUL byte, which no JSON document (the earlier format) can.
_MAGIC = b"\x00sfpl1"
_HEADER_AT = len(_MAGIC) + 2  # after the magic: the header's length, uint16 little-endian


def _shard_tags() -> tuple[str, ...]:
    """Per shard, the first tag `pl<shard>.<n>` whose cluster slot lies within an eighth of
    its part's width of the middle of that shard's 1/SHARDS of the slots. The middle, not
    anywhere in the part: nodes split the slots evenly (5461 each of 3), so a part's edges
    may fall on either side of a node boundary, its middle does not (a few ms at import)."""
    width = REDIS_CLUSTER_HASH_SLOTS // SHARDS
    tags = []
    for shard in range(SHARDS):
        middle, n = shard * width + width // 2, 0
        while abs(key_slot(f"pl{shard}.{n}".encode()) - middle) > width // 8:
            n += 1
        tags.append(f"pl{shard}.{n}")
    return tuple(tags)


SHARD_TAGS = _shard_tags()
"""The hash tag of each shard's hashes: the writer and the learner derive the same ones."""


def shard_of(event_id: str) -> int:
    """The shard of an event id's entry: the same for the worker that writes and the learner."""
    return zlib.crc32(event_id.encode()) % SHARDS


@dataclass(frozen=True, slots=True)
class LoggedPrediction:
    event_id: str
    features: dict[str, float]
    scores: dict[str, float]
    model_version: str
    adaptation_version: str | None
    event_time_ms: int


class PredictionLog:
    def __init__(
        self,
        client: RedisClient,
        namespace: str,
        feature_names: Sequence[str],
        horizon_ms: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        # Per shard, the prefix of its hashes (the slot follows).
        self._hash_prefixes = tuple(f"sf:{namespace}:plh:{{{tag}}}:" for tag in SHARD_TAGS)
        # Earlier versions' layouts, read only: hashes of the namespace's one slot, one key
        # per event.
        self._ns_hash_prefix = f"sf:{{{namespace}}}:plh:"
        self._prefix = f"sf:{{{namespace}}}:pl:"
        self._slot_ms = max(horizon_ms // SLOTS_PER_HORIZON, 1_000)
        self._clock = clock
        self._names = tuple(feature_names)
        self.feature_set = hashlib.sha256("\x1f".join(self._names).encode()).hexdigest()[:16]
        self._set_key = f"sf:{{{namespace}}}:featureset:{self.feature_set}"
        self._horizon_ms = horizon_ms
        self._names_written = False

    def write(
        self,
        event_ids: Sequence[str],
        features: np.ndarray,
        scores: dict[str, np.ndarray],
        model_version: str,
        adaptation_version: str | None,
        event_time_ms: Sequence[int] | np.ndarray,
    ) -> None:
        """Log one batch in one round trip: a pipeline of one HSET + PEXPIRE per shard."""
        client = self._client
        if not self._names_written:
            pipe = client.pipeline(transaction=False)
            pipe.set(self._set_key, orjson.dumps(self._names))
            pipe.persist(self._set_key)
            pipe.execute()
            self._names_written = True
        if len(event_ids) == 0:
            return
        n, k = len(event_ids), len(self._names)
        score_names = tuple(scores)
        table = np.empty((n, k + len(score_names) + 1), dtype="<f8")
        table[:, :k] = features
        for j, name in enumerate(score_names):
            table[:, k + j] = scores[name]
        table[:, -1] = event_time_ms
        header = orjson.dumps(
            {"fs": self.feature_set, "s": score_names, "m": model_version, "a": adaptation_version}
        )
        if len(header) > 0xFFFF:
            raise ValueError(f"prediction log header is {len(header)} bytes; versions too long?")
        head = _MAGIC + len(header).to_bytes(2, "little") + header
        packed, width = table.tobytes(), table.shape[1] * 8
        shards: dict[int, list[bytes | str]] = {}
        for i, event_id in enumerate(event_ids):
            pairs = shards.get(shard := shard_of(event_id))
            if pairs is None:
                pairs = shards[shard] = []
            pairs += (event_id, head + packed[i * width : (i + 1) * width])
        now_ms = int(self._clock() * 1000)
        slot = now_ms // self._slot_ms
        # The hash expires a horizon after its slot ends: every entry lives at least a horizon.
        ttl = (slot + 1) * self._slot_ms + self._horizon_ms - now_ms
        # A pipeline, no script: the entries would be copied into Lua and out again.
        pipe = client.pipeline(transaction=False)
        for shard, pairs in shards.items():
            key = f"{self._hash_prefixes[shard]}{slot}"
            pipe.execute_command("HSET", key, *pairs)
            pipe.pexpire(key, ttl)
        pipe.execute()

    def read(self, event_ids: Sequence[str]) -> list[LoggedPrediction | None]:
        """Batched lookup for the label join; None where the entry is missing or expired."""
        raw = self._read_raw(event_ids)
        names_cache: dict[str, tuple[str, ...]] = {self.feature_set: self._names}
        headers: dict[bytes, dict[str, Any]] = {}
        out: list[LoggedPrediction | None] = []
        for event_id, blob in zip(event_ids, raw, strict=True):
            if blob is None:
                out.append(None)
            elif blob.startswith(_MAGIC):
                out.append(self._unpack(event_id, blob, headers, names_cache))
            else:
                out.append(self._from_json(event_id, orjson.loads(blob), names_cache))
        return out

    def _read_raw(self, event_ids: Sequence[str]) -> list[bytes | None]:
        """Each id's entry from its shard's hash in the current slot (one pipeline of HMGET,
        one per shard), then, for the ids not there, in every other slot that can still hold
        it and in the namespace-tagged hashes of the earlier layout (one more pipeline), then
        from the one-key entries of earlier versions (MGET). No script: entries would be
        copied into Lua and out again."""
        if not event_ids:
            return []
        now_ms = int(self._clock() * 1000)
        # A slot's hash lives until a horizon after its end. Older slots newest first (an
        # event scored twice, in a replay, reads as scored last), then the slot after the
        # current one: a writer whose clock is ahead of this reader's.
        current = now_ms // self._slot_ms
        oldest = (now_ms - self._horizon_ms) // self._slot_ms - 1
        older = [*range(current - 1, oldest - 1, -1), current + 1]
        groups: dict[int, list[int]] = {}
        for i, event_id in enumerate(event_ids):
            groups.setdefault(shard_of(event_id), []).append(i)
        prefixes, earlier = self._hash_prefixes, self._ns_hash_prefix
        rounds: list[list[Callable[[int], str]]] = [
            [lambda shard: f"{prefixes[shard]}{current}"],
            [lambda shard, slot=slot: f"{prefixes[shard]}{slot}" for slot in older]
            + [lambda shard, slot=slot: f"{earlier}{slot}:{shard}" for slot in (current, *older)],
        ]
        raw: list[bytes | None] = [None] * len(event_ids)
        pending = groups
        for keys in rounds:
            pipe = self._client.pipeline(transaction=False)
            asked: list[list[int]] = []
            for key_of in keys:
                for shard, members in pending.items():
                    pipe.hmget(key_of(shard), [event_ids[i] for i in members])
                    asked.append(members)
            for members, blobs in zip(asked, pipe.execute(), strict=True):
                for i, blob in zip(members, blobs, strict=True):
                    if raw[i] is None:
                        raw[i] = blob
            pending = {}
            for shard, members in groups.items():
                if left := [i for i in members if raw[i] is None]:
                    pending[shard] = left
            if not pending:
                return raw
        missing = [i for members in pending.values() for i in members]
        legacy = self._client.mget([self._prefix + event_ids[i] for i in missing])
        for i, blob in zip(missing, legacy, strict=True):
            raw[i] = blob
        return raw

    def _names_of(self, feature_set: str, cache: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
        names = cache.get(feature_set)
        if names is None:
            stored = self._client.get(self._set_key.rsplit(":", 1)[0] + ":" + feature_set)
            names = tuple(orjson.loads(stored)) if stored else ()
            cache[feature_set] = names
        return names

    def _unpack(
        self,
        event_id: str,
        blob: bytes,
        headers: dict[bytes, dict[str, Any]],
        names_cache: dict[str, tuple[str, ...]],
    ) -> LoggedPrediction:
        end = _HEADER_AT + int.from_bytes(blob[len(_MAGIC) : _HEADER_AT], "little")
        raw_header = blob[_HEADER_AT:end]
        header = headers.get(raw_header)
        if header is None:
            header = headers[raw_header] = orjson.loads(raw_header)
        row = struct.unpack_from(f"<{(len(blob) - end) // 8}d", blob, end)
        score_names = header["s"]
        k = len(row) - len(score_names) - 1  # from the row itself: names may be unknown
        names = self._names_of(header["fs"], names_cache)
        return LoggedPrediction(
            event_id,
            dict(zip(names, row[:k], strict=False)),
            dict(zip(score_names, row[k:-1], strict=True)),
            header["m"],
            header["a"],
            int(row[-1]),
        )

    def _from_json(
        self, event_id: str, entry: dict[str, Any], names_cache: dict[str, tuple[str, ...]]
    ) -> LoggedPrediction:
        """An entry in the JSON format of earlier versions (until their TTL runs out)."""
        names = self._names_of(entry["fs"], names_cache)
        return LoggedPrediction(
            event_id,
            dict(zip(names, entry["f"], strict=False)),
            entry["s"],
            entry["m"],
            entry["a"],
            entry["t"],
        )
