"""The prediction log: what each event was scored with, kept until its label is due.

One Redis key per event id holds the feature vector as scored, the scores and the versions,
with TTL = the spec's label horizon; the learner joins labels against it. A batch is
written with one EVALSHA (keys and values as arguments, one SET PX per key server-side):
a redis-py pipeline of one SET per event cost ~40-50 µs of Python per event. Feature names
are stored once per feature set (keyed by a hash of the names) instead of in every entry.

An entry is packed, not JSON: a magic prefix, a small JSON header shared by the whole batch
(feature set, score names, versions), then one little-endian float64 row: the features,
the scores, the event time. Building it is a bytes slice and a concatenation per event
(JSON cost ~6 µs of Python per event), and NaN survives the round trip. Entries written as
JSON by earlier versions are still read, so a rolling upgrade loses no join.

Key layout: `sf:{<ns>}:pl:<event_id>` and `sf:{<ns>}:featureset:<id>`. The hash tag is the
namespace, so in Redis Cluster a batch's writes (and the learner's batched reads) go to one
slot, one node, one round trip; spread namespaces across pipelines to spread load.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import redis

# Keys share the namespace hash tag, so this is one slot in Redis Cluster too.
_WRITE_SCRIPT = """
local px = ARGV[1]
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', px) end
return #KEYS
"""


# Starts with a NUL byte, which no JSON document (the earlier format) can.
_MAGIC = b"\x00sfpl1"
_HEADER_AT = len(_MAGIC) + 2  # after the magic: the header's length, uint16 little-endian


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
        self, client: redis.Redis, namespace: str, feature_names: Sequence[str], horizon_ms: int
    ) -> None:
        self._client = client
        self._prefix = f"sf:{{{namespace}}}:pl:"
        self._names = tuple(feature_names)
        self.feature_set = hashlib.sha256("\x1f".join(self._names).encode()).hexdigest()[:16]
        self._set_key = f"sf:{{{namespace}}}:featureset:{self.feature_set}"
        self._horizon_ms = horizon_ms
        self._names_written = False
        self._sha = ""

    def write(
        self,
        event_ids: Sequence[str],
        features: np.ndarray,
        scores: dict[str, np.ndarray],
        model_version: str,
        adaptation_version: str | None,
        event_time_ms: Sequence[int] | np.ndarray,
    ) -> None:
        """Log one batch in one round trip: one EVALSHA setting every entry with its TTL."""
        client = self._client
        if not self._names_written:
            pipe = client.pipeline(transaction=False)
            pipe.set(self._set_key, orjson.dumps(self._names))
            pipe.persist(self._set_key)
            pipe.execute()
            self._sha = client.script_load(_WRITE_SCRIPT)
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
        prefix = self._prefix
        keys = [prefix + event_id for event_id in event_ids]
        values = [head + packed[i * width : (i + 1) * width] for i in range(n)]
        try:
            client.evalsha(self._sha, len(keys), *keys, self._horizon_ms, *values)
        except redis.exceptions.NoScriptError:  # script cache flushed (restart, failover)
            self._sha = client.script_load(_WRITE_SCRIPT)
            client.evalsha(self._sha, len(keys), *keys, self._horizon_ms, *values)

    def read(self, event_ids: Sequence[str]) -> list[LoggedPrediction | None]:
        """Batched lookup for the label join; None where the entry is missing or expired."""
        raw = self._client.mget([self._prefix + e for e in event_ids]) if event_ids else []
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
