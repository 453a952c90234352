"""The pure scoring core: a decoded batch in, its scores (and the batch that was scored) out.

    features (1 store call) ─► model (1 run) ─► adapter (1 call) ─► prediction log (1 write)

Everything it talks to arrives as an argument (store, models, adapter, log, clock), so a
unit test scores a batch with the `memory://` store and an in-memory log, no Kafka, no
Redis. The three steps are also callable apart (`feature_batch` on the caller's thread,
`features`, `score`, `write_log`), so the worker can run the Redis calls of one batch
while it decodes or produces another (see `streams.worker.pipeline`); `__call__` runs them
in order. Exceptions keep one meaning each: a feature-script error (`redis.ResponseError`) is
about the data and isolates the poison events into dead letters; a non-finite score
dead-letters its event; anything else (Redis down, a model RuntimeError) propagates to the
loop, which pauses and retries the same batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import redis

from features.store import FeatureBatch, FeatureResult, FeatureStore
from streams.events.codec import DecodedBatch, Scored
from streams.events.dead_letters import Reason

log = logging.getLogger(__name__)

SHADOW_PREFIX = "shadow:"
"""A shadow score's name in the prediction log: `shadow:<version>`."""


class ScoringModel(Protocol):
    """One model version: scores a (n, k) feature matrix into (n,) scores."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    def predict(self, features: np.ndarray) -> np.ndarray: ...


class ModelSource(Protocol):
    """Where the version scoring the next batch comes from (e.g. `ModelSwitch`)."""

    def current(self) -> ScoringModel: ...


class ShadowSource(Protocol):
    """The candidate scored beside the active model, if any (e.g. `ShadowModel`)."""

    def current(self) -> ScoringModel | None: ...


class AdaptedScores(Protocol):
    @property
    def final(self) -> np.ndarray: ...
    @property
    def river(self) -> np.ndarray | None: ...
    @property
    def version(self) -> str | None: ...


class BatchAdapter(Protocol):
    """Turns the model's scores into the final ones (e.g. `inference.adaptation.Adapter`)."""

    def score(self, features: np.ndarray, onnx_scores: np.ndarray) -> AdaptedScores: ...


class PredictionSink(Protocol):
    """Where each scored event is logged for the label join (`PredictionLog` in Redis)."""

    def write(
        self,
        event_ids: Sequence[str],
        features: np.ndarray,
        scores: dict[str, np.ndarray],
        model_version: str,
        adaptation_version: str | None,
        event_time_ms: Sequence[int] | np.ndarray,
    ) -> None: ...


StageTimer = Callable[[str, float], None]
"""Called with (stage, seconds) per batch: "features", "inference", "prediction_log"."""


def _no_timer(_stage: str, _seconds: float) -> None:
    pass


Floors = Callable[[Iterable[tuple[str, int]]], Mapping[tuple[str, int], int]]
"""Per source partition of a batch, the highest offset the state must hold (`FeatureBatch`)."""


@dataclass(frozen=True, slots=True)
class ScoredBatch:
    """The events that were scored (poison and unscorable ones moved to its dead letters)
    and their scores, row for row."""

    events: DecodedBatch
    scored: Scored
    logged: dict[str, np.ndarray] = field(default_factory=dict)
    """The scores that go to the prediction log (with a shadow's), for `Scorer.write_log`."""


@dataclass(frozen=True, slots=True)
class Featurized:
    """A batch after its feature-store call: the events left (poison ones isolated into
    dead letters) and their features, row for row."""

    events: DecodedBatch
    features: FeatureResult

    def keep(self, mask: np.ndarray) -> Featurized:
        """The rows where `mask` is true (e.g. the events of partitions still owned)."""
        if mask.all():
            return self
        f = self.features
        return Featurized(
            self.events.keep(mask), FeatureResult(f.values[mask], f.late[mask], f.replayed[mask])
        )


