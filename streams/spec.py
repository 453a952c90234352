"""The pipeline spec: one YAML file, validated at start into one frozen settings object.

Connection settings and secrets never live in the file: they come from the environment
(`Connections.from_env`), so one spec runs unchanged on a laptop, in CI and in compose.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from features.duration import DurationMs
from features.spec import FeatureSpec
from inference.adaptation import AdaptationSpec as Adaptation
from inference.spec import ModelSpec
from streams.events.schema import EventSchema
from streams.security.redaction import (
    MASK,
    is_secret_setting,
    redact,
    redact_url,
    register_secret,
    register_url_secrets,
)


class SpecError(Exception):
    """A spec that cannot run; the message lists each problem with its field and fix."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Topics(_Frozen):
    events: str
    predictions: str
    dead_letter: str
    labels: str | None = None
    alerts: str | None = None
    features: str | None = Field(
        default=None, description="optional topic of scored feature vectors, for training sets"
    )
    examples: str | None = Field(
        default=None,
        description="the learner's training examples in learn order (one partition); "
        "workers tail it with adaptation.serving: replica",
    )
    partitions: int = Field(
        default=4, ge=1, description="partitions when streamfer creates a topic"
    )

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        named = [t for t in (self.events, self.predictions, self.dead_letter) if t]
        if len(set(named)) != len(named):
            raise ValueError("events, predictions and dead_letter must be three different topics")
        return self


class Batching(_Frozen):
    max_size: int = Field(default=1000, ge=1, le=100_000)
    max_wait: DurationMs = Field(default=50, description="longest wait to fill a batch")


class DeliveryMode(StrEnum):
    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"


class Delivery(_Frozen):
    mode: DeliveryMode = DeliveryMode.AT_LEAST_ONCE
    group: str | None = Field(default=None, description="consumer group (default: spec name)")


class AdaptationMode(StrEnum):
    OFF = "off"
    STACK = "stack"
    CHALLENGER = "challenger"


class PredictionLog(_Frozen):
    horizon: DurationMs = Field(default=3_600_000, gt=0, description="how long labels may lag")


class Retry(_Frozen):
    initial: DurationMs = 100
    max: DurationMs = 30_000


class DeadLetters(_Frozen):
    payload: bool = Field(
        default=True,
        description="false: dead letters carry only the reason and the source's "
        "topic/partition/offset — no raw key, value or error details (personal data)",
    )


class Metrics(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535)


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class PipelineSpec(_Frozen):
    name: str = Field(pattern=_NAME.pattern)
    topics: Topics
    event: EventSchema
    features: FeatureSpec
    model: ModelSpec
    batching: Batching = Batching()
    delivery: Delivery = Delivery()
    adaptation: Adaptation = Adaptation()
    prediction_log: PredictionLog = PredictionLog()
    retry: Retry = Retry()
    metrics: Metrics = Metrics()
    dead_letters: DeadLetters = DeadLetters()
    redis_namespace: str | None = Field(default=None, description="key prefix (default: name)")

    @model_validator(mode="after")
    def _features_read_declared_fields(self) -> Self:
        known = set(self.event.all_fields()) | {self.event.time.field}
        for entity in self.features.entities:
            if entity not in self.event.entities:
                raise ValueError(
                    f"features use entity '{entity}', which is not in event.entities "
                    f"{list(self.event.entities)}: add it there"
                )
        for field in self.features.fields_used:
            if field not in known:
                raise ValueError(
                    f"features read field '{field}', not declared in event.fields: declare it"
                )
        missing = [
            c for cols in self.model.inputs.values() for c in cols if c not in self.features.names
        ]
        if missing:
            raise ValueError(
                f"model.inputs use {missing}, which are not feature columns; "
                f"known columns: {list(self.features.names)}"
            )
        if self.adaptation.serving == "replica" and not self.topics.examples:
            raise ValueError(
                "adaptation.serving is replica but topics.examples is not set: name the "
                "examples topic the workers tail, or set adaptation.serving: snapshot"
            )
        return self

    @property
    def group(self) -> str:
        return self.delivery.group or self.name

    def prefixed(self, prefix: str) -> PipelineSpec:
        """The same pipeline under `<prefix>-<name>`: its topics, group and Redis namespace
        prefixed too, so one spec can run twice side by side (`--name`)."""
        if not _NAME.match(prefix):
            raise SpecError(
                f"--name {prefix!r} must start with a letter or digit and hold only letters, "
                "digits, '.', '_' and '-'"
            )
        topics = {
            key: f"{prefix}-{value}"
            for key, value in self.topics.model_dump().items()
            if isinstance(value, str)
        }
        update: dict[str, Any] = {
            "name": f"{prefix}-{self.name}",
            "topics": self.topics.model_copy(update=topics),
            "delivery": self.delivery.model_copy(update={"group": f"{prefix}-{self.group}"}),
            "redis_namespace": f"{prefix}-{self.namespace}",
        }
        return self.model_copy(update=update)

    @property
    def namespace(self) -> str:
        return self.redis_namespace or self.name


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "is required: add it"
    elif error["type"] == "extra_forbidden":
        message = "is not a known setting: remove it or check its spelling"
    return f"  {where}: {message}"


