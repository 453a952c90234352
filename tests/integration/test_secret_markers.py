"""Secrets never print: a distinct marker in every secret-bearing variable, then every error
path, every `--help`, the logs at INFO and every HTTP response we serve, searched for them.

Every command runs as `python -m streams …` (as a user runs it), its stdout and stderr
collected. The paths: Redis down, a wrong Redis password, an unreachable broker, bad SASL
credentials, a bad spec; `--help` of every command; a running worker's `/metrics`, the
learner's `/metrics` and `/adaptation/`, and the dashboard's `/api/state` and `/` (one of
its targets carrying basic-auth credentials). The stack's real Redis passwords count as
secrets too.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml

from streams.spec import parse_spec
from streams.workloads.replay import hyperplane_drift_rows, train_prefix_model
from tests.conftest import Services
from tests.integration.harness import wait_for
from tests.integration.test_learner import adaptation_spec

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]
# How long one failing command may take: the broker checks give up after 10 s.
CLI_TIMEOUT_S = 60


def free_port() -> int:
    """A port nothing listens on now (so also a closed port for the 'down' paths)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_password(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


@dataclass(frozen=True)
class Secrets:
    """The markers, by variable, and the stack's own passwords (secrets as well)."""

    markers: dict[str, str]
    real: tuple[str, ...]

    def all(self) -> dict[str, str]:
        return {**self.markers, **{f"stack password {i}": s for i, s in enumerate(self.real)}}


@pytest.fixture(scope="module")
def secrets(services: Services) -> Secrets:
    token = uuid.uuid4().hex
    names = ("redis-pw", "redis-wrong-pw", "admin-pw", "sasl-pw", "snapshot-key", "model-key")
    markers = {name: f"MARKER-{name}-{token}" for name in names}
    markers["basic-auth"] = f"MARKER-basic-auth-{token}"
    markers["oauth-secret"] = f"MARKER-oauth-secret-{token}"
    markers["ssl-key-pw"] = f"MARKER-ssl-key-pw-{token}"
    real = [urlsplit(services.redis_url).password]
    real.append(urlsplit(os.environ.get("STREAMFER_REDIS_ADMIN_URL", "")).password)
    real.append(urlsplit(os.environ.get("STREAMFER_SECURE_REDIS_URL", "")).password)
    real.append(os.environ.get("STREAMFER_SECURE_KAFKA_PASSWORD"))
    return Secrets(markers, tuple(s for s in real if s))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("secret-markers")


@pytest.fixture(scope="module")
def spec_file(workdir: Path) -> Path:
    """An adaptive pipeline (the snapshot key is read) with a small trained model."""
    unique = uuid.uuid4().hex[:10]
    raw = adaptation_spec(unique, workdir / "model.onnx", partitions=1)
    raw["metrics"] = {"port": 0}
    path = workdir / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    spec = parse_spec(raw)
    train_prefix_model(hyperplane_drift_rows(400, 200, spec=spec), spec, fraction=0.5)
    return path


@pytest.fixture(scope="module")
def bad_spec(workdir: Path, spec_file: Path) -> Path:
    raw = yaml.safe_load(spec_file.read_text())
    raw["batching"] = {"max_sise": 10}
    path = workdir / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def environment(services: Services, secrets: Secrets, **overrides: str) -> dict[str, str]:
    """The test's environment: every secret-bearing variable holds its marker."""
    m = secrets.markers
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFER_RDKAFKA_")}
    env.update(
        {
            "STREAMFER_BOOTSTRAP": services.bootstrap,
            "STREAMFER_REDIS_URL": services.redis_url,
            "STREAMFER_REDIS_ADMIN_URL": f"redis://admin:{m['admin-pw']}@127.0.0.1:1/0",
            "STREAMFER_SNAPSHOT_KEY": m["snapshot-key"],
            "STREAMFER_MODEL_KEY": m["model-key"],
            "STREAMFER_RDKAFKA_SASL_USERNAME": "streamfer-test",
            "STREAMFER_RDKAFKA_SASL_PASSWORD": m["sasl-pw"],
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


@dataclass
class Run:
    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path
    # None: any status; else it must be this one (0 for --help, non-zero for a failure).
    ok: bool | None = False
    returncode: int | None = None
    output: str = ""

    def __call__(self) -> Run:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "streams", *self.argv],
                env=dict(self.env),
                cwd=self.cwd,
                capture_output=True,
                timeout=CLI_TIMEOUT_S,
            )
            self.returncode = done.returncode
            self.output = (done.stdout + done.stderr).decode(errors="replace")
        except subprocess.TimeoutExpired as exc:
            self.output = f"TIMED OUT: {exc.stdout!r} {exc.stderr!r}"
        return self


def leaks(secrets: Secrets, outputs: Mapping[str, str]) -> list[str]:
    """Where a secret shows: '<path>: <variable> in …context…'."""
    found = []
    for where, text in outputs.items():
        for variable, secret in secrets.all().items():
            at = text.find(secret)
            if at >= 0:
                context = text[max(0, at - 120) : at + len(secret) + 40]
                found.append(f"{where}: {variable} in …{context}…")
    return found


def help_paths() -> list[tuple[str, ...]]:
    """Every command and subcommand of `streamfer`, walked from the click tree."""
    import typer.main

    from streams.cli.app import app

    paths: list[tuple[str, ...]] = []

    def walk(command: object, path: tuple[str, ...]) -> None:
        paths.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return paths


def cli_runs(
    services: Services, secrets: Secrets, spec_file: Path, bad_spec: Path, workdir: Path
) -> list[Run]:
    m = secrets.markers
    spec = ("-s", str(spec_file))
    closed = free_port()
    redis_down = f"redis://streamfer:{m['redis-pw']}@127.0.0.1:{closed}/0"
    wrong_pw = with_password(services.redis_url, "streamfer", m["redis-wrong-pw"])
    no_broker = f"127.0.0.1:{free_port()}"
    secure = os.environ.get("STREAMFER_SECURE_BOOTSTRAP")
    if secure:  # the SASL_SSL listener of `streamfer up --secure`, wrong password
        sasl = {
            "STREAMFER_BOOTSTRAP": secure,
            "STREAMFER_RDKAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "STREAMFER_RDKAFKA_SSL_CA_LOCATION": os.environ["STREAMFER_SECURE_CA"],
        }
    else:  # a SASL client against the plaintext listener: refused all the same
        sasl = {"STREAMFER_RDKAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    sasl["STREAMFER_RDKAFKA_SASL_MECHANISM"] = "SCRAM-SHA-512"

    def run(name: str, *argv: str, ok: bool | None = False, **env: str) -> Run:
        return Run(name, argv, environment(services, secrets, **env), workdir, ok)

    runs = [
        # Redis down
        run("redis down: run", "run", *spec, "-v", STREAMFER_REDIS_URL=redis_down),
        run("redis down: learn", "learn", *spec, "-v", STREAMFER_REDIS_URL=redis_down),
        run("redis down: rebuild", "rebuild", *spec, STREAMFER_REDIS_URL=redis_down),
        run(
            "redis down: demo",
            "demo",
            "-s",
            str(REPO / "examples/card-payments.yaml"),
            "--drift-events",
            "0",
            STREAMFER_REDIS_URL=redis_down,
        ),
        # the right Redis, a wrong password
        run("wrong redis password: run", "run", *spec, "-v", STREAMFER_REDIS_URL=wrong_pw),
        run("wrong redis password: learn", "learn", *spec, "-v", STREAMFER_REDIS_URL=wrong_pw),
        run("wrong redis password: rebuild", "rebuild", *spec, STREAMFER_REDIS_URL=wrong_pw),
        # no broker
        run("no broker: run", "run", *spec, "-v", STREAMFER_BOOTSTRAP=no_broker),
        run("no broker: lag", "lag", "--timeout", "2", STREAMFER_BOOTSTRAP=no_broker),
        run(
            "no broker: produce",
            "produce",
            *spec,
            "--synthetic",
            "5",
            STREAMFER_BOOTSTRAP=no_broker,
        ),
        run("no broker: report", "report", *spec, "--timeout", "2", STREAMFER_BOOTSTRAP=no_broker),
        run("no broker: rebuild", "rebuild", *spec, STREAMFER_BOOTSTRAP=no_broker),
        # more secret librdkafka settings, in a failing tool
        run(
            "no broker: lag with more secret settings",
            "lag",
            "--timeout",
            "2",
            STREAMFER_BOOTSTRAP=no_broker,
            STREAMFER_RDKAFKA_SASL_OAUTHBEARER_CLIENT_SECRET=m["oauth-secret"],
            STREAMFER_RDKAFKA_SSL_KEY_PASSWORD=m["ssl-key-pw"],
        ),
        # bad SASL credentials
        run("bad sasl: lag", "lag", "--timeout", "3", **sasl),
        run("bad sasl: produce", "produce", *spec, "--synthetic", "5", **sasl),
        run("bad sasl: run", "run", *spec, "-v", **sasl),
        run("bad sasl: report", "report", *spec, "--timeout", "3", **sasl),
        run("bad sasl: learn", "learn", *spec, "-v", **sasl),
        # a bad spec
        run("bad spec: run", "run", "-s", str(bad_spec), "-v"),
        run("bad spec: learn", "learn", "-s", str(bad_spec), "-v"),
    ]
    tls_redis = os.environ.get("STREAMFER_SECURE_REDIS_URL")
    if tls_redis:  # `streamfer up --secure`: the wrong password over rediss:// too
        wrong_tls = with_password(tls_redis, "streamfer", m["redis-wrong-pw"])
        runs.append(run("wrong rediss password: run", "run", *spec, STREAMFER_REDIS_URL=wrong_tls))
    runs += [run(f"help: {' '.join(p)}", *p, "--help", ok=True) for p in help_paths()]
    return runs


def test_no_error_path_or_help_prints_a_secret(
    services: Services, secrets: Secrets, spec_file: Path, bad_spec: Path, workdir: Path
) -> None:
    runs = cli_runs(services, secrets, spec_file, bad_spec, workdir)
    with ThreadPoolExecutor(max_workers=6) as pool:
        done = list(pool.map(lambda r: r(), runs))
    wrong = [
        f"{r.name}: exit {r.returncode}\n{r.output[-2000:]}"
        for r in done
        if r.returncode is None or (r.ok is not None and (r.returncode == 0) != r.ok)
    ]
    assert not wrong, "a path did not end as expected:\n" + "\n".join(wrong)
    by_name = {r.name: r.output for r in done}
    assert not leaks(secrets, by_name), "\n".join(leaks(secrets, by_name))
    # The paths were reached: the URLs are named, masked.
    assert "redis://streamfer:***@127.0.0.1" in by_name["redis down: run"]
    assert "redis://streamfer:***@" in by_name["wrong redis password: run"]


# -- the running services --------------------------------------------------------------------
def get(url: str, timeout_s: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return response.read().decode(errors="replace")


def answers(url: str) -> bool:
    try:
        get(url, 2.0)
    except OSError:
        return False
    return True


@dataclass
class Service:
    """A `streamfer` command running in the background, its output in a file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.log.read_text(errors="replace")


def start(name: str, argv: Sequence[str], env: Mapping[str, str], workdir: Path) -> Service:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams", *argv],
            env=dict(env),
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Service(name, proc, log)


@pytest.fixture
def running(
    services: Services, secrets: Secrets, spec_file: Path, workdir: Path
) -> Iterator[dict[str, Service | int]]:
    env = environment(services, secrets)
    worker_port, learner_port, dashboard_port = free_port(), free_port(), free_port()
    started: dict[str, Service] = {}
    try:
        started["worker"] = start(
            "worker",
            ["run", "-s", str(spec_file), "-v", "--metrics-port", str(worker_port)],
            env,
            workdir,
        )
        started["learner"] = start(
            "learner",
            ["learn", "-s", str(spec_file), "-v", "--web-port", str(learner_port)],
            env,
            workdir,
        )
        basic = f"http://scraper:{secrets.markers['basic-auth']}@127.0.0.1:{free_port()}/metrics"
        targets = ",".join(
            [
                f"http://127.0.0.1:{worker_port}/metrics",
                f"http://127.0.0.1:{learner_port}/metrics",
                basic,
            ]
        )
        started["dashboard"] = start(
            "dashboard",
            [
                *("dashboard", "-s", str(spec_file), "--port", str(dashboard_port)),
                *("--targets", targets, "--interval", "0.5"),
            ],
            env,
            workdir,
        )
        yield {
            **started,
            "worker_port": worker_port,
            "learner_port": learner_port,
            "dashboard_port": dashboard_port,
        }
    finally:
        for service in started.values():
            service.stop()


def test_no_log_metrics_or_dashboard_response_holds_a_secret(
    running: dict[str, Service | int], secrets: Secrets
) -> None:
    worker = f"http://127.0.0.1:{running['worker_port']}"
    learner = f"http://127.0.0.1:{running['learner_port']}"
    dashboard = f"http://127.0.0.1:{running['dashboard_port']}"

    def alive() -> None:
        for name in ("worker", "learner", "dashboard"):
            service = running[name]
            assert isinstance(service, Service)
            assert service.proc.poll() is None, f"{name} exited:\n{service.log.read_text()}"

    def up(url: str) -> bool:
        alive()
        return answers(url)

    wait_for(lambda: up(f"{worker}/metrics"), 60, "the worker's /metrics")
    wait_for(lambda: up(f"{learner}/adaptation/"), 60, "the learner's web views")
    wait_for(lambda: up(f"{dashboard}/api/state"), 30, "the dashboard")

    def scraped() -> bool:
        import orjson

        state = orjson.loads(get(f"{dashboard}/api/state"))
        by_up = [t["up"] for t in state["targets"]]
        return by_up.count(True) == 2 and all(t["error"] for t in state["targets"] if not t["up"])

    wait_for(scraped, 30, "the dashboard scraping both services and failing the third")
    responses = {
        "worker /metrics": get(f"{worker}/metrics"),
        "learner /metrics": get(f"{learner}/metrics"),
        "learner /adaptation/": get(f"{learner}/adaptation/"),
        "dashboard /api/state": get(f"{dashboard}/api/state"),
        "dashboard /": get(f"{dashboard}/"),
    }
    logs = {}
    for name in ("dashboard", "learner", "worker"):
        service = running[name]
        assert isinstance(service, Service)
        logs[f"{name} log"] = service.stop()
    outputs = {**responses, **logs}
    assert not leaks(secrets, outputs), "\n".join(leaks(secrets, outputs))
    assert "streamfer_" in responses["worker /metrics"]
    assert "scraper:***@" in responses["dashboard /api/state"]  # the target, shown masked
