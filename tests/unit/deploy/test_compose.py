"""The Docker deployment, checked without Docker.

docker-compose.yml must follow the Compose Specification (its JSON schema is vendored in
tests/data), every container of our image must run a real `streamfer` command with real
options, and Prometheus and Grafana must agree with the workers on port and metric names.
"""

from __future__ import annotations

import copy
import itertools
import json
import posixpath
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
import typer
import yaml

REPO = Path(__file__).resolve().parents[3]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
COMPOSE_SCHEMA = REPO / "tests" / "data" / "compose-spec.json"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_DATASOURCE = REPO / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
GRAFANA_PROVIDER = REPO / "deploy" / "grafana" / "provisioning" / "dashboards" / "streamfer.yml"
GRAFANA_DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "streamfer.json"

# The Dockerfile copies the repo's examples/ here; commands name specs by this path.
IMAGE_EXAMPLES = "/app/examples"
DEFAULT_METRICS_PORT = 9108

WORKER_METRICS = frozenset(
    {
        "streamfer_events_in_total",
        "streamfer_predictions_out_total",
        "streamfer_dead_letters_total",
        "streamfer_batch_size",
        "streamfer_batch_wait_seconds",
        "streamfer_stage_seconds",
        "streamfer_end_to_end_seconds",
        "streamfer_consumer_lag",
        "streamfer_model_info",
        "streamfer_redis_errors_total",
        "streamfer_rebalances_total",
        "streamfer_late_events_total",
        "streamfer_replayed_events_total",
    }
)
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
METRIC_NAME = re.compile(r"streamfer_[a-z_]+")


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = _load_yaml(COMPOSE_FILE)
    return loaded


def _app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run our image: built from the repo, or using an image built here."""
    services: dict[str, dict[str, Any]] = compose["services"]
    built = {s["image"] for s in services.values() if "build" in s and "image" in s}
    return {name: s for name, s in services.items() if "build" in s or s.get("image") in built}


APP_SERVICES = sorted(_app_services(_compose()))


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def _mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(source, target) of each short-syntax volume entry."""
    for entry in service.get("volumes", []):
        source, target, *_ = entry.split(":")
        yield source, target


def _is_named_volume(source: str) -> bool:
    return not source.startswith((".", "/", "~"))


def _in_repo(path: str) -> str:
    """A path the image holds under /app/examples, as the same file in this checkout."""
    if path.startswith(IMAGE_EXAMPLES + "/"):
        return str(REPO / "examples" / posixpath.relpath(path, IMAGE_EXAMPLES))
    return path


def _parse(command: Any, args: list[str]) -> dict[str, Any]:
    """Parse `args` with the command's own parser; an unknown option, a missing required one
    or a value of the wrong type fails the test with the CLI's own message."""
    try:
        ctx = command.make_context(command.name, [_in_repo(a) for a in args])
    except Exception as exc:  # the CLI's usage errors: unknown option, bad value, ...
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        pytest.fail(f"`streamfer {command.name} {shlex.join(args)}`: {message}")
    params: dict[str, Any] = ctx.params
    return params


