"""`RedisFeatureStore`: the feature semantics in Redis, one EVALSHA per micro-batch.

Python's part is small: pull the batch's columns out of the records into one JSON
document, call `features.lua` once (update + read of every event, atomically), and view
the reply as a float64 matrix with `np.frombuffer`. The script mirrors
`ReferenceFeatureStore`; the contract tests hold the two equal.

Key layout (`<ns>` is the namespace; every key of one entity shares one Redis Cluster hash
tag, and each source partition has its own; `}` and `%` inside a tag are written %7D, %25):

    sf:<ns>:{<entity field>=<value>}:s              string: cmsgpack of the entity's state:
        watermark and, per aggregation id, a flat array of its buckets (first bucket, then
        the values of each bucket up to the newest) or the decayed S, W, T; per
        count_distinct id, the window held by its :u key. PX = entity TTL.
    sf:<ns>:{<entity field>=<value>}:h:<agg id>:<bucket>
        HyperLogLog of one count_distinct bucket (PFADD, merged by PFCOUNT over the window);
        DEL'd once below the retention floor. PX = entity TTL.
    sf:<ns>:{<entity field>=<value>}:h:<agg id>:u
        union of the entity's newest window of two or more buckets, once that window was
        read twice (PFMERGE once per window, then PFADD/PFCOUNT), kept across batches; the
        state says which window it holds. PX = entity TTL.
    sf:<ns>:{src=<topic>/<partition>}:hw            string: highest applied offset.
        No TTL: its absence means lost state (below), not an idle partition.
    sf:<ns>:{src=<topic>/<partition>}:r:<offset // 1024>
        hash: offset → the event's aggregation row (k little-endian float64) + 1 flag byte.
        PX = replay_ttl, refreshed by every write to the chunk.
    sf:<ns>:epoch                                    string: the state epoch
        (`features.epoch`), no TTL. Written by a fresh pipeline's first batch and by
        `streamfer rebuild`; checked by every guarded batch, with the batch's `floors`:
        a lost epoch or a high-water below a floor raises `StateLost`, nothing applied.

The aggregation id is 8 hex digits of sha1 over (name, agg, field, bucket, half_life):
changing any of those starts that aggregation from empty state; changing window or lateness
keeps it. The entity TTL is the longest of its aggregations' horizons: window + lateness +
bucket for windowed ones, 10 half-lives for decayed ones (2^-10 of the weight is left).
TTLs run on wall-clock time and are refreshed on every write.

Redis Cluster: the script computes its keys server-side and one call touches many entities
(many slots), so this store runs against a single Redis (standalone or Sentinel-managed).
Grouping a batch by slot (one call per slot) is not implemented.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from typing import Any

import numpy as np
import orjson
import redis

from features.epoch import epoch_key, new_epoch
from features.semantics import (
    FLAG_LATE,
    FLAG_REPLAYED,
    LOST_EPOCH,
    REBUILDING_EPOCH,
    RECORD_CHUNK,
)
from features.spec import Aggregation, FeatureSpec
from features.store import FeatureBatch, FeatureResult, StateLost


def _tag_text(text: str) -> str:
    # '}' would end the hash tag early; '%' is the escape itself.
    return text.replace("%", "%25").replace("}", "%7D")


def aggregation_id(agg: Aggregation) -> str:
    """The stable id of an aggregation's state: what it stores, not where it is listed."""
    signature = f"{agg.name}\0{agg.agg}\0{agg.field}\0{agg.bucket}\0{agg.half_life}"
    return hashlib.sha1(signature.encode()).hexdigest()[:8]


