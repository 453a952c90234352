"""The benchmark job as a Quix Streams or Faust user would write it, library calls included.

Same work as a streamfer worker, per the demo spec: validate the event against the spec's
schema (`streams.events.schema.EventValidator`), compute its features in Redis with the same
library a user would call (`features.store.open_store` → `Featurizer` over
`RedisFeatureStore`: one `features.lua` call per `score()` call, same state, same replay
records per (topic, partition, offset)), score with the same ONNX file through a plain
`onnxruntime.InferenceSession` (1 intra-op thread, as the spec says), and emit the same
prediction JSON. Only streamfer's prediction log (kept for the online learner) is left
out, so peers do a little less work than streamfer.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from features.backends import open_store
from features.store import FeatureBatch
from streams.events.schema import EventValidator, InvalidEvent
from streams.spec import PipelineSpec

Source = tuple[str, int, int]


class PeerJob:
    """validate → features (one Redis script call) → ONNX (one run) → prediction dicts."""

    def __init__(self, spec: PipelineSpec, redis_url: str) -> None:
        assert spec.model.path is not None, "the benchmark spec names a model file"
        self.spec = spec
        self._validator = EventValidator(spec.event)
        self._store = open_store(spec.features, redis_url, spec.namespace)
        options = ort.SessionOptions()
        options.intra_op_num_threads = spec.model.threads or 1
        options.log_severity_level = 3
        path = Path(spec.model.path)
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = list(spec.features.names)
        self._inputs = [
            (name, np.asarray([names.index(c) for c in cols], dtype=np.intp))
            for name, cols in spec.model.inputs.items()
        ]
        self._output = spec.model.output
        self._output_index = spec.model.output_index
        self._model = {
            "name": spec.model.name,
            "version": hashlib.sha256(path.read_bytes()).hexdigest()[:12],
        }
        self._threshold = spec.model.threshold
        self._id = spec.event.id
        self._key = spec.event.key or spec.event.entities[0]
        self._entities = spec.event.entities
        self.invalid = 0

    def score(self, events: Sequence[tuple[Any, Source]]) -> list[tuple[str, dict[str, Any]]]:
        """(key, prediction) per valid event, in order; invalid events are counted, dropped."""
        now_ms = int(time.time() * 1000)
        records: list[dict[str, Any]] = []
        times: list[int] = []
        sources: list[Source] = []
        for event, source in events:
            try:
                record, time_ms = self._validator.validate(event, now_ms)
            except InvalidEvent:
                self.invalid += 1
                continue
            records.append(record)
            times.append(time_ms)
            sources.append(source)
        if not records:
            return []
        features = self._store.update_and_read(FeatureBatch(records, times, sources))
        feeds = {
            name: np.ascontiguousarray(features.values[:, cols], dtype=np.float32)
            for name, cols in self._inputs
        }
        out = np.asarray(self._session.run([self._output], feeds)[0])
        if out.ndim == 2:
            out = out[:, -1 if self._output_index is None else self._output_index]
        scores = out.astype(np.float64).tolist()
        late = features.late.tolist()
        replayed = features.replayed.tolist()
        scored_at = int(time.time() * 1000)
        return [
            (
                str(record[self._key]),
                {
                    "event_id": record[self._id],
                    "keys": {e: str(record[e]) for e in self._entities},
                    "score": scores[i],
                    "scores": {"onnx": scores[i]},
                    "decision": scores[i] >= self._threshold,
                    "model": self._model,
                    "adaptation_version": None,
                    "event_time": times[i],
                    "scored_at": scored_at,
                    "late": late[i],
                    "replayed": replayed[i],
                },
            )
            for i, record in enumerate(records)
        ]

    def close(self) -> None:
        self._store.close()
