"""The prediction log: what each event was scored with, kept until its label is due.

One Redis key per event id holds the feature vector as scored, the scores and the versions,
with TTL = the spec's label horizon; the learner joins labels against it. A batch is
written with one pipelined round trip. Feature names are stored once per feature set
(keyed by a hash of the names) instead of in every entry.

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

    def write(
        self,
        event_ids: Sequence[str],
        features: np.ndarray,
        scores: dict[str, np.ndarray],
        model_version: str,
        adaptation_version: str | None,
        event_time_ms: Sequence[int],
    ) -> None:
        """Log one batch in one round trip (MULTI-free pipeline: entries are independent)."""
        pipe = self._client.pipeline(transaction=False)
        if not self._names_written:
            pipe.set(self._set_key, orjson.dumps(self._names))
        rows = features.tolist()
        score_lists = {name: values.tolist() for name, values in scores.items()}
        dumps = orjson.dumps
        prefix = self._prefix
        px = self._horizon_ms
        for i, event_id in enumerate(event_ids):
            entry = {
                "f": rows[i],
                "s": {name: values[i] for name, values in score_lists.items()},
                "fs": self.feature_set,
                "m": model_version,
                "a": adaptation_version,
                "t": event_time_ms[i],
            }
            pipe.set(prefix + event_id, dumps(entry), px=px)
        if not self._names_written:
            pipe.persist(self._set_key)
        pipe.execute()
        self._names_written = True

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