def load_spec(path: str | Path, *, prefix: str | None = None) -> PipelineSpec:
    """Read and validate a spec file; relative model paths resolve against its folder.

    `prefix` (the CLI's `--name`) runs the pipeline as `<prefix>-<name>`: see `prefixed`.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"spec file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path} must hold a mapping of settings, not {type(raw).__name__}")
    spec = parse_spec(raw, base=path.parent, source=str(path))
    return spec.prefixed(prefix) if prefix else spec


def parse_spec(
    raw: dict[str, Any], *, base: Path = Path("."), source: str = "spec"
) -> PipelineSpec:
    raw = dict(raw)
    model = raw.get("model")
    if isinstance(model, dict):
        model = dict(model)
        for key in ("path", "registry"):
            if isinstance(model.get(key), str) and not Path(model[key]).is_absolute():
                model[key] = str((base / model[key]).resolve())
        raw["model"] = model
    try:
        return PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        lines = "\n".join(_describe(e) for e in exc.errors())
        raise SpecError(f"{source} has {exc.error_count()} problem(s):\n{lines}") from None


SNAPSHOT_KEY_ENV = "STREAMFER_SNAPSHOT_KEY"
MODEL_KEY_ENV = "STREAMFER_MODEL_KEY"


class Connections(_Frozen):
    """Where Kafka and Redis are, and the secrets to use them; from the environment, never
    from the spec file.

    Every secret it holds is registered with `streams.security.redaction` when it is built
    (or unpickled in a worker process), so no message, log record or traceback of the process
    prints it; its repr and str mask the Redis password and the secret librdkafka settings.
    """

    bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    kafka: dict[str, str] = Field(default_factory=dict, description="extra librdkafka settings")
    snapshot_key: SecretStr | None = Field(
        default=None, description="HMAC key of adaptation snapshots (STREAMFER_SNAPSHOT_KEY)"
    )
    model_key: SecretStr | None = Field(
        default=None, description="HMAC key of model registry manifests (STREAMFER_MODEL_KEY)"
    )

    def model_post_init(self, context: Any, /) -> None:
        self._register_secrets()

    def __setstate__(self, state: dict[Any, Any]) -> None:
        # A spawned worker process gets its Connections by unpickling, not by validation.
        super().__setstate__(state)
        self._register_secrets()

    def _register_secrets(self) -> None:
        register_url_secrets(self.redis_url)
        for name, value in self.kafka.items():
            if is_secret_setting(name):
                register_secret(value)
        register_secret(self.snapshot_secret)
        register_secret(self.model_secret)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name == "redis_url":
                value = redact_url(value)
            elif name == "kafka":
                value = {k: MASK if is_secret_setting(k) else redact(v) for k, v in value.items()}
            yield name, value

    @property
    def snapshot_secret(self) -> str | None:
        """The snapshot key as text, or None when unset; checked where adaptation is on."""
        return self.snapshot_key.get_secret_value() if self.snapshot_key is not None else None

    @property
    def model_secret(self) -> str | None:
        """The model registry's manifest key as text, or None when unset."""
        return self.model_key.get_secret_value() if self.model_key is not None else None

    @classmethod
    def from_env(cls, *, bootstrap: str | None = None, redis_url: str | None = None) -> Connections:
        """STREAMFER_BOOTSTRAP, STREAMFER_REDIS_URL, and STREAMFER_RDKAFKA_<SETTING> for any
        librdkafka setting (e.g. STREAMFER_RDKAFKA_SASL_PASSWORD → sasl.password).

        Every secret of the environment is registered for redaction, also those this object
        does not keep (STREAMFER_REDIS_ADMIN_URL's password, the secure stack's credentials):
        a variable whose name says password/secret/key/token/credentials, and the password
        of any STREAMFER_*_URL.
        """
        for key, value in os.environ.items():
            if not key.startswith("STREAMFER_"):
                continue
            if key.endswith("_URL"):
                register_url_secrets(value)
            elif is_secret_setting(key):
                register_secret(value)
        extra = {
            key.removeprefix("STREAMFER_RDKAFKA_").lower().replace("_", "."): value
            for key, value in os.environ.items()
            if key.startswith("STREAMFER_RDKAFKA_")
        }
        return cls(
            # An empty variable means unset, as for every STREAMFER_* variable.
            bootstrap=bootstrap
            or os.environ.get("STREAMFER_BOOTSTRAP")
            or cls.model_fields["bootstrap"].default,
            redis_url=redis_url
            or os.environ.get("STREAMFER_REDIS_URL")
            or cls.model_fields["redis_url"].default,
            kafka=extra,
            snapshot_key=os.environ.get(SNAPSHOT_KEY_ENV) or None,
            model_key=os.environ.get(MODEL_KEY_ENV) or None,
        )

    def kafka_config(self, **settings: Any) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap, **self.kafka, **settings}
