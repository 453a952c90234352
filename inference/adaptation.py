"""Online adaptation: the `adaptation:` spec, River models built from it, signed snapshots,
the learner's predict-then-learn core and the worker-side `Adapter`.

The River model sees the features as the worker scored them plus the ONNX score (column
`onnx_score`), so it can lean on the offline model while it is good and learn past it once
the world changes. The learner publishes it as a snapshot — pickled, HMAC-SHA256 signed
with `STREAMFER_SNAPSHOT_KEY` — in Redis; workers check the version between batches and
verify the signature *before* unpickling, because unpickling runs code.

Redis keys (the namespace is the hash tag, so one Redis Cluster slot holds them all):
    sf:{<ns>}:adapt:version       latest published version (int)
    sf:{<ns>}:adapt:snap:<v>      hash: meta (JSON), model (pickle), sig, state, state_sig
Older versions expire `SNAPSHOT_GRACE_S` after a newer one is published, so a worker that
read the pointer just before can still fetch what it points to.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import hmac
import importlib
import inspect
import logging
import os
import pickle
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import ModuleType
from typing import Any, Literal, Self, cast

import numpy as np
import orjson
import redis
from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.duration import DurationMs
from inference.prequential import HIGHER_IS_BETTER, TASK_METRICS, RollingComparison

log = logging.getLogger(__name__)

SNAPSHOT_KEY_ENV = "STREAMFER_SNAPSHOT_KEY"
SNAPSHOT_GRACE_S = 600
ONNX_COLUMN = "onnx_score"
_MIN_KEY_LEN = 16


# -- the spec ------------------------------------------------------------------------------
class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AdaptationMode(StrEnum):
    OFF = "off"
    STACK = "stack"
    CHALLENGER = "challenger"


class AdaptationTask(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


class ChallengerSpec(_Frozen):
    """Promotion rule of `challenger` mode, over the last `window` labels."""

    metric: Literal["accuracy", "roc_auc", "log_loss", "mae", "rmse"] | None = Field(
        default=None, description="default: accuracy (classification), mae (regression)"
    )
    window: int = Field(default=500, ge=10, description="labels in the rolling window")
    margin: float = Field(default=0.01, ge=0.0, description="how much better River must be")


class SnapshotSpec(_Frozen):
    every_labels: int = Field(default=200, ge=1, description="publish after this many labels")
    every: DurationMs = Field(default=5_000, gt=0, description="or after this long")


def _adwin() -> dict[str, dict[str, Any]]:
    return {"drift.ADWIN": {}}


class DriftSpec(_Frozen):
    detector: dict[str, dict[str, Any]] = Field(
        default_factory=_adwin,
        description="one River drift detector, e.g. {drift.ADWIN: {delta: 0.002}}",
    )
    outputs: tuple[Literal["onnx", "river", "final"], ...] = ("onnx", "river", "final")
    features: tuple[str, ...] = Field(default=(), description="feature columns to watch")


class LabelRetrySpec(_Frozen):
    """Labels that arrive before their prediction is logged are retried, then expire."""

    attempts: int = Field(default=6, ge=0)
    backoff: DurationMs = Field(default=500, gt=0, description="first wait; doubles per try")


class LearnBatching(_Frozen):
    max_size: int = Field(default=500, ge=1, le=100_000)
    max_wait: DurationMs = Field(default=500, gt=0)


class AdaptationSpec(_Frozen):
    """The `adaptation:` section: what the learner trains and how workers use it."""

    mode: AdaptationMode = AdaptationMode.OFF
    task: AdaptationTask = AdaptationTask.CLASSIFICATION
    model: tuple[str | dict[str, Any], ...] | None = Field(
        default=None,
        description="River pipeline steps, e.g. [{preprocessing.StandardScaler: {}}, "
        "{linear_model.LogisticRegression: {}}]; default: scaler + logistic/linear regression",
    )
    min_labels: int = Field(default=500, ge=0, description="stack: labels before River is final")
    challenger: ChallengerSpec = ChallengerSpec()
    snapshot: SnapshotSpec = SnapshotSpec()
    drift: DriftSpec = DriftSpec()
    label_retry: LabelRetrySpec = LabelRetrySpec()
    batch: LearnBatching = LearnBatching()
    metrics_window: DurationMs = Field(
        default=3_600_000, gt=0, description="tumbling window of the prequential metrics"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        metric = self.challenger.metric
        if metric is not None and metric not in TASK_METRICS[self.task.value]:
            raise ValueError(
                f"challenger.metric '{metric}' does not fit task '{self.task.value}': "
                f"use one of {list(TASK_METRICS[self.task.value])}"
            )
        if self.model is not None or self.mode is not AdaptationMode.OFF:
            build_river_model(self.steps, self.task)  # unknown names fail at load, not later
            build_river_component(self.drift.detector, "drift.detector", kind="drift")
        return self

    @property
    def steps(self) -> tuple[str | dict[str, Any], ...]:
        if self.model is not None:
            return self.model
        last = (
            "linear_model.LogisticRegression"
            if self.task is AdaptationTask.CLASSIFICATION
            else "linear_model.LinearRegression"
        )
        return ("preprocessing.StandardScaler", last)

    @property
    def challenger_metric(self) -> str:
        return self.challenger.metric or TASK_METRICS[self.task.value][0]


# -- River components from names -----------------------------------------------------------
class RiverSpecError(ValueError):
    """A model or detector declaration naming something that is not a usable River class."""


_DOTTED = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$")


def is_component_name(value: Any) -> bool:
    """Whether a YAML key looks like `module.Class` (and so names a River component)."""
    return isinstance(value, str) and bool(_DOTTED.match(value))


def resolve_river(name: str, where: str = "model") -> type:
    """`linear_model.LogisticRegression` → the class, by attribute walks inside `river` only.

    No `eval`, no import outside the `river` package, no private names: each step must be a
    public attribute of a `river` module, and the result a class defined in `river`.
    """
    if not is_component_name(name):
        raise RiverSpecError(
            f"{where}: {name!r} is not a River component name; write it as module.Class, "
            "e.g. linear_model.LogisticRegression"
        )
    import river

    obj: Any = river
    for part in name.split("."):
        if not isinstance(obj, ModuleType):
            raise RiverSpecError(f"{where}: {name!r}: {obj.__name__} is not a module")
        if not hasattr(obj, part):
            with contextlib.suppress(ImportError):  # river's subpackages load on first use
                importlib.import_module(f"{obj.__name__}.{part}")
        if part.startswith("_") or not hasattr(obj, part):
            raise RiverSpecError(_unknown(name, part, obj, where))
        obj = getattr(obj, part)
        if isinstance(obj, ModuleType) and not _in_river(obj.__name__):
            raise RiverSpecError(f"{where}: {name!r} leads outside the river package")
    if not isinstance(obj, type) or not _in_river(obj.__module__):
        raise RiverSpecError(f"{where}: {name!r} is not a class of the river package")
    return obj


def _in_river(module: str) -> bool:
    return module == "river" or module.startswith("river.")


def _unknown(name: str, part: str, module: ModuleType, where: str) -> str:
    public = [n for n in dir(module) if not n.startswith("_")]
    close = difflib.get_close_matches(part, public, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return f"{where}: {name!r}: {module.__name__} has no public member {part!r}{hint}"


def build_river_component(decl: str | Mapping[str, Any], where: str, *, kind: str = "") -> Any:
    """One component: `Name` or `{Name: {kwarg: value, ...}}`, kwargs built recursively."""
    params: Any
    if isinstance(decl, str):
        name, params = decl, {}
    elif isinstance(decl, Mapping) and len(decl) == 1:
        name, params = next(iter(decl.items()))
        params = {} if params is None else params
        if not isinstance(params, Mapping):
            raise RiverSpecError(
                f"{where}: the arguments of {name} must be a mapping of keyword arguments, "
                f"got {params!r}"
            )
    else:
        raise RiverSpecError(
            f"{where}: write a component as `module.Class` or `{{module.Class: {{kwargs}}}}`, "
            f"got {decl!r}"
        )
    cls = resolve_river(str(name), where)
    if kind == "drift":
        from river.base import DriftDetector

        if not issubclass(cls, DriftDetector):
            raise RiverSpecError(f"{where}: {name} is not a River drift detector (drift.ADWIN…)")
    kwargs = {str(k): _build_value(v, f"{where}.{name}.{k}") for k, v in params.items()}
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        accepted = ", ".join(p for p in inspect.signature(cls).parameters if p != "self")
        raise RiverSpecError(f"{where}: {name}: {exc}; it accepts: {accepted}") from None
    try:
        return cls(**kwargs)
    except Exception as exc:  # River validates its own arguments
        raise RiverSpecError(f"{where}: {name}({kwargs}) failed: {exc}") from None


def _build_value(value: Any, where: str) -> Any:
    if isinstance(value, Mapping) and len(value) == 1 and is_component_name(next(iter(value))):
        return build_river_component(value, where)
    if isinstance(value, list):
        return [_build_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def build_river_model(
    steps: Sequence[str | Mapping[str, Any]], task: AdaptationTask | str = "classification"
) -> Any:
    """The pipeline of `steps` (composed with `|`), checked to be a classifier or regressor."""
    from river import base, compose

    if not steps:
        raise RiverSpecError("adaptation.model: declare at least one step")
    built = [build_river_component(s, f"adaptation.model[{i}]") for i, s in enumerate(steps)]
    for i, step in enumerate(built[:-1]):
        if not isinstance(step, base.Transformer | base.SupervisedTransformer):
            raise RiverSpecError(
                f"adaptation.model[{i}]: {type(step).__name__} is not a transformer; only the "
                "last step may be an estimator"
            )
    last = built[-1]
    want = (
        base.Classifier if AdaptationTask(task) is AdaptationTask.CLASSIFICATION else base.Regressor
    )
    if not isinstance(last, want):
        raise RiverSpecError(
            f"adaptation.model[{len(built) - 1}]: {type(last).__name__} is not a River "
            f"{want.__name__.lower()}, as task '{AdaptationTask(task).value}' needs"
        )
    return compose.Pipeline(*built) if len(built) > 1 else last


# -- signing -------------------------------------------------------------------------------
class SnapshotKeyMissing(Exception):
    """Adaptation is on but no signing key is in the environment."""


class SnapshotRejected(Exception):
    """A snapshot that fails verification; it is never unpickled."""


def snapshot_key_from_env(env: Mapping[str, str] | None = None) -> bytes:
    """The HMAC key shared by learner and workers; a clear error when it is missing."""
    value = (env if env is not None else os.environ).get(SNAPSHOT_KEY_ENV, "")
    if len(value) < _MIN_KEY_LEN:
        state = "is not set" if not value else f"is shorter than {_MIN_KEY_LEN} characters"
        raise SnapshotKeyMissing(
            f"adaptation is on but {SNAPSHOT_KEY_ENV} {state}. Snapshots are pickles and are "
            "only loaded when signed: set the same secret for the learner and every worker, "
            f"e.g. `export {SNAPSHOT_KEY_ENV}=$(openssl rand -hex 32)`, or set "
            "adaptation.mode: off."
        )
    return value.encode()


def sign(key: bytes, meta: bytes, payload: bytes) -> str:
    """HMAC-SHA256 over the metadata and the payload (length-prefixed, so no splicing)."""
    mac = hmac.new(key, len(meta).to_bytes(8, "big"), hashlib.sha256)
    mac.update(meta)
    mac.update(payload)
    return mac.hexdigest()


def verify(key: bytes, meta: bytes, payload: bytes, signature: bytes | str | None) -> bool:
    if signature is None:
        return False
    given = signature.decode("ascii", "replace") if isinstance(signature, bytes) else signature
    return hmac.compare_digest(sign(key, meta, payload), given)


# -- snapshots in Redis --------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    version: int
    meta: dict[str, Any]
    model: Any
    state: Any = None  # the learner's companions (drift detectors, challenger window)


class SnapshotStore:
    """Publish and load signed snapshots of one namespace."""

    def __init__(self, client: redis.Redis, namespace: str, key: bytes) -> None:
        self._client = client
        self._key = key
        self.prefix = f"sf:{{{namespace}}}:adapt:"

    @property
    def version_key(self) -> str:
        return self.prefix + "version"

    def snapshot_key(self, version: int) -> str:
        return f"{self.prefix}snap:{version}"

    def latest_version(self) -> int | None:
        raw = self._client.get(self.version_key)
        return int(raw) if raw is not None else None

    def publish(self, model: Any, meta: Mapping[str, Any], state: Any = None) -> int:
        """Sign and store a new version atomically; the version pointer moves last."""
        version = int(self._client.incr(self.prefix + "counter"))
        meta_bytes = orjson.dumps({**meta, "version": version}, option=orjson.OPT_SORT_KEYS)
        payload = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        state_bytes = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(
            self.snapshot_key(version),
            mapping={
                "meta": meta_bytes,
                "model": payload,
                "sig": sign(self._key, meta_bytes, payload),
                "state": state_bytes,
                "state_sig": sign(self._key, meta_bytes, state_bytes),
            },
        )
        previous = self.latest_version()
        pipe.set(self.version_key, version)
        if previous is not None:
            pipe.expire(self.snapshot_key(previous), SNAPSHOT_GRACE_S)
        pipe.execute()
        return version

    def load(self, version: int, *, with_state: bool = False) -> Snapshot | None:
        """Fetch, verify, then unpickle; None if the version is gone (expired)."""
        fields = ["meta", "model", "sig"] + (["state", "state_sig"] if with_state else [])
        values = cast(list[bytes | None], self._client.hmget(self.snapshot_key(version), fields))
        if values[0] is None and values[1] is None:
            return None
        meta, payload, sig = values[0], values[1], values[2]
        if meta is None or payload is None or not verify(self._key, meta, payload, sig):
            raise SnapshotRejected(
                f"snapshot version {version} has a bad signature: refused (tampered, or signed "
                f"with another {SNAPSHOT_KEY_ENV})"
            )
        state = None
        if with_state:
            state_bytes, state_sig = values[3], values[4]
            if state_bytes is None or not verify(self._key, meta, state_bytes, state_sig):
                raise SnapshotRejected(f"snapshot version {version}: learner state bad signature")
            state = pickle.loads(state_bytes)
        return Snapshot(version, orjson.loads(meta), pickle.loads(payload), state)


# -- scoring with a River model ------------------------------------------------------------
def supports_many(model: Any) -> bool:
    """Whether River's DataFrame batch methods cover every step of `model`."""
    from river import base, compose

    steps = list(model.steps.values()) if isinstance(model, compose.Pipeline) else [model]
    *front, last = steps
    batch_last = base.MiniBatchClassifier | base.MiniBatchRegressor
    return isinstance(last, batch_last) and all(
        isinstance(s, base.MiniBatchTransformer) for s in front
    )


