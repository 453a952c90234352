"""`RedisFeatureStore`: the feature semantics in Redis, one EVALSHA per node per micro-batch.

Python's part is small: pull the batch's columns out of the records, hash each entity value
to its shard (`features.shards`), send each node the events with an entity on it as one
JSON document (`features.shard_calls`: one inline call on a single Redis, one concurrent
call per node on a cluster), and view the replies as float64 matrices with `np.frombuffer`,
taking each entity's columns from the call of its shard. The script mirrors
`ReferenceFeatureStore`; the contract tests hold the two equal, on one Redis and a cluster.

Key layout (`<ns>` the namespace, `{<tag>}` one of its 16 shard tags `{<ns>/<i>.<j>}`, the
same on a single Redis and a cluster; an entity's keys are in its value's shard, `}` and
`%` in values are written %7D, %25):

    sf:<ns>:{<tag>}:<entity field>=<value>:s          string: cmsgpack of the entity's state:
        watermark and, per aggregation id, a flat array of its buckets (first bucket, then
        the values of each bucket up to the newest) or the decayed S, W, T. A count_distinct
        bucket holds its HyperLogLog registers (sorted register * 64 + value codes, the
        members hashed here, `features.hll.register_codes`) and the state the union of its
        newest window; past 64 registers in a window (keys mode, until every bucket is
        trimmed) a bucket is an :h: key instead, and the state names the window its :u key
        holds. PX = entity TTL.
    sf:<ns>:{<tag>}:<entity field>=<value>:h:<agg id>:<bucket>
        keys mode: HyperLogLog of one count_distinct bucket (written from its registers,
        then PFADD; merged by PFCOUNT over the window); DEL'd once below the retention
        floor. PX = entity TTL.
    sf:<ns>:{<tag>}:<entity field>=<value>:h:<agg id>:u
        union of the entity's newest window of two or more buckets, once that window was
        read twice (PFMERGE once per window, then PFADD/PFCOUNT), kept across batches; the
        state says which window it holds. PX = entity TTL.
    sf:<ns>:{<tag>}:hw:<topic>/<partition>             string: the shard's high-water of
        the partition: the highest offset of every batch applied (every call writes it for
        each of its shards). No TTL: its absence means lost state, not an idle partition.
    sf:<ns>:{<tag>}:rec:<topic>/<partition>:<offset // 1024>
        string: the replay records of those offsets, packed back to back (one APPEND per
        call): offset (float64), the entity's record layout (uint32: crc32 of its field and
        its aggregation ids in column order), its column count (uint16), that entity's
        columns of the event (little-endian float64), 1 late byte. PX = replay_ttl,
        refreshed by every write. A replay reads the whole string once per call and skips
        records of another layout (an earlier spec): those replays are recomputed read-only.
    sf:<ns>:{<tag>}:epoch                               string: the shard's state epoch
        (`features.epoch`), no TTL. Written by a fresh pipeline's first batch and by
        `streamfer rebuild`; checked by every guarded batch, with the batch's `floors`:
        a lost epoch or a high-water below a floor raises `StateLost`, nothing applied.

The aggregation id is 8 hex digits of sha1 over (name, agg, field, bucket, half_life):
changing any of those starts that aggregation from empty state; changing window or lateness
keeps it. The entity TTL is the longest of its aggregations' horizons: window + lateness +
bucket for windowed ones, 10 half-lives for decayed ones (2^-10 of the weight is left).
TTLs run on wall-clock time and are refreshed on every write.

Flags: an event is late when any of its entities was too late, replayed when any of its
entities' shards had applied its offset already (all do, but after a call that failed on
one node only). On a cluster a batch is atomic per node, not across nodes: a StateLost on
one node leaves the other nodes' calls applied (the state is to be rebuilt anyway).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import zlib
from typing import Any

import numpy as np
import orjson
import redis

from features.epoch import new_epoch
from features.hll import register_codes
from features.redis_connect import RedisClient, is_cluster
from features.semantics import (
    FLAG_LATE,
    FLAG_REPLAYED,
    LOST_EPOCH,
    REBUILDING_EPOCH,
    RECORD_CHUNK,
)
from features.shard_calls import ShardCalls, Shards
from features.shards import SHARDS, ShardMap, epoch_keys, shard_prefixes, shard_slots
from features.spec import Aggregation, FeatureSpec
from features.store import FeatureBatch, FeatureResult, StateLost, StoreRefused

# How Redis words an ACL refusal inside a script (Redis 7: an ERR reply, not NOPERM).
_REFUSED_IN_SCRIPT = "The user executing the script can't"


def _tag_text(text: str) -> str:
    # Kept from the layout with one hash tag per entity, so key names stay as they were.
    return text.replace("%", "%25").replace("}", "%7D")


def aggregation_id(agg: Aggregation) -> str:
    """The stable id of an aggregation's state: what it stores, not where it is listed."""
    signature = f"{agg.name}\0{agg.agg}\0{agg.field}\0{agg.bucket}\0{agg.half_life}"
    return hashlib.sha1(signature.encode()).hexdigest()[:8]


