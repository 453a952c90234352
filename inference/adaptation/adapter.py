"""The worker side of adaptation: `Adapter` keeps the served River model current between
batches and scores whole batches with it.

Two ways to stay current (`adaptation.serving`):
- `snapshot`: pick up each verified snapshot the learner publishes (reading Redis at most
  once per `poll_interval_s`).
- `replica`: load one verified snapshot as a checkpoint (model + examples-log offset), then
  tail the examples log and apply every example in order to a `RiverReplica`: the served
  model has learned a label milliseconds after the learner did, and nothing large is shipped.

A snapshot is taken only when its signature holds, its signed version and pipeline are the
pointer's and this worker's (`SnapshotStore.load`), and it is not older than the version
served; anything else is refused with an alert and the served version stays."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import redis

from features.redis_connect import RedisClient
from inference.adaptation.examples import decode_examples
from inference.adaptation.modes import AdaptationMode
from inference.adaptation.replica import RiverReplica
from inference.adaptation.scoring import final_scores, river_predict, supports_many
from inference.adaptation.snapshots import SnapshotRejected, SnapshotStore, snapshot_key
from inference.adaptation.spec import ONNX_COLUMN, AdaptationSpec, Serving

log = logging.getLogger(__name__)

# The learner publishes at most every `adaptation.snapshot.every` (5 s by default); a check
# per second picks a version up promptly and costs one GET per second, not one per batch.
POLL_INTERVAL_S = 1.0


class ExampleSource(Protocol):
    """The examples log as a replica reads it (streams.worker.examples_log.ExamplesTail)."""

    def poll(self) -> list[bytes]:
        """What has arrived since the last call, in log order, without waiting."""
        ...

    def behind(self) -> int | None:
        """Records in the log past what was returned (None: not known yet)."""
        ...

    def close(self) -> None: ...


# Opens the log at a checkpoint's offset (None: the checkpoint names none: the beginning).
ExampleSourceFactory = Callable[[int | None], ExampleSource]
# Freshness of the labels a batch is the first to be scored with: (ages in s, labels behind).
FreshnessSink = Callable[[np.ndarray, int], None]


@dataclass(frozen=True)
class AdaptedScores:
    final: np.ndarray
    river: np.ndarray | None
    version: str | None


@dataclass(frozen=True)
class AdaptationEvent:
    """What `Adapter.poll` did: loaded a new version (ok) or refused one (not ok)."""

    ok: bool
    version: str | None
    reason: str | None = None


class Adapter:
    """Worker side: picks up verified snapshots between batches and scores whole batches."""

    def __init__(
        self,
        spec: AdaptationSpec,
        store: SnapshotStore | None,
        feature_names: Sequence[str],
        alert: Callable[[dict[str, Any]], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        poll_interval_s: float = POLL_INTERVAL_S,
        examples: ExampleSourceFactory | None = None,
        on_fresh: FreshnessSink | None = None,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.spec = spec
        self._store = store
        self._columns = (*feature_names, ONNX_COLUMN)
        self._alert = alert
        self._clock = clock
        self._poll_interval_s = poll_interval_s
        self._next_check = float("-inf")  # the first poll reads Redis
        self._model: Any = None
        self._batched = False
        self._meta: dict[str, Any] = {}
        self._version: int | None = None
        self._refused: int | None = None
        # Replica serving: only with an examples log to tail (else snapshot serving).
        self._examples = examples if spec.serving is Serving.REPLICA else None
        self._on_fresh = on_fresh
        self._wall_ms = wall_ms
        self._replica: RiverReplica | None = None
        self._checkpoint_seq = 0
        self._source: ExampleSource | None = None
        self._unserved: list[np.ndarray] = []  # label times learned, not yet scored with

    @classmethod
    def open(
        cls,
        spec: AdaptationSpec,
        redis_client: RedisClient,
        namespace: str,
        feature_names: Sequence[str],
        alert: Callable[[dict[str, Any]], None],
        *,
        key: str | None,
        clock: Callable[[], float] = time.monotonic,
        poll_interval_s: float = POLL_INTERVAL_S,
        examples: ExampleSourceFactory | None = None,
        on_fresh: FreshnessSink | None = None,
    ) -> Adapter:
        """Mode off: a pass-through (the key is not needed). Otherwise checks `key` (the
        STREAMFER_SNAPSHOT_KEY secret; raises SnapshotKeyMissing) and loads the latest
        snapshot, if any, right away."""
        if spec.mode is AdaptationMode.OFF:
            return cls(spec, None, feature_names, alert, clock=clock)
        store = SnapshotStore(redis_client, namespace, snapshot_key(key))
        adapter = cls(
            spec,
            store,
            feature_names,
            alert,
            clock=clock,
            poll_interval_s=poll_interval_s,
            examples=examples,
            on_fresh=on_fresh,
        )
        adapter.poll()
        return adapter

    @property
    def version(self) -> str | None:
        """The snapshot version; a replica's adds its learn sequence (`7@1234`: checkpoint 7,
        every example below 1234 learned), so a prediction says which labels it reflects."""
        if self._version is None:
            return None
        if self._replica is not None:
            return f"{self._version}@{self._replica.applied}"
        return str(self._version)

    @property
    def replica(self) -> RiverReplica | None:
        return self._replica

    @property
    def checkpoint_seq(self) -> int:
        """The learn sequence of the checkpoint the replica started from."""
        return self._checkpoint_seq

    def poll(self) -> AdaptationEvent | None:
        """Between batches. A replica applies what the examples log brought (no wait).
        Otherwise, when a check is due, one GET of the version pointer; a new version is
        fetched, verified, loaded (a replica's checkpoint). Between checks nothing."""
        if self._store is None:
            return None
        if self._replica is not None and self._source is not None:
            self._apply_examples(self._replica, self._source)
            return None
        now = self._clock()
        if now < self._next_check:
            return None
        self._next_check = now + self._poll_interval_s
        return self._check(self._store)

    def _check(self, store: SnapshotStore) -> AdaptationEvent | None:
        try:
            latest = store.latest_version()
            if latest is None or latest in (self._version, self._refused):
                return None
            if self._version is not None and latest < self._version:
                # Versions only grow (the learner's counter): a pointer moved back is a
                # rollback, to a snapshot that was correctly signed once.
                return self._refuse(
                    latest,
                    f"snapshot version {latest} is older than version {self._version}, "
                    "which this worker already serves: refused (pointer rolled back?)",
                )
            try:
                snapshot = store.load(latest)
            except SnapshotRejected as exc:
                return self._refuse(latest, str(exc))
        except redis.RedisError as exc:
            log.warning(
                "adaptation snapshot check failed (%s); keeping version %s", exc, self.version
            )
            return None
        if snapshot is None:  # expired between the two reads; the next poll sees a newer one
            return None
        columns = tuple(snapshot.meta.get("columns", ()))
        if columns != self._columns:
            return self._refuse(
                latest,
                f"snapshot version {latest} was trained on columns {list(columns)}, this "
                f"worker scores {list(self._columns)}: refused (spec changed?)",
            )
        self._model = snapshot.model
        self._batched = supports_many(snapshot.model)
        self._meta = snapshot.meta
        self._version = latest
        if self._examples is not None:
            self._start_replica(self._examples, snapshot.model, snapshot.meta)
        return AdaptationEvent(True, str(latest))

    def _start_replica(
        self, factory: ExampleSourceFactory, model: Any, meta: dict[str, Any]
    ) -> None:
        """The snapshot is a checkpoint: the model at learn sequence `labels_seen`, and the
        examples-log offset from which every later example lies."""
        seq = int(meta.get("labels_seen", 0))
        offset = meta.get("examples_offset")
        self._checkpoint_seq = seq
        self._replica = RiverReplica(
            model, self.spec.task, self._columns, seq, promoted=bool(meta.get("promoted"))
        )
        self._source = factory(int(offset) if offset is not None else None)
        log.info(
            "replica from checkpoint %s: sequence %d, log offset %s", self._version, seq, offset
        )
        self._apply_examples(self._replica, self._source)

    def _apply_examples(self, replica: RiverReplica, source: ExampleSource) -> None:
        values = source.poll()
        if not values:
            return
        applied = replica.apply(decode_examples(values, len(self._columns)))
        if applied.learned:
            self._unserved.append(applied.label_ms)

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    def _refuse(self, version: int, reason: str) -> AdaptationEvent:
        self._refused = version
        log.error("%s; still scoring with version %s", reason, self.version)
        self._alert(
            {
                "kind": "snapshot_rejected",
                "version": str(version),
                "kept_version": self.version,
                "reason": reason,
                "time_ms": int(time.time() * 1000),
            }
        )
        return AdaptationEvent(False, str(version), reason)

    def score(self, features: np.ndarray, onnx_scores: np.ndarray) -> AdaptedScores:
        """The batch's final scores (and River's, with the version that made them)."""
        if self._model is None:
            return AdaptedScores(onnx_scores, None, None)
        if self._replica is not None:
            return self._score_replica(self._replica, features, onnx_scores)
        matrix = np.column_stack([np.asarray(features, dtype=np.float64), onnx_scores])
        river = river_predict(
            self._model, self.spec.task, self._columns, matrix, batched=self._batched
        )
        final = final_scores(
            self.spec,
            onnx_scores,
            river,
            labels_seen=int(self._meta.get("labels_seen", 0)),
            promoted=bool(self._meta.get("promoted", False)),
        )
        return AdaptedScores(final, river, self.version)

    def _score_replica(
        self, replica: RiverReplica, features: np.ndarray, onnx_scores: np.ndarray
    ) -> AdaptedScores:
        if self._source is not None:
            # What arrived while the worker waited for this batch (its consume wait) is
            # learned before the batch is scored, not one batch later: freshness.
            self._apply_examples(replica, self._source)
        matrix = np.column_stack([np.asarray(features, dtype=np.float64), onnx_scores])
        river = river_predict(
            replica.model, self.spec.task, self._columns, matrix, batched=self._batched
        )
        final = final_scores(
            self.spec,
            onnx_scores,
            river,
            labels_seen=replica.applied,
            promoted=replica.promoted,
        )
        if self._unserved:
            # This batch is the first scored by a model that has learned these labels.
            produced = np.concatenate(self._unserved)
            ages = (self._wall_ms() - produced[produced > 0]) / 1000.0
            self._unserved.clear()
            if self._on_fresh is not None:
                behind = self._source.behind() if self._source is not None else None
                self._on_fresh(ages, behind or 0)
        return AdaptedScores(final, river, self.version)
