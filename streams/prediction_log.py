"""The prediction log: what each event was scored with, kept until its label is due.

One Redis key per event id holds the feature vector as scored, the scores and the versions,
with TTL = the spec's label horizon; the learner joins labels against it. A batch is
written with one EVALSHA (keys and values as arguments, one SET PX per key server-side):
a redis-py pipeline of one SET per event cost ~40-50 µs of Python per event. Feature names
are stored once per feature set (keyed by a hash of the names) instead of in every entry.

Key layout: `sf:{<ns>}:pl:<event_id>` and `sf:{<ns>}:featureset:<id>`. The hash tag is the
namespace, so in Redis Cluster a batch's writes (and the learner's batched reads) go to one
slot, one node, one round trip; spread namespaces across pipelines to spread load.
"""

from __future__ import annotations

import hashlib
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
        event_time_ms: Sequence[int],
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
        if not event_ids:
            return
        rows = features.tolist()
        score_lists = {name: values.tolist() for name, values in scores.items()}
        dumps = orjson.dumps
        prefix = self._prefix
        feature_set = self.feature_set
        keys = [prefix + event_id for event_id in event_ids]
        values = [
            dumps(
                {
                    "f": rows[i],
                    "s": {name: column[i] for name, column in score_lists.items()},
                    "fs": feature_set,
                    "m": model_version,
                    "a": adaptation_version,
                    "t": event_time_ms[i],
                }
            )
            for i in range(len(keys))
        ]
        try:
            client.evalsha(self._sha, len(keys), *keys, self._horizon_ms, *values)
        except redis.exceptions.NoScriptError:  # script cache flushed (restart, failover)
            self._sha = client.script_load(_WRITE_SCRIPT)
            client.evalsha(self._sha, len(keys), *keys, self._horizon_ms, *values)

    def read(self, event_ids: Sequence[str]) -> list[LoggedPrediction | None]:
        """Batched lookup for the label join; None where the entry is missing or expired."""
        raw = self._client.mget([self._prefix + e for e in event_ids]) if event_ids else []
        names_cache: dict[str, tuple[str, ...]] = {self.feature_set: self._names}
        out: list[LoggedPrediction | None] = []
        for event_id, blob in zip(event_ids, raw, strict=True):
            if blob is None:
                out.append(None)
                continue
            entry: dict[str, Any] = orjson.loads(blob)
            names = names_cache.get(entry["fs"])
            if names is None:
                stored = self._client.get(self._set_key.rsplit(":", 1)[0] + ":" + entry["fs"])
                names = tuple(orjson.loads(stored)) if stored else ()
                names_cache[entry["fs"]] = names
            out.append(
                LoggedPrediction(
                    event_id,
                    dict(zip(names, entry["f"], strict=False)),
                    entry["s"],
                    entry["m"],
                    entry["a"],
                    entry["t"],
                )
            )
        return out
