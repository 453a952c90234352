"""Every Kafka client of streamfer on the local broker's SASL_SSL listener (SCRAM-SHA-512).

The credentials go in as a user gives them, through STREAMFER_RDKAFKA_*, to real processes:
`streamfer produce`, `run`, `lag`, `rebuild` and `learn` (the faust side included), and to the
dashboard's lag reader. With a wrong password (or no CA), each command stops within a bound,
with one line that names the cause and not the password, and consumes or produces nothing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from streams.ops.dashboard.collector import Collector, DashboardConfig
from streams.ops.lag import LagReader
from streams.spec import Connections, PipelineSpec
from streams.stack.kafka_security import SCRAM_MECHANISM, SECURITY_PROTOCOL, SecureKafka
from tests.integration.harness import make_spec, read_json, write_spec
from tests.integration.test_learner import (
    SNAPSHOT_KEY,
    ScoringLoop,
    consumed_to,
    end_offsets,
    produce_labels,
    setup_pipeline,
)

pytestmark = pytest.mark.integration

EVENTS = 300
WRONG_PASSWORD = "not-the-password-7f3a"
# A refused login must end a command quickly: no waiting out librdkafka's retries.
REFUSED_WITHIN_S = 30.0


@pytest.fixture(scope="module")
def secure(services: object) -> SecureKafka:
    """The SASL_SSL listener: as `streamfer up --secure` exported it, or the local stack's."""
    env = os.environ
    if env.get("STREAMFER_SECURE_BOOTSTRAP"):
        return SecureKafka(
            bootstrap=env["STREAMFER_SECURE_BOOTSTRAP"],
            user=env["STREAMFER_SECURE_KAFKA_USER"],
            password=env["STREAMFER_SECURE_KAFKA_PASSWORD"],
            ca=Path(env["STREAMFER_SECURE_CA"]),
        )
    from streams.stack.local import LocalStack, StackConfig

    found = LocalStack(replace(StackConfig.from_env(), secure=True)).secure_kafka()
    assert found is not None
    return found


def rdkafka_env(secure: SecureKafka, *, password: str | None = None, ca: bool = True) -> dict:
    """The variables a user sets for the secure listener."""
    env = {
        "STREAMFER_BOOTSTRAP": secure.bootstrap,
        "STREAMFER_RDKAFKA_SECURITY_PROTOCOL": SECURITY_PROTOCOL,
        "STREAMFER_RDKAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
        "STREAMFER_RDKAFKA_SASL_USERNAME": secure.user,
        "STREAMFER_RDKAFKA_SASL_PASSWORD": secure.password if password is None else password,
    }
    if ca:
        env["STREAMFER_RDKAFKA_SSL_CA_LOCATION"] = str(secure.ca)
    return env


def secure_conn(conn: Connections, secure: SecureKafka, **kw: object) -> Connections:
    return Connections(
        bootstrap=secure.bootstrap,
        redis_url=conn.redis_url,
        kafka={k: v for k, v in secure.client_settings().items()},
        **kw,
    )


