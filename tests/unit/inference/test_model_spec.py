"""ModelSpec: the `model:` section parses, defaults, and rejects mistakes with the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from inference.spec import ModelSpec

INPUTS = {"features": ["card_count_1h", "card_amount_mean_1h", "amount_log", "channel=web"]}


def spec(**fields: Any) -> ModelSpec:
    base: dict[str, Any] = {"name": "card-fraud", "path": "models/card-fraud.onnx"}
    base["inputs"] = INPUTS
    base.update(fields)
    return ModelSpec.model_validate({k: v for k, v in base.items() if v is not None})


def error_of(**fields: Any) -> str:
    with pytest.raises(ValidationError) as info:
        spec(**fields)
    return str(info.value)


def test_the_documented_example_parses_with_defaults() -> None:
    s = spec(swap_poll="1s", output="score", output_index=None, threshold=0.5)
    assert s.path == Path("models/card-fraud.onnx")
    assert s.registry is None
    assert s.inputs == {"features": tuple(INPUTS["features"])}
    assert (s.output, s.output_index, s.threshold) == ("score", None, 0.5)
    assert (s.providers, s.threads, s.warmup_batches) == ("auto", 0, 3)
    assert s.swap_poll == 1000 and s.swap_poll_s == 1.0
    assert s.feature_columns == tuple(INPUTS["features"])


def test_registry_form_accepts_a_numeric_version_and_ms_durations() -> None:
    s = spec(path=None, registry=".streamfer/models", version=3, swap_poll="500ms")
    assert s.registry == Path(".streamfer/models")
    assert s.version == "3"
    assert s.swap_poll_s == 0.5
    assert spec(path=None, registry="r").version == "active"
    assert spec(path=None, registry="r", version="latest").version == "latest"


def test_exactly_one_of_path_and_registry() -> None:
    assert "exactly one of `path`" in error_of(registry="r")
    assert "exactly one of `path`" in error_of(path=None)


def test_version_only_with_registry() -> None:
    assert "only applies with `registry`" in error_of(version="2")


@pytest.mark.parametrize("version", ["v2", "0", "-1", "newest"])
def test_bad_version_names_the_accepted_forms(version: str) -> None:
    message = error_of(path=None, registry="r", version=version)
    assert "'active'" in message and "'latest'" in message


def test_unknown_fields_are_refused_by_name() -> None:
    assert "treshold" in error_of(treshold=0.3)


def test_bad_providers_threads_and_swap_poll() -> None:
    assert "providers" in error_of(providers="tpu")
    assert "threads" in error_of(threads=-1)
    assert "swap_poll" in error_of(swap_poll="soon")
    assert "swap_poll must be > 0" in error_of(swap_poll="0s")


def test_inputs_must_map_columns_once() -> None:
    assert "model.inputs is empty" in error_of(inputs={})
    assert "has no columns" in error_of(inputs={"features": []})
    assert "more than once" in error_of(inputs={"features": ["a", "b", "a"]})


def test_bad_model_name_is_refused() -> None:
    assert "model name '../x'" in error_of(name="../x")


def test_spec_is_frozen() -> None:
    s = spec()
    with pytest.raises(ValidationError):
        s.threshold = 0.9  # type: ignore[misc]
