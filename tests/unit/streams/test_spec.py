from pathlib import Path

import pytest
import yaml

from streams.spec import Connections, DeliveryMode, SpecError, load_spec, parse_spec

DEMO = Path(__file__).parents[3] / "examples" / "card-payments.yaml"


def demo_raw() -> dict:
    return yaml.safe_load(DEMO.read_text())


def test_demo_spec_loads_into_typed_settings():
    spec = load_spec(DEMO)
    assert spec.delivery.mode is DeliveryMode.AT_LEAST_ONCE
    assert spec.batching.max_wait == 50
    assert spec.group == "card-payments"
    assert Path(spec.model.path).is_absolute()  # resolved against the spec's folder


def test_unknown_setting_names_the_field_and_the_fix():
    raw = demo_raw()
    raw["batching"]["max_sise"] = 10
    with pytest.raises(SpecError, match=r"batching\.max_sise: is not a known setting"):
        parse_spec(raw)


def test_missing_section_is_reported():
    raw = demo_raw()
    del raw["topics"]
    with pytest.raises(SpecError, match=r"topics: is required"):
        parse_spec(raw)


def test_model_input_must_be_a_feature_column():
    raw = demo_raw()
    raw["model"]["inputs"]["features"].append("card_velocity")
    with pytest.raises(SpecError, match="card_velocity"):
        parse_spec(raw)


def test_feature_entity_must_be_an_event_entity():
    raw = demo_raw()
    raw["event"]["entities"] = ["card_id"]
    with pytest.raises(SpecError, match="merchant_id"):
        parse_spec(raw)


def test_bad_duration_says_how_to_write_one():
    raw = demo_raw()
    raw["batching"]["max_wait"] = "fifty"
    with pytest.raises(SpecError, match=r"batching\.max_wait.*'500ms'"):
        parse_spec(raw)


def test_same_topic_twice_is_refused():
    raw = demo_raw()
    raw["topics"]["predictions"] = raw["topics"]["events"]
    with pytest.raises(SpecError, match="three different topics"):
        parse_spec(raw)


def test_invalid_yaml_is_a_spec_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)


def test_missing_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")


def test_connections_and_secrets_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("STREAMFER_BOOTSTRAP", "broker:9093")
    monkeypatch.setenv("STREAMFER_RDKAFKA_SASL_PASSWORD", "s3cret")
    conn = Connections.from_env()
    config = conn.kafka_config(**{"group.id": "g"})
    assert config["bootstrap.servers"] == "broker:9093"
    assert config["sasl.password"] == "s3cret"
    assert Connections.from_env(bootstrap="x:1").bootstrap == "x:1"