def river_predict(
    model: Any,
    task: AdaptationTask,
    columns: Sequence[str],
    matrix: np.ndarray,
    *,
    batched: bool | None = None,
) -> np.ndarray:
    """(n,) River outputs for a (n, k) matrix: P(y=1) for classifiers, values for regressors.

    With batch methods the DataFrame is built straight from the matrix (no per-event Python);
    otherwise one `*_one` call per row.
    """
    n = matrix.shape[0]
    if n == 0:
        return np.empty(0)
    if batched is None:
        batched = supports_many(model)
    if batched:
        import pandas as pd

        frame = pd.DataFrame(matrix, columns=list(columns), copy=False)
        if task is AdaptationTask.CLASSIFICATION:
            proba = model.predict_proba_many(frame)
            for positive in (True, 1, "1", "True"):
                if positive in proba.columns:
                    return np.asarray(proba[positive], dtype=np.float64)
            return np.zeros(n)
        return np.asarray(model.predict_many(frame), dtype=np.float64)
    names = list(columns)
    rows = matrix.tolist()
    if task is AdaptationTask.CLASSIFICATION:
        return np.fromiter(
            (
                positive_proba(model.predict_proba_one(dict(zip(names, r, strict=True))))
                for r in rows
            ),
            np.float64,
            n,
        )
    return np.fromiter(
        (float(model.predict_one(dict(zip(names, r, strict=True))) or 0.0) for r in rows),
        np.float64,
        n,
    )