def _script_config(spec: FeatureSpec, namespace: str) -> bytes:
    """The constant half of the script's arguments: aggregations, entities, TTLs."""
    numeric = [a.field for a in spec.aggregations if a.field and a.agg != "count_distinct"]
    distinct = [a.field for a in spec.aggregations if a.field and a.agg == "count_distinct"]
    numeric_index = {f: i + 1 for i, f in enumerate(dict.fromkeys(numeric))}
    distinct_index = {f: i + 1 for i, f in enumerate(dict.fromkeys(distinct))}
    aggs: list[dict[str, Any]] = []
    for a in spec.aggregations:
        empty = a.fill_value if a.agg in ("min", "max", "last", "seconds_since_last") else 0.0
        entry: dict[str, Any] = {
            "id": aggregation_id(a),
            "kind": a.agg,
            "win": a.windowed,
            "empty": empty,
            "fill": a.fill_value,
            "num": numeric_index.get(a.field, 0) if a.agg != "count_distinct" else 0,
            "dis": distinct_index.get(a.field, 0) if a.agg == "count_distinct" else 0,
        }
        if a.windowed:
            assert a.bucket is not None
            entry |= {"B": a.bucket, "n": a.n_buckets, "c": -(-spec.lateness // a.bucket)}
        else:
            entry["h"] = a.half_life
        aggs.append(entry)
    ents = []
    for field in spec.entities:
        members = [j for j, a in enumerate(spec.aggregations) if a.entity == field]
        ttl = max(spec.aggregations[j].state_ttl_ms(spec.lateness) for j in members)
        ents.append({"tag": _tag_text(field), "aggs": [j + 1 for j in members], "ttl": ttl})
    config = {
        "prefix": f"sf:{namespace}:",
        "lateness": spec.lateness,
        "aggs": aggs,
        "ents": ents,
        "chunk": RECORD_CHUNK,
        "replay_ttl": spec.replay_ttl,
        "epoch_key": epoch_key(namespace),
        "rebuilding": REBUILDING_EPOCH,
        "lost": LOST_EPOCH,
    }
    return orjson.dumps(config)


class RedisFeatureStore:
    """Aggregation columns computed in Redis by `features.lua`; see the module docstring.

    `client` must return bytes (decode_responses=False): the reply is binary float64.
    `owns_client=True` closes the client on `close()`. `guard=False` (a rebuild writing the
    state anew) neither checks for lost state nor writes the epoch.
    """

    SCRIPT = importlib.resources.files("features").joinpath("features.lua").read_text()

    def __init__(
        self,
        spec: FeatureSpec,
        client: redis.Redis,
        namespace: str,
        *,
        owns_client: bool = False,
        guard: bool = True,
    ) -> None:
        if not namespace or any(c in namespace for c in "{}"):
            raise ValueError(
                f"namespace {namespace!r} must be non-empty and without braces "
                "(braces would become the Redis Cluster hash tag of every key)"
            )
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError(
                "RedisFeatureStore needs a client with decode_responses=False: the script "
                "replies with binary float64 rows"
            )
        self.spec = spec
        self.names: tuple[str, ...] = spec.aggregation_names
        self.namespace = namespace
        self._guard = guard
        self._epoch: str | None = None  # the state epoch last seen
        self._client = client
        self._owns_client = owns_client
        self._config = _script_config(spec, namespace)
        self._entities = spec.entities
        self._numeric = tuple(
            dict.fromkeys(
                a.field for a in spec.aggregations if a.field and a.agg != "count_distinct"
            )
        )
        self._distinct = tuple(
            dict.fromkeys(
                a.field for a in spec.aggregations if a.field and a.agg == "count_distinct"
            )
        )
        self._sha = client.script_load(self.SCRIPT)

    def update_and_read(self, batch: FeatureBatch) -> FeatureResult:
        """One EVALSHA: apply every event in order, read each right after its update."""
        n, k = len(batch.records), len(self.names)
        if n == 0:
            empty = np.zeros(0, dtype=bool)
            return FeatureResult(np.zeros((0, k), dtype=np.float64), empty, empty.copy())
        rows, flags = self._call(self._encode(batch))
        values = np.frombuffer(rows, dtype="<f8").reshape(n, k).astype(np.float64)
        flag = np.frombuffer(flags, dtype=np.uint8)
        return FeatureResult(
            values=values,
            late=(flag & FLAG_LATE) != 0,
            replayed=(flag & FLAG_REPLAYED) != 0,
        )

    def close(self) -> None:
        """Close the client if this store opened it."""
        if self._owns_client:
            self._client.close()

    def _call(self, batch_json: bytes) -> tuple[bytes, bytes]:
        try:
            reply = self._client.evalsha(self._sha, 0, self._config, batch_json)
        except redis.exceptions.NoScriptError:
            # The server lost its script cache (restart, SCRIPT FLUSH, failover): reload once.
            self._sha = self._client.script_load(self.SCRIPT)
            reply = self._client.evalsha(self._sha, 0, self._config, batch_json)
        if len(reply) == 2 and reply[0] == b"lost":
            raise StateLost(f"feature state of namespace {self.namespace!r}: {reply[1].decode()}")
        rows, flags, epoch = reply
        if epoch is not None:
            self._epoch = epoch.decode()
        return rows, flags

    def _encode(self, batch: FeatureBatch) -> bytes:
        """The batch as column lists, one JSON document: the only per-event Python."""
        records = batch.records
        doc: dict[str, Any] = {
            "t": np.asarray(batch.event_time_ms, dtype=np.int64).tolist(),
            # Entities are keyed by text: 123 and "123" are one entity.
            "e": [
                [
                    None if (v := r.get(f)) is None else v if type(v) is str else str(v)
                    for r in records
                ]
                for f in self._entities
            ],
            # NaN and ±inf become JSON null, i.e. missing, as in the reference.
            "x": [
                [None if (v := r.get(f)) is None else float(v) for r in records]
                for f in self._numeric
            ],
            "d": [
                [
                    None if (v := r.get(f)) is None else v if type(v) is str else str(v)
                    for r in records
                ]
                for f in self._distinct
            ],
        }
        if batch.sources is not None:
            partitions: dict[tuple[str, int], int] = {}
            doc["s"] = [
                partitions.setdefault((topic, partition), len(partitions) + 1)
                for topic, partition, _ in batch.sources
            ]
            doc["o"] = [offset for _, _, offset in batch.sources]
            doc["p"] = [_tag_text(f"{topic}/{partition}") for topic, partition in partitions]
        else:
            partitions = {}
        if self._guard:
            floors = batch.floors or {}
            # Partitions with a floor but no event in this batch are checked too.
            for tp in floors:
                partitions.setdefault(tp, len(partitions) + 1)
            if len(partitions) > len(doc.get("p", ())):
                doc["p"] = [_tag_text(f"{topic}/{partition}") for topic, partition in partitions]
            doc["g"] = {
                "ep": self._epoch,
                "new": new_epoch(),
                "f": [floors.get(tp) for tp in partitions],
                "n": [f"{topic}/{partition}" for topic, partition in partitions],
            }
        return orjson.dumps(doc)
