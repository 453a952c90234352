"""Online adaptation: a River model that learns from labels next to the offline ONNX model.

The learner (streams.learner) trains it predict-then-learn (`learner`) on the features the
worker scored plus the ONNX score, and publishes signed snapshots in Redis (`snapshots`);
workers pick them up between batches and score whole batches with them (`adapter`,
`scoring`), or keep a replica current from the learner's examples log (`examples`,
`replica`). The `adaptation:` spec (`spec`) names River components that are resolved inside
`river` only (`river_build`).

The names below are re-exported for importers outside this package.
"""

from __future__ import annotations

from inference.adaptation.adapter import (
    POLL_INTERVAL_S,
    AdaptationEvent,
    AdaptedScores,
    Adapter,
    ExampleSource,
    ExampleSourceFactory,
    FreshnessSink,
)
from inference.adaptation.examples import (
    DecodedExamples,
    LearnedExamples,
    decode_examples,
    encode_examples,
)
from inference.adaptation.learner import LearnerState, LearnOutcome, OnlineLearner
from inference.adaptation.modes import AdaptationMode, AdaptationTask
from inference.adaptation.replica import Applied, RiverReplica, learn_rows
from inference.adaptation.river_build import (
    RiverSpecError,
    build_river_component,
    build_river_model,
    is_component_name,
    resolve_river,
)
from inference.adaptation.scoring import final_scores, positive_proba, river_predict, supports_many
from inference.adaptation.snapshots import (
    SNAPSHOT_GRACE_S,
    SNAPSHOT_KEY_ENV,
    Snapshot,
    SnapshotKeyMissing,
    SnapshotRejected,
    SnapshotStore,
    sign,
    snapshot_key,
    verify,
)
from inference.adaptation.spec import (
    ONNX_COLUMN,
    AdaptationSpec,
    ChallengerSpec,
    DriftSpec,
    LabelRetrySpec,
    LearnBatching,
    Serving,
    SnapshotSpec,
)
from inference.prequential import HIGHER_IS_BETTER

__all__ = [
    "HIGHER_IS_BETTER",
    "ONNX_COLUMN",
    "POLL_INTERVAL_S",
    "SNAPSHOT_GRACE_S",
    "SNAPSHOT_KEY_ENV",
    "AdaptationEvent",
    "AdaptationMode",
    "AdaptationSpec",
    "AdaptationTask",
    "AdaptedScores",
    "Adapter",
    "Applied",
    "ChallengerSpec",
    "DecodedExamples",
    "DriftSpec",
    "ExampleSource",
    "ExampleSourceFactory",
    "FreshnessSink",
    "LabelRetrySpec",
    "LearnBatching",
    "LearnOutcome",
    "LearnedExamples",
    "LearnerState",
    "OnlineLearner",
    "RiverReplica",
    "RiverSpecError",
    "Serving",
    "Snapshot",
    "SnapshotKeyMissing",
    "SnapshotRejected",
    "SnapshotSpec",
    "SnapshotStore",
    "build_river_component",
    "build_river_model",
    "decode_examples",
    "encode_examples",
    "final_scores",
    "is_component_name",
    "learn_rows",
    "positive_proba",
    "resolve_river",
    "river_predict",
    "sign",
    "snapshot_key",
    "supports_many",
    "verify",
]