def positive_proba(proba: Mapping[Any, float]) -> float:
    """P(positive) from River's class → probability dict (labels learned as bools)."""
    for positive in (True, 1):
        if positive in proba:
            return float(proba[positive])
    return 0.0


def final_scores(
    spec: AdaptationSpec,
    onnx: np.ndarray,
    river: np.ndarray | None,
    *,
    labels_seen: int | np.ndarray,
    promoted: bool,
) -> np.ndarray:
    """The served output: ONNX, or River once trusted (stack: enough labels; challenger:
    promoted). `labels_seen` may be per row, for the learner's replay of the rule."""
    if river is None or spec.mode is AdaptationMode.OFF:
        return onnx
    if spec.mode is AdaptationMode.STACK:
        return np.where(np.asarray(labels_seen) >= spec.min_labels, river, onnx)
    return river if promoted else onnx


# -- the learner's core --------------------------------------------------------------------
@dataclass
class LearnerState:
    """What a restarted learner needs besides the model (pickled, signed with it)."""

    labels_seen: int = 0
    challenger: RollingComparison | None = None
    drift: Any = None  # inference.drift.DriftMonitor, kept opaque here


@dataclass(frozen=True)
class LearnOutcome:
    river: np.ndarray
    final: np.ndarray
    labels_seen_before: int