class Scorer:
    """Scores whole decoded batches; one store call, one model run, one log write each."""

    def __init__(
        self,
        *,
        threshold: float,
        store: FeatureStore,
        models: ModelSource,
        adapter: BatchAdapter,
        log: PredictionSink,
        clock: Callable[[], float] = time.time,
        on_stage: StageTimer = _no_timer,
        floors: Floors | None = None,
        shadow: ShadowSource | None = None,
    ) -> None:
        self._threshold = threshold
        self._shadow = shadow
        self._floors = floors
        self._store = store
        self._models = models
        self._adapter = adapter
        self._log = log
        self._clock = clock
        self._on_stage = on_stage

    def __call__(self, decoded: DecodedBatch) -> ScoredBatch:
        """Features, model, adapter and prediction log of one batch, in order."""
        result = self.score(self.features(decoded, self.feature_batch(decoded)))
        self.write_log(result)
        return result

    def feature_batch(self, decoded: DecodedBatch) -> FeatureBatch:
        """The store call's input, with the floors of the batch's partitions.

        Called on the worker's own thread: the floors' bookkeeping is not shared."""
        floors = None
        if self._floors is not None:
            floors = self._floors({(topic, p) for topic, p, _ in decoded.sources})
        return FeatureBatch(
            decoded.records, decoded.event_time_ms.tolist(), decoded.sources, floors
        )

    def features(self, decoded: DecodedBatch, batch: FeatureBatch) -> Featurized:
        """The one store call of the batch (poison events isolated); may run on a thread.

        A `StateLost` or a transient Redis error propagates: nothing of the batch is scored.
        """
        if not len(decoded):
            empty = np.empty(0, dtype=bool)
            return Featurized(
                decoded, FeatureResult(np.empty((0, len(self._store.names))), empty, empty)
            )
        started = time.perf_counter()
        try:
            features = self._store.update_and_read(batch)
        except redis.ResponseError as exc:
            log.warning("feature computation failed for the batch (%s); isolating events", exc)
            features, decoded = isolate_poison(self._store, decoded)
        self._on_stage("features", time.perf_counter() - started)
        return Featurized(decoded, features)

    def score(self, featurized: Featurized) -> ScoredBatch:
        """Model, shadow and adapter of a featurized batch; non-finite scores dead-lettered.

        The prediction log is not written here: `write_log(result)` does it."""
        decoded, features = featurized.events, featurized.features
        if not len(decoded):
            return ScoredBatch(decoded, self._empty())
        features_done = time.perf_counter()
        model = self._models.current()  # one version scores the whole batch
        onnx_scores = model.predict(features.values)
        # A shadow candidate: one more run; its scores go to the prediction log only.
        shadow = self._shadow.current() if self._shadow is not None else None
        shadow_scores = shadow.predict(features.values) if shadow is not None else None
        self._on_stage("inference", time.perf_counter() - features_done)
        adapted = self._adapter.score(features.values, onnx_scores)
        final, river = adapted.final, adapted.river
        unscorable = ~np.isfinite(final)
        if unscorable.any():
            # A NaN score would be published as null: dead-letter those events instead. Their
            # features stay applied, as for every event the store has seen.
            log.warning("%d events got a non-finite score; dead-lettered", int(unscorable.sum()))
            decoded = decoded.reject(
                unscorable,
                Reason.SCORE_NOT_FINITE,
                [
                    f"the score is {f} (ONNX model output {o}): the model or the adaptation "
                    "model gave no finite score for this event's features"
                    for f, o in zip(
                        final[unscorable].tolist(), onnx_scores[unscorable].tolist(), strict=True
                    )
                ],
            )
            keep = ~unscorable
            features = FeatureResult(
                features.values[keep], features.late[keep], features.replayed[keep]
            )
            onnx_scores, final = onnx_scores[keep], final[keep]
            river = None if river is None else river[keep]
            shadow_scores = None if shadow_scores is None else shadow_scores[keep]
        scored_at_ms = int(self._clock() * 1000)
        scores = (
            {"onnx": onnx_scores, "final": final}
            if river is None
            else {"onnx": onnx_scores, "river": river, "final": final}
        )
        if shadow is not None and shadow_scores is not None:
            scores[f"{SHADOW_PREFIX}{shadow.version}"] = shadow_scores
        return ScoredBatch(
            decoded,
            Scored(
                features=features.values,
                scores=final,
                onnx_scores=onnx_scores,
                river_scores=river,
                decisions=final >= self._threshold,
                late=features.late,
                replayed=features.replayed,
                model_name=model.name,
                model_version=model.version,
                adaptation_version=adapted.version,
                scored_at_ms=scored_at_ms,
            ),
            scores,
        )

    def write_log(self, result: ScoredBatch) -> None:
        """The batch's prediction-log entries (idempotent: a retry rewrites the same ones)."""
        decoded, scored = result.events, result.scored
        if not len(decoded):
            return
        started = time.perf_counter()
        self._log.write(
            decoded.ids.tolist(),
            scored.features,
            result.logged,
            scored.model_version,
            scored.adaptation_version,
            decoded.event_time_ms,
        )
        self._on_stage("prediction_log", time.perf_counter() - started)

    def _empty(self) -> Scored:
        """The scores of a batch with no scorable event (all of it became dead letters)."""
        model = self._models.current()
        empty = np.empty(0)
        flags = np.empty(0, dtype=bool)
        return Scored(
            np.empty((0, len(self._store.names))),
            empty,
            empty,
            None,
            flags,
            flags,
            flags,
            model.name,
            model.version,
            None,
            int(self._clock() * 1000),
        )


def isolate_poison(
    store: FeatureStore, decoded: DecodedBatch
) -> tuple[FeatureResult, DecodedBatch]:
    """A script error is about the data: score events one by one, dead-letter the bad ones.

    Events the failed call had already applied are replays now (their offsets were
    recorded), so answering them again returns their recorded values and changes nothing
    twice. Returns the features of the good events and the batch without the bad ones.
    """
    rows: list[FeatureResult] = []
    bad = np.zeros(len(decoded), dtype=bool)
    messages: list[str] = []
    times = decoded.event_time_ms.tolist()
    for i, (record, source) in enumerate(zip(decoded.records, decoded.sources, strict=True)):
        try:
            rows.append(store.update_and_read(FeatureBatch([record], [times[i]], [source])))
        except redis.ResponseError as exc:
            bad[i] = True
            messages.append(str(exc))
    kept = decoded.reject(bad, Reason.FEATURE_ERROR, messages)
    if not rows:
        empty = np.empty(0, dtype=bool)
        return FeatureResult(np.empty((0, len(store.names))), empty, empty), kept
    return (
        FeatureResult(
            values=np.vstack([r.values for r in rows]),
            late=np.concatenate([r.late for r in rows]),
            replayed=np.concatenate([r.replayed for r in rows]),
        ),
        kept,
    )
