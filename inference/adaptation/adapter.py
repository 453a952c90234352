"""The worker side of adaptation: `Adapter` picks up verified snapshots between batches
(reading Redis at most once per `poll_interval_s`) and scores whole batches with River.

A snapshot is taken only when its signature holds, its signed version and pipeline are the
pointer's and this worker's (`SnapshotStore.load`), and it is not older than the version
served; anything else is refused with an alert and the served version stays."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from inference.adaptation.modes import AdaptationMode
from inference.adaptation.scoring import final_scores, river_predict, supports_many
from inference.adaptation.snapshots import SnapshotRejected, SnapshotStore, snapshot_key
from inference.adaptation.spec import ONNX_COLUMN, AdaptationSpec

log = logging.getLogger(__name__)

# The learner publishes at most every `adaptation.snapshot.every` (5 s by default); a check
# per second picks a version up promptly and costs one GET per second, not one per batch.
POLL_INTERVAL_S = 1.0


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

    @classmethod
    def open(
        cls,
        spec: AdaptationSpec,
        redis_client: redis.Redis,
        namespace: str,
        feature_names: Sequence[str],
        alert: Callable[[dict[str, Any]], None],
        *,
        key: str | None,
        clock: Callable[[], float] = time.monotonic,
        poll_interval_s: float = POLL_INTERVAL_S,
    ) -> Adapter:
        """Mode off: a pass-through (the key is not needed). Otherwise checks `key` (the
        STREAMFER_SNAPSHOT_KEY secret; raises SnapshotKeyMissing) and loads the latest
        snapshot, if any, right away."""
        if spec.mode is AdaptationMode.OFF:
            return cls(spec, None, feature_names, alert, clock=clock)
        store = SnapshotStore(redis_client, namespace, snapshot_key(key))
        adapter = cls(
            spec, store, feature_names, alert, clock=clock, poll_interval_s=poll_interval_s
        )
        adapter.poll()
        return adapter

    @property
    def version(self) -> str | None:
        return str(self._version) if self._version is not None else None

    def poll(self) -> AdaptationEvent | None:
        """Between batches: when a check is due, one GET of the version pointer; a new
        version is fetched, verified, loaded. Between checks it does nothing."""
        if self._store is None:
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
        return AdaptationEvent(True, str(latest))

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