def streamfer(
    args: list[str], conn: Connections, env: Mapping[str, str], timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m streams ARGS` with the test's Redis and `env` on top of a clean RDKAFKA_*."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFER_RDKAFKA_")}
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env={**base, "STREAMFER_REDIS_URL": conn.redis_url, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.fixture(scope="module")
def scored(
    tmp_path_factory: pytest.TempPathFactory,
    conn: Connections,
    secure: SecureKafka,
    model_file: Path,
) -> Iterator[tuple[PipelineSpec, Path]]:
    """A pipeline whose EVENTS events were produced and scored over the secure listener."""
    unique = f"sec{os.getpid()}"
    spec_file = write_spec(
        tmp_path_factory.mktemp("secure") / "spec.yaml", unique, {"path": str(model_file)}
    )
    spec = make_spec(unique, {"path": str(model_file)})
    env = rdkafka_env(secure)
    produced = streamfer(["produce", "-s", str(spec_file), "--synthetic", str(EVENTS)], conn, env)
    assert produced.returncode == 0, produced.stderr
    ran = streamfer(["run", "-s", str(spec_file), "--max-events", str(EVENTS), "--json"], conn, env)
    assert ran.returncode == 0, ran.stderr
    assert orjson.loads(ran.stdout)["predictions"] == EVENTS
    yield spec, spec_file


def test_the_worker_scores_every_event_on_the_secure_listener(
    scored: tuple[PipelineSpec, Path], conn: Connections, secure: SecureKafka
) -> None:
    spec, _ = scored
    predictions = read_json(secure_conn(conn, secure), spec.topics.predictions, expected=EVENTS)
    assert len({p["event_id"] for p in predictions}) == EVENTS


def test_lag_and_rebuild_read_the_secure_listener(
    scored: tuple[PipelineSpec, Path], conn: Connections, secure: SecureKafka
) -> None:
    spec, spec_file = scored
    env = rdkafka_env(secure)
    lag = streamfer(["lag", "-g", spec.group, "--json"], conn, env)
    assert lag.returncode == 0, lag.stderr
    [group] = orjson.loads(lag.stdout)["groups"]
    assert group["lag"] == 0
    assert sum(p["committed"] or 0 for p in group["partitions"]) == EVENTS
    rebuilt = streamfer(["rebuild", "-s", str(spec_file)], conn, env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"{EVENTS:,} events replayed" in rebuilt.stdout


def test_the_dashboards_lag_reads_the_secure_listener(
    scored: tuple[PipelineSpec, Path], conn: Connections, secure: SecureKafka
) -> None:
    spec, _ = scored
    report, error = dashboard_lag(secure_conn(conn, secure), spec.group)
    assert error is None
    assert report is not None
    [group] = report.groups
    assert group.group == spec.group and group.lag == 0


def test_the_dashboard_shows_a_refused_login_as_one_error_without_the_password(
    scored: tuple[PipelineSpec, Path], conn: Connections, secure: SecureKafka
) -> None:
    spec, _ = scored
    wrong = secure_conn(conn, secure).model_copy(
        update={"kafka": {**secure.client_settings(), "sasl.password": WRONG_PASSWORD}}
    )
    started = time.monotonic()
    report, error = dashboard_lag(wrong, spec.group)
    assert time.monotonic() - started <= REFUSED_WITHIN_S
    assert report is None and error is not None
    assert "authentication failed for user 'streamfer'" in error.lower(), error
    assert WRONG_PASSWORD not in error and secure.password not in error


def dashboard_lag(connections: Connections, group: str) -> tuple[object | None, str | None]:
    """One collector round (no metrics targets): its lag report, or the error it shows."""
    from aiohttp import ClientSession

    collector = Collector(DashboardConfig(targets=(), connections=connections, groups=(group,)))

    async def tick() -> None:
        async with ClientSession() as session:
            await collector.tick(session)

    asyncio.run(tick())
    return collector.lag, collector.lag_error


def test_the_learner_learns_from_the_secure_listener(
    tmp_path: Path, conn: Connections, secure: SecureKafka
) -> None:
    """faust's aiokafka clients (the metrics table's changelog) and the librdkafka labels
    consumer both log in with SCRAM over TLS with the stack's CA."""
    from streams.learner.process import LearnerProcess

    unique = f"seclearn{os.getpid()}"
    spec, spec_file, rows = setup_pipeline(tmp_path, unique, 300, 300, 100)
    sconn = secure_conn(conn, secure)
    ScoringLoop(spec, conn, alert=lambda a: None).score(rows)
    learner = LearnerProcess(
        spec_file,
        sconn,
        tmp_path,
        args=("--session-timeout", "6"),
        env={"STREAMFER_SNAPSHOT_KEY": SNAPSHOT_KEY, **rdkafka_env(secure)},
    )
    try:
        learner.wait(lambda s: True, 60, "the learner's web view")
        produce_labels(sconn, spec, rows)
        assert spec.topics.labels
        status = learner.wait(consumed_to(end_offsets(sconn, spec.topics.labels)), 60, "labels")
    finally:
        learner.stop()
    assert status["labels_seen"] == len(rows)


# -- refused: wrong password, no CA ----------------------------------------------------------
def offsets_now(conn: Connections, spec: PipelineSpec) -> tuple[dict, dict]:
    """Log ends of the pipeline's topics and the group's commits (read on PLAINTEXT)."""
    reader = LagReader(conn)
    topics = [spec.topics.events, spec.topics.predictions, spec.topics.dead_letter]
    ends = {t: reader.watermarks(t) for t in topics}
    return ends, reader.committed_offsets(spec.group, spec.topics.events)


@pytest.mark.parametrize(
    ("command", "password", "with_ca", "cause"),
    [
        ("run", WRONG_PASSWORD, True, "authentication failed for user 'streamfer'"),
        ("produce", WRONG_PASSWORD, True, "authentication failed for user 'streamfer'"),
        ("lag", WRONG_PASSWORD, True, "authentication failed for user 'streamfer'"),
        ("rebuild", WRONG_PASSWORD, True, "authentication failed for user 'streamfer'"),
        ("learn", WRONG_PASSWORD, True, "authentication failed for user 'streamfer'"),
        ("run", None, False, "STREAMFER_RDKAFKA_SSL_CA_LOCATION"),
        ("lag", None, False, "STREAMFER_RDKAFKA_SSL_CA_LOCATION"),
    ],
)
def test_refused_credentials_stop_the_command_with_one_line_and_touch_nothing(
    scored: tuple[PipelineSpec, Path],
    conn: Connections,
    secure: SecureKafka,
    command: str,
    password: str | None,
    with_ca: bool,
    cause: str,
) -> None:
    spec, spec_file = scored
    args = {
        "run": ["run", "-s", str(spec_file), "--max-events", "1"],
        "produce": ["produce", "-s", str(spec_file), "--synthetic", "50"],
        "lag": ["lag", "-g", spec.group],
        "rebuild": ["rebuild", "-s", str(spec_file), "--no-wipe"],
        "learn": ["learn", "-s", str(spec_file), "--web-port", "0"],
    }[command]
    before = offsets_now(conn, spec)
    env = rdkafka_env(secure, password=password, ca=with_ca)
    if command == "learn":
        env["STREAMFER_SNAPSHOT_KEY"] = SNAPSHOT_KEY
        args[2] = str(learn_spec(spec_file))
    started = time.monotonic()
    done = streamfer(args, conn, env, timeout_s=REFUSED_WITHIN_S + 30)
    took = time.monotonic() - started
    assert done.returncode != 0, done.stdout + done.stderr
    assert took <= REFUSED_WITHIN_S, took
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    [line] = errors
    # Nothing else about the broker: not a line per librdkafka retry, no "unreachable".
    others = [x for x in lines if x != line and ("kafka" in x.lower() or "broker" in x.lower())]
    assert not others, done.stderr
    assert cause in line.lower() if cause.islower() else cause in line, line
    assert secure.bootstrap in line
    assert secure.password not in done.stderr + done.stdout
    assert WRONG_PASSWORD not in done.stderr + done.stdout
    assert offsets_now(conn, spec) == before  # nothing produced, nothing committed


def learn_spec(spec_file: Path) -> Path:
    """The scored pipeline's spec with adaptation on, so `streamfer learn` accepts it."""
    import yaml

    raw = yaml.safe_load(spec_file.read_text())
    raw["topics"]["labels"] = raw["topics"]["events"] + "-labels"
    raw["adaptation"] = {"mode": "stack", "model": [{"linear_model.LogisticRegression": {}}]}
    out = spec_file.with_name("learn.yaml")
    out.write_text(yaml.safe_dump(raw))
    return out


def test_a_plain_stack_is_told_to_go_down_then_comes_back_secure_with_its_user(
    tmp_path: Path,
) -> None:
    """`up --secure` on a running plain broker says what to do; after `down`, the storage
    formatted without SCRAM users gets its user through the Admin API, and it logs in."""
    from confluent_kafka.admin import AdminClient

    from streams.stack.local import LocalStack, StackConfig, StackError
    from tests.integration.test_stack import _free_ports

    kafka, controller, redis_port, redis_tls, secure_port = _free_ports(5)
    config = StackConfig(
        home=tmp_path / "home",
        kafka_port=kafka,
        controller_port=controller,
        redis_port=redis_port,
        redis_tls_port=redis_tls,
        kafka_secure_port=secure_port,
    )
    plain, secure = LocalStack(config), LocalStack(replace(config, secure=True))
    try:
        plain.up()
        with pytest.raises(StackError, match="streamfer down` first, then `streamfer up --secure"):
            secure.up()
        plain.down()
        secure.up()
        found = secure.secure_kafka()
        assert found is not None and found.bootstrap == f"127.0.0.1:{secure_port}"
        admin = AdminClient({"bootstrap.servers": found.bootstrap, **found.client_settings()})
        assert admin.list_topics(timeout=10).topics is not None
        assert plain.up().running  # a plain `up` keeps the secure broker: it serves both
        assert secure.secure_kafka() == found  # the password kept under the home, reused
    finally:
        secure.down()