@dataclass
class OnlineLearner:
    """Predict-then-learn: each label is first predicted by the model that has learned every
    earlier label (the prequential River output), then learned (`learn_one`, River's stream
    contract: one SGD step per label, not one per batch)."""

    spec: AdaptationSpec
    feature_names: tuple[str, ...]
    threshold: float = 0.5
    model: Any = None
    state: LearnerState = field(default_factory=LearnerState)

    def __post_init__(self) -> None:
        if self.model is None:
            self.model = build_river_model(self.spec.steps, self.spec.task)
        if self.state.challenger is None:
            c = self.spec.challenger
            self.state.challenger = RollingComparison(
                self.spec.challenger_metric, c.window, c.margin, self.threshold
            )

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.feature_names, ONNX_COLUMN)

    @property
    def labels_seen(self) -> int:
        return self.state.labels_seen

    @property
    def promoted(self) -> bool:
        assert self.state.challenger is not None
        return self.state.challenger.promoted

    def learn(self, features: np.ndarray, onnx: np.ndarray, y: np.ndarray) -> LearnOutcome:
        """Learn one batch of joined labels, in order; return the prequential outputs."""
        n = len(y)
        before = self.state.labels_seen
        river = np.empty(n)
        names = self.columns
        classify = self.spec.task is AdaptationTask.CLASSIFICATION
        model = self.model
        rows = np.column_stack([features, onnx]).tolist() if n else []
        targets = np.asarray(y, dtype=np.float64).tolist()
        for i, (row, target) in enumerate(zip(rows, targets, strict=True)):
            x = dict(zip(names, row, strict=True))
            if classify:
                river[i] = positive_proba(model.predict_proba_one(x))
                model.learn_one(x, target >= 0.5)
            else:
                river[i] = float(model.predict_one(x) or 0.0)
                model.learn_one(x, target)
        self.state.labels_seen += n
        promoted = self.promoted
        final = final_scores(
            self.spec, onnx, river, labels_seen=before + np.arange(n), promoted=promoted
        )
        if self.spec.mode is AdaptationMode.CHALLENGER:
            assert self.state.challenger is not None
            self.state.challenger.add(y, onnx, river)
            self.state.challenger.decide()
        return LearnOutcome(river, final, before)

    def meta(self) -> dict[str, Any]:
        """Snapshot metadata the workers act on (signed with the model)."""
        return {
            "labels_seen": self.state.labels_seen,
            "promoted": self.promoted,
            "mode": self.spec.mode.value,
            "task": self.spec.task.value,
            "columns": list(self.columns),
            "created_ms": int(time.time() * 1000),
        }