def _param_name(command: Any, flag: str) -> str:
    for param in command.params:
        if flag in (*param.opts, *getattr(param, "secondary_opts", ())):
            return str(param.name)
    raise AssertionError(f"`streamfer {command.name}` has no option {flag}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _compose()


@pytest.fixture(scope="module")
def cli() -> Any:
    """The click command tree of the real `streamfer` command (streams/cli.py).

    Typed `Any`: Typer builds it on its own vendored copy of click, not on `click`.
    """
    from streams.cli.app import app

    root = typer.main.get_command(app)
    assert isinstance(getattr(root, "commands", None), dict), "streamfer must have subcommands"
    return root


def _subcommand(cli: Any, args: list[str]) -> tuple[Any, list[str]]:
    assert args, "a service of our image must name a streamfer command"
    name, *rest = args
    sub = cli.commands.get(name)
    assert sub is not None, f"streamfer has no command {name!r}; it has {sorted(cli.commands)}"
    return sub, rest


# --- the compose file itself -------------------------------------------------------------


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(compose),
        key=lambda e: list(map(str, e.absolute_path)),
    )
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def test_the_vendored_schema_rejects_a_broken_file(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["depends_on"]["kafka"]["condition"] = "service_ready"
    broken["services"]["redis"]["replica_count"] = 3
    validator = jsonschema.Draft7Validator(json.loads(COMPOSE_SCHEMA.read_text()))
    failing = {e.absolute_path[1] for e in validator.iter_errors(broken)}
    assert failing == {"worker", "redis"}


def test_compose_file_has_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


def test_workers_scale_without_clashing(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker, "a fixed name allows one replica only"
    assert "ports" not in worker, "a host port allows one replica only; Prometheus scrapes inside"


def test_worker_replicas_get_distinct_instance_ids(compose: dict[str, Any], cli: Any) -> None:
    """Each replica's instance id (part of its transactional id) must differ, or scaled
    exactly-once workers fence each other: the default, the container's own host name."""
    worker = compose["services"]["worker"]
    assert "hostname" not in worker, "one host name for every replica: one instance id"
    assert "STREAMFER_INSTANCE_ID" not in worker.get("environment", {})
    sub, rest = _subcommand(cli, _command(worker))
    assert _parse(sub, rest)[_param_name(sub, "--instance-id")] is None


def test_references_between_services_resolve(compose: dict[str, Any]) -> None:
    services = compose["services"]
    declared_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        depends = service.get("depends_on", {})
        for other in depends if isinstance(depends, list) else depends.keys():
            assert other in services, f"{name} depends on unknown service {other}"
        for source, _ in _mounts(service):
            if _is_named_volume(source):
                assert source in declared_volumes, f"{name} mounts undeclared volume {source}"
            else:
                assert (REPO / source).exists(), f"{name} bind-mounts missing {source}"


def test_image_runs_streamfer_as_a_non_root_user(compose: dict[str, Any]) -> None:
    dockerfile = DOCKERFILE.read_text().replace("\\\n", " ")
    final_stage = dockerfile.split("\nFROM ")[-1]
    instructions = [line.split(None, 1) for line in final_stage.splitlines() if line.strip()]
    last = {i[0]: i[1] for i in instructions if len(i) == 2 and i[0].isupper()}
    assert json.loads(last["ENTRYPOINT"]) == ["streamfer"]
    assert last["USER"] not in ("root", "0")
    assert last["WORKDIR"] == posixpath.dirname(IMAGE_EXAMPLES)
    assert any(
        i[0] == "COPY" and i[1].split()[-2:] == ["examples", "./examples"] for i in instructions
    ), "the image must hold the example specs the services name"
    for name in APP_SERVICES:
        assert "entrypoint" not in compose["services"][name], f"{name} bypasses `streamfer`"


# --- our containers run real streamfer commands ------------------------------------------


@pytest.mark.parametrize("name", APP_SERVICES)
def test_service_runs_a_real_streamfer_command(
    name: str, compose: dict[str, Any], cli: Any
) -> None:
    sub, rest = _subcommand(cli, _command(compose["services"][name]))
    _parse(sub, rest)


@pytest.mark.parametrize("name", APP_SERVICES)
def test_specs_named_by_services_are_in_the_image(name: str, compose: dict[str, Any]) -> None:
    args = _command(compose["services"][name])
    specs = [value for flag, value in itertools.pairwise(args) if flag in ("-s", "--spec")]
    assert specs, f"{name} names no spec"
    for spec in specs:
        assert spec.startswith(IMAGE_EXAMPLES + "/"), f"{spec} is not under {IMAGE_EXAMPLES}"
        in_repo = REPO / "examples" / posixpath.relpath(spec, IMAGE_EXAMPLES)
        assert in_repo.is_file(), f"{name} names {spec}, but {in_repo} does not exist"


def test_demo_model_lands_in_the_volume_the_workers_read(compose: dict[str, Any]) -> None:
    services = compose["services"]
    args = _command(services["init"])
    assert args[0] == "demo-model"
    spec_in_image = args[args.index("-s") + 1]
    spec = _load_yaml(REPO / "examples" / posixpath.relpath(spec_in_image, IMAGE_EXAMPLES))
    model = spec["model"]
    target = model.get("path") or model.get("registry")
    assert target, "the demo spec names neither model.path nor model.registry"
    # streams.spec resolves a relative model path against the spec's folder.
    model_in_image = posixpath.normpath(posixpath.join(posixpath.dirname(spec_in_image), target))

    def volume_holding_model(service: str) -> str | None:
        for source, mount in _mounts(services[service]):
            if _is_named_volume(source) and posixpath.commonpath([mount, model_in_image]) == mount:
                return source
        return None

    written = volume_holding_model("init")
    assert written, f"init writes {model_in_image} outside any named volume: the workers lose it"
    assert volume_holding_model("worker") == written


# --- Prometheus and Grafana agree with the workers ---------------------------------------


def test_prometheus_scrapes_every_worker_on_its_metrics_port(
    compose: dict[str, Any], cli: Any
) -> None:
    sub, rest = _subcommand(cli, _command(compose["services"]["worker"]))
    params = _parse(sub, rest)
    spec = _load_yaml(Path(params[_param_name(sub, "--spec")]))
    # Unset on the command line, the port is the spec's metrics.port (default 9108).
    port = params[_param_name(sub, "--metrics-port")] or spec.get("metrics", {}).get(
        "port", DEFAULT_METRICS_PORT
    )
    assert params[_param_name(sub, "--metrics-host")] == "0.0.0.0", (
        "the worker must listen beyond its own loopback for Prometheus to reach it"
    )
    config = _load_yaml(PROMETHEUS_CONFIG)
    discovered = [
        sd
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        if "worker" in sd["names"]
    ]
    assert discovered, "no scrape job discovers the `worker` service by DNS"
    for sd in discovered:
        assert sd.get("type", "SRV") == "A", "Compose DNS serves A records, not SRV"
        assert sd["port"] == port


def test_prometheus_config_is_the_one_mounted(compose: dict[str, Any]) -> None:
    mounts = dict(_mounts(compose["services"]["prometheus"]))
    assert mounts["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"


def _dashboard_queries(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition", "query") and isinstance(value, str):
                yield value
            else:
                yield from _dashboard_queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _dashboard_queries(item)


def _metric(name: str) -> str | None:
    """The worker metric a PromQL series name belongs to, or None."""
    if name in WORKER_METRICS:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in WORKER_METRICS:
            return name.removesuffix(suffix)
    return None


def test_grafana_dashboard_queries_only_worker_metrics() -> None:
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    queries = list(_dashboard_queries(dashboard))
    assert queries
    unknown = {n for q in queries for n in METRIC_NAME.findall(q) if _metric(n) is None}
    assert not unknown, f"the dashboard queries metrics no worker exports: {sorted(unknown)}"


def test_grafana_dashboard_answers_the_operator_questions() -> None:
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    used = {_metric(n) for q in _dashboard_queries(dashboard) for n in METRIC_NAME.findall(q)}
    wanted = {
        "streamfer_events_in_total",
        "streamfer_predictions_out_total",
        "streamfer_consumer_lag",
        "streamfer_end_to_end_seconds",
        "streamfer_batch_size",
        "streamfer_dead_letters_total",
        "streamfer_model_info",
    }
    assert wanted <= used, f"no panel shows {sorted(wanted - used)}"


def test_grafana_panels_use_the_provisioned_datasource() -> None:
    (datasource,) = _load_yaml(GRAFANA_DATASOURCE)["datasources"]
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]


def test_grafana_provisioning_matches_the_compose_mounts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    grafana = services["grafana"]
    mounts = dict(_mounts(grafana))
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards_dir = mounts["./deploy/grafana/dashboards"]
    (provider,) = _load_yaml(GRAFANA_PROVIDER)["providers"]
    assert provider["options"]["path"] == dashboards_dir
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == posixpath.join(dashboards_dir, GRAFANA_DASHBOARD.name)
    (datasource,) = _load_yaml(GRAFANA_DATASOURCE)["datasources"]
    url = urlparse(datasource["url"])
    assert url.hostname in services and url.port == 9090


# --- the learner: same pipeline and signing key as the workers, scraped by Prometheus ----


def _spec_of(service: dict[str, Any]) -> str:
    args = _command(service)
    return next(value for flag, value in itertools.pairwise(args) if flag in ("-s", "--spec"))


def test_learner_learns_the_pipeline_the_workers_score(compose: dict[str, Any], cli: Any) -> None:
    services = compose["services"]
    assert "learner" in services, "docker-compose.yml has no learner service"
    sub, _rest = _subcommand(cli, _command(services["learner"]))
    assert sub.name == "learn"
    spec = _spec_of(services["learner"])
    assert spec == _spec_of(services["worker"]), "learner and workers must run one spec"
    assert _spec_of(services["producer"]) == spec, "the producer must feed that pipeline"
    adaptation = _load_yaml(Path(_in_repo(spec))).get("adaptation", {})
    assert adaptation.get("mode", "off") != "off", f"{spec} has adaptation off"
    assert "--label-delay" in _command(services["producer"]), "no labels for the learner"
    assert "scale" not in services["learner"].get("deploy", {}), "one learner per pipeline"


def test_learner_and_workers_share_the_snapshot_key_from_the_environment(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    keys = {
        name: services[name].get("environment", {}).get("STREAMFER_SNAPSHOT_KEY")
        for name in ("learner", "worker")
    }
    assert keys["learner"] is not None, "the learner gets no STREAMFER_SNAPSHOT_KEY"
    assert keys["learner"] == keys["worker"], f"different keys: {keys}"
    # interpolated from the host's environment and required: never a literal in the file
    assert re.fullmatch(r"\$\{STREAMFER_SNAPSHOT_KEY:\?[^}]+\}", keys["learner"]), keys


def test_prometheus_scrapes_the_learner_on_its_web_port(compose: dict[str, Any], cli: Any) -> None:
    learner = compose["services"]["learner"]
    sub, rest = _subcommand(cli, _command(learner))
    params = _parse(sub, rest)
    assert params[_param_name(sub, "--web-host")] == "0.0.0.0", (
        "the learner must listen beyond its own loopback for Prometheus to reach it"
    )
    port = params[_param_name(sub, "--web-port")]
    assert str(port) in [str(p) for p in learner.get("expose", [])]
    config = _load_yaml(PROMETHEUS_CONFIG)
    targets = [
        (job.get("metrics_path", "/metrics"), target)
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    assert ("/metrics", f"learner:{port}") in targets, f"no job scrapes learner:{port}/metrics"
