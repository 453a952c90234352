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
(JSON cost ~6 µs of Python per event), and NaN survives the round trip. Entries written as
JSON by earlier versions are still read, and so are the one-key-per-event entries of earlier
versions (`sf:{<ns>}:pl:<event_id>`, read for the ids no hash holds), so a rolling upgrade
loses no join as long as the learner is upgraded first.

Key layout: `sf:{<ns>}:plh:<slot>:<shard>` (hash: event id → entry; slot = wall-clock ms //
slot length), `sf:{<ns>}:pl:<event_id>` (earlier versions, read only) and
`sf:{<ns>}:featureset:<id>`. The hash tag is the namespace, so in Redis Cluster a batch's
writes (and the learner's batched reads) go to one slot, one node, one round trip; spread
namespaces across pipelines to spread load. At R events/s a hash holds about
R × horizon / 128 entries, freed at once when it expires: at high rates give Redis
`lazyfree-lazy-expire yes` so that this happens off its main thread.
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
import redis

SHARDS = 32
"""Hashes per slot: a batch writes each with one HSET and reads each with one HMGET per slot;
more shards make smaller hashes (a hash is freed at once when it expires) but more calls."""
SLOTS_PER_HORIZON = 4
"""The slot is a quarter of the label horizon: an entry outlives its horizon by at most that."""


# Starts with a NUL byte, which no JSON document (the earlier format) can.
_MAGIC = b"\x00sfpl1"
_HEADER_AT = len(_MAGIC) + 2  # after the magic: the header's length, uint16 little-endian


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
        client: redis.Redis,
        namespace: str,
        feature_names: Sequence[str],
        horizon_ms: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._prefix = f"sf:{{{namespace}}}:pl:"  # one key per event: earlier versions
        self._hash_prefix = f"sf:{{{namespace}}}:plh:"
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
            key = f"{self._hash_prefix}{slot}:{shard}"
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
        it (one more pipeline), then from the one-key entries of earlier versions (MGET). No
        script: entries would be copied into Lua and out again."""
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
        raw: list[bytes | None] = [None] * len(event_ids)
        pending = groups
        for slots in ([current], older):
            pipe = self._client.pipeline(transaction=False)
            asked: list[list[int]] = []
            for slot in slots:
                for shard, members in pending.items():
                    pipe.hmget(
                        f"{self._hash_prefix}{slot}:{shard}", [event_ids[i] for i in members]
                    )
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