def _empty_value(a: Aggregation) -> float:
    """What an aggregation reads for an event without its entity (as the script's `empty`)."""
    return a.fill_value if a.agg in ("min", "max", "last", "seconds_since_last") else 0.0


def _script_config(spec: FeatureSpec, namespace: str, cluster: bool = False) -> bytes:
    """The constant half of the script's arguments: aggregations, entities, TTLs, shards."""
    numeric = [a.field for a in spec.aggregations if a.field and a.agg != "count_distinct"]
    distinct = [a.field for a in spec.aggregations if a.field and a.agg == "count_distinct"]
    numeric_index = {f: i + 1 for i, f in enumerate(dict.fromkeys(numeric))}
    distinct_index = {f: i + 1 for i, f in enumerate(dict.fromkeys(distinct))}
    aggs: list[dict[str, Any]] = []
    for a in spec.aggregations:
        entry: dict[str, Any] = {
            "id": aggregation_id(a),
            "kind": a.agg,
            "win": a.windowed,
            "empty": _empty_value(a),
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
        # The layout of the entity's replay records: a replay never reads a record written
        # under a spec whose columns for this entity differ (features.lua skips it).
        layout = f"{field}|" + ",".join(aggregation_id(spec.aggregations[j]) for j in members)
        ents.append(
            {
                "tag": _tag_text(field),
                "aggs": [j + 1 for j in members],
                "ttl": ttl,
                "lid": zlib.crc32(layout.encode()),
            }
        )
    config = {
        "sp": list(shard_prefixes(namespace)),
        "lateness": spec.lateness,
        "aggs": aggs,
        "ents": ents,
        "chunk": RECORD_CHUNK,
        "replay_ttl": spec.replay_ttl,
        "rebuilding": REBUILDING_EPOCH,
        "lost": LOST_EPOCH,
        # A cluster's slots may migrate: the script probes keys before its writes.
        "cluster": cluster,
    }
    return orjson.dumps(config)


def _client_kwargs(client: RedisClient) -> dict[str, Any]:
    if is_cluster(client):
        return dict(client.nodes_manager.connection_kwargs)  # type: ignore[union-attr]
    return dict(client.connection_pool.connection_kwargs)  # type: ignore[union-attr]


class _Columns:
    """One batch, encoded once: per entity field its values (object array) and shards,
    the other columns, and the document parts every call shares."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.values: list[np.ndarray] = []
        self.shards: list[np.ndarray] = []  # int8 per event, -1 for no value
        self.home = np.zeros(n, dtype=bool)  # no entity value at all
        self.common: dict[str, Any] = {}
        self.times = np.zeros(n, dtype=np.int64)
        self.x: list[np.ndarray] = []
        self.d: list[np.ndarray] = []
        self.r: list[np.ndarray] = []  # per count_distinct field its members' HLL registers
        self.s: np.ndarray | None = None
        self.o: np.ndarray | None = None
        # Per call's shards: its events and per field its values (see `_select`), made once
        # for the call's document and reused to place its reply.
        self.selected: dict[Shards, tuple[np.ndarray, list[np.ndarray]]] = {}


class RedisFeatureStore:
    """Aggregation columns computed in Redis by `features.lua`; see the module docstring.

    `client` (`redis.Redis` or `RedisCluster`, see `features.redis_connect.connect`) must
    return bytes (decode_responses=False): the reply is binary float64. `owns_client=True`
    closes the client on `close()`. `guard=False` (a rebuild writing the state anew)
    neither checks for lost state nor writes the epoch. `replicas` > 0: a batch counts once
    that many replicas of each node it wrote hold it (`features.shard_calls`, WAIT).
    """

    SCRIPT = importlib.resources.files("features").joinpath("features.lua").read_text()

    def __init__(
        self,
        spec: FeatureSpec,
        client: RedisClient,
        namespace: str,
        *,
        owns_client: bool = False,
        guard: bool = True,
        replicas: int = 0,
    ) -> None:
        if not namespace or any(c in namespace for c in "{}"):
            raise ValueError(
                f"namespace {namespace!r} must be non-empty and without braces "
                "(braces would become the Redis Cluster hash tag of every key)"
            )
        if _client_kwargs(client).get("decode_responses"):
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
        self._config = _script_config(spec, namespace, is_cluster(client))
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
        # Per entity field, the matrix columns of its aggregations.
        self._columns = [
            np.array([j for j, a in enumerate(spec.aggregations) if a.entity == f], dtype=np.intp)
            for f in self._entities
        ]
        self._empty_row = np.array([_empty_value(a) for a in spec.aggregations], dtype=np.float64)
        self._shard_map = ShardMap(self._entities)
        self._calls = ShardCalls(
            client, self.SCRIPT, epoch_keys(namespace), shard_slots(namespace), replicas
        )

    def update_and_read(self, batch: FeatureBatch) -> FeatureResult:
        """Per node one EVALSHA: apply every event in order, read each right after its
        update; the columns of each entity from the call of its shard."""
        n, k = len(batch.records), len(self.names)
        if n == 0:
            empty = np.zeros(0, dtype=bool)
            return FeatureResult(np.zeros((0, k), dtype=np.float64), empty, empty.copy())
        cols = self._encode(batch)
        try:
            replies = self._calls.run(self._config, lambda shards: self._document(cols, shards))
        except redis.exceptions.ResponseError as exc:
            # An ACL, not the events: a NOPERM, or inside a script Redis's "ERR The user
            # executing the script can't run this command" (or "can't access ... keys").
            if isinstance(exc, redis.exceptions.NoPermissionError) or _REFUSED_IN_SCRIPT in str(
                exc
            ):
                raise StoreRefused(
                    f"Redis refused a command of the feature script ({exc}); the Redis user "
                    "lacks a permission streamfer needs: give it the commands "
                    "docs/operations.md lists"
                ) from None
            raise
        lost = [r[1].decode() for _, r in replies if len(r) == 2 and r[0] == b"lost"]
        if lost:
            raise StateLost(f"feature state of namespace {self.namespace!r}: {lost[0]}")
        if len(replies) == 1 and len(replies[0][0]) == SHARDS:  # one call: every column
            _, (rows, flag_bytes, epoch) = replies[0]
            self._seen(epoch)
            values = np.frombuffer(rows, dtype="<f8").reshape(n, k).astype(np.float64)
            flag = np.frombuffer(flag_bytes, dtype=np.uint8)
        else:
            values = np.tile(self._empty_row, (n, 1))
            flag = np.zeros(n, dtype=np.uint8)
            for shards, (rows, flag_bytes, epoch) in replies:
                self._seen(epoch)
                idx, masks = self._select(cols, shards)
                if len(idx) == 0:
                    continue
                got = np.frombuffer(rows, dtype="<f8").reshape(len(idx), k)
                flag[idx] |= np.frombuffer(flag_bytes, dtype=np.uint8)
                for f, columns in enumerate(self._columns):
                    mine = masks[f][idx]
                    values[np.ix_(idx[mine], columns)] = got[np.ix_(mine, columns)]
        return FeatureResult(
            values=values,
            late=(flag & FLAG_LATE) != 0,
            replayed=(flag & FLAG_REPLAYED) != 0,
        )

    def close(self) -> None:
        """Stop the call threads; close the client if this store opened it."""
        self._calls.close()
        if self._owns_client:
            self._client.close()

    def _seen(self, epoch: bytes | None) -> None:
        if epoch is not None:
            self._epoch = epoch.decode()

    def _encode(self, batch: FeatureBatch) -> _Columns:
        """The batch's columns and shards: the only per-event Python."""
        records = batch.records
        cols = _Columns(len(records))
        cols.times = np.asarray(batch.event_time_ms, dtype=np.int64)
        home = np.ones(cols.n, dtype=bool)
        for f in self._entities:
            # Entities are keyed by text: 123 and "123" are one entity.
            values = [
                None if (v := r.get(f)) is None else v if type(v) is str else str(v)
                for r in records
            ]
            shards = self._shard_map.shards(f, values)
            home &= shards < 0
            column = np.empty(cols.n, dtype=object)
            column[:] = values
            cols.values.append(column)
            cols.shards.append(shards)
        cols.home = home
        for f in self._numeric:
            column = np.empty(cols.n, dtype=object)
            # NaN and ±inf become JSON null, i.e. missing, as in the reference.
            column[:] = [None if (v := r.get(f)) is None else float(v) for r in records]
            cols.x.append(column)
        for f in self._distinct:
            column = np.empty(cols.n, dtype=object)
            column[:] = [
                None if (v := r.get(f)) is None else v if type(v) is str else str(v)
                for r in records
            ]
            cols.d.append(column)
            cols.r.append(register_codes([None if m is None else m.encode() for m in column]))
        common: dict[str, Any] = {}
        partitions: dict[tuple[str, int], int] = {}
        tops: list[int] = []  # per partition of the batch, its highest offset
        if batch.sources is not None:
            s = np.empty(cols.n, dtype=np.int64)
            for i, (topic, partition, offset) in enumerate(batch.sources):
                p = partitions.setdefault((topic, partition), len(partitions) + 1)
                s[i] = p
                if p > len(tops):
                    tops.append(offset)
                elif offset > tops[p - 1]:
                    tops[p - 1] = offset
            cols.s = s
            cols.o = np.fromiter((o for _, _, o in batch.sources), dtype=np.int64, count=cols.n)
        if self._guard:
            floors = batch.floors or {}
            # Partitions with a floor but no event in this batch are checked too.
            for tp in floors:
                partitions.setdefault(tp, len(partitions) + 1)
            common["g"] = {
                "ep": self._epoch,
                "new": new_epoch(),
                "f": [floors.get(tp) for tp in partitions],
            }
        if partitions:
            common["p"] = [f"{topic}/{partition}" for topic, partition in partitions]
            # Partitions with only a floor have no events: their high-water is not written.
            common["m"] = [*tops, *[None] * (len(partitions) - len(tops))]
        cols.common = common
        return cols

    def _select(self, cols: _Columns, shards: Shards) -> tuple[np.ndarray, list[np.ndarray]]:
        """The events a call over `shards` carries, and per field which values are its."""
        if (made := cols.selected.get(shards)) is not None:
            return made
        member = np.zeros(SHARDS + 1, dtype=bool)  # indexed by shard + 1: -1 (no value) → 0
        member[np.asarray(shards) + 1] = True
        masks = [member[sh.astype(np.intp) + 1] for sh in cols.shards]
        wanted = cols.home.copy() if 0 in shards else np.zeros(cols.n, dtype=bool)
        for m in masks:
            wanted |= m
        made = cols.selected[shards] = (np.flatnonzero(wanted), masks)
        return made

    def _document(self, cols: _Columns, shards: Shards) -> bytes:
        """The batch document of one call: its events, their values in its shards."""
        doc: dict[str, Any] = dict(cols.common)
        doc["cs"] = [s + 1 for s in shards]
        if len(shards) == SHARDS:
            doc["t"] = cols.times.tolist()
            doc["e"] = [v.tolist() for v in cols.values]
            doc["h"] = [(sh.astype(np.int64) + 1).tolist() for sh in cols.shards]
            doc["x"] = [v.tolist() for v in cols.x]
            doc["d"] = [v.tolist() for v in cols.d]
            doc["r"] = [v.tolist() for v in cols.r]
            home = np.flatnonzero(cols.home)
            if cols.s is not None and cols.o is not None:
                doc["s"], doc["o"] = cols.s.tolist(), cols.o.tolist()
        else:
            idx, masks = self._select(cols, shards)
            doc["t"] = cols.times[idx].tolist()
            e, h = [], []
            for values, sh, m in zip(cols.values, cols.shards, masks, strict=True):
                mine = m[idx]
                picked = values[idx]
                picked[~mine] = None
                e.append(picked.tolist())
                h.append(np.where(mine, sh[idx].astype(np.int64) + 1, 0).tolist())
            doc["e"], doc["h"] = e, h
            doc["x"] = [v[idx].tolist() for v in cols.x]
            doc["d"] = [v[idx].tolist() for v in cols.d]
            doc["r"] = [v[idx].tolist() for v in cols.r]
            home = np.flatnonzero(cols.home[idx]) if 0 in shards else np.zeros(0, np.intp)
            if cols.s is not None and cols.o is not None:
                doc["s"], doc["o"] = cols.s[idx].tolist(), cols.o[idx].tolist()
        if len(home):
            doc["hm"] = (home + 1).tolist()
        return orjson.dumps(doc)