# -- the worker side -----------------------------------------------------------------------
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
    ) -> None:
        self.spec = spec
        self._store = store
        self._columns = (*feature_names, ONNX_COLUMN)
        self._alert = alert
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
    ) -> Adapter:
        """Mode off: a pass-through. Otherwise needs STREAMFER_SNAPSHOT_KEY (raises
        SnapshotKeyMissing) and loads the latest snapshot, if any, right away."""
        if spec.mode is AdaptationMode.OFF:
            return cls(spec, None, feature_names, alert)
        store = SnapshotStore(redis_client, namespace, snapshot_key_from_env())
        adapter = cls(spec, store, feature_names, alert)
        adapter.poll()
        return adapter

    @property
    def version(self) -> str | None:
        return str(self._version) if self._version is not None else None

    def poll(self) -> AdaptationEvent | None:
        """One GET of the version pointer; a new version is fetched, verified, loaded."""
        if self._store is None:
            return None
        try:
            latest = self._store.latest_version()
            if latest is None or latest in (self._version, self._refused):
                return None
            try:
                snapshot = self._store.load(latest)
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


__all__ = [
    "HIGHER_IS_BETTER",
    "AdaptationEvent",
    "AdaptationMode",
    "AdaptationSpec",
    "AdaptationTask",
    "AdaptedScores",
    "Adapter",
    "LearnerState",
    "OnlineLearner",
    "RiverSpecError",
    "Snapshot",
    "SnapshotKeyMissing",
    "SnapshotRejected",
    "SnapshotStore",
    "build_river_component",
    "build_river_model",
    "final_scores",
    "resolve_river",
    "river_predict",
    "sign",
    "snapshot_key_from_env",
    "verify",
]
