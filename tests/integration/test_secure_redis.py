"""The test Redis as `streamfer up` runs it: passwords required, an ACL user with only the
commands streamfer sends, a TLS port; and what the commands say when Redis refuses them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import orjson
import pytest
import redis

from tests.integration.harness import (
    assert_features_exact,
    make_spec,
    prediction_counts,
    produce,
    read_json,
    recompute_features,
    synthetic,
    write_spec,
)

pytestmark = pytest.mark.integration

# What only an operator may do; each is refused to the streamfer user without running.
ADMIN_COMMANDS = [
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("SHUTDOWN",),
    ("CONFIG", "SET", "maxmemory", "1"),
    ("DEBUG", "SLEEP", "0"),
    ("KEYS", "*"),
    ("MODULE", "LOAD", "/tmp/x.so"),
    ("ACL", "SETUSER", "streamfer", "+@all"),
    ("SCRIPT", "FLUSH"),
    ("PFDEBUG", "GETREG", "sf:x"),
]
COMMANDS = ["run", "learn", "rebuild"]


@pytest.fixture(scope="session")
def secure_redis_url(services) -> str:
    """The TLS port's URL, as `streamfer up --secure` exports it."""
    url = services.secure_redis_url
    assert url.startswith("rediss://"), (
        "no STREAMFER_SECURE_REDIS_URL: start the stack with `streamfer up --secure`"
    )
    return url


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{quote(password, safe='')}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_client_without_a_password_is_refused(redis_url: str) -> None:
    with socket.create_connection(_address(redis_url), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        reply = sock.recv(200)
    assert reply.startswith(b"-NOAUTH"), reply


def test_the_streamfer_user_cannot_reconfigure_wipe_or_debug(
    client: redis.Redis, admin_client: redis.Redis
) -> None:
    assert client.get_connection_kwargs()["username"] == "streamfer"
    for command in (("CONFIG", "SET", "maxmemory-samples", "5"), ("DEBUG", "SLEEP", "0")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.flushall()
    with pytest.raises(redis.exceptions.NoPermissionError, match="keys"):
        client.set(f"outside-sf:{uuid.uuid4().hex}", b"v")  # its keys are sf:* only
    for command in ADMIN_COMMANDS:
        verdict = admin_client.execute_command("ACL", "DRYRUN", "streamfer", *command)
        assert verdict not in (b"OK", "OK"), command
    # The admin user has them (DEBUG included: the stack enables it for local clients).
    assert admin_client.execute_command("DEBUG", "SLEEP", "0") in (b"OK", "OK", True)


def test_streamfer_run_over_tls_scores_events_with_exact_features(
    conn, model_file, unique, tmp_path: Path, secure_redis_url: str, admin_client: redis.Redis
) -> None:
    model = {"path": str(model_file)}
    spec = make_spec(unique, model)
    spec_file = write_spec(tmp_path / "spec.yaml", unique, model)
    events = synthetic(3000, seed=12)
    assert produce(conn, spec, events) == len(events)

    run = subprocess.run(
        [
            *(sys.executable, "-m", "streams", "run", "-s", str(spec_file), "--json"),
            *("--max-events", str(len(events)), "--idle-exit", "60", "--metrics-port", "0"),
        ],
        env={
            **os.environ,
            "STREAMFER_BOOTSTRAP": conn.bootstrap,
            "STREAMFER_REDIS_URL": secure_redis_url,
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert orjson.loads(run.stdout.splitlines()[-1])["events"] == len(events)

    predictions = read_json(conn, spec.topics.predictions, expected=len(events))
    assert set(prediction_counts(predictions)) == {e["event_id"] for e in events}
    served = read_json(conn, spec.topics.features, expected=len(events))
    assert_features_exact(served, recompute_features(conn, spec), spec.features.names)
    # The state went where the TLS port leads: this server, under the pipeline's namespace.
    assert next(admin_client.scan_iter(f"sf:{spec.namespace}:*", count=1000), None) is not None


def _streamfer(command: str, spec_file: Path, redis_url: str, conn) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streams", command, "-s", str(spec_file)],
        env={**os.environ, "STREAMFER_BOOTSTRAP": conn.bootstrap, "STREAMFER_REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_a_wrong_password_is_named_and_never_printed(
    command: str, conn, model_file, unique, tmp_path: Path, redis_url: str
) -> None:
    spec_file = write_spec(tmp_path / "spec.yaml", unique, {"path": str(model_file)})
    marker = f"wrong-{uuid.uuid4().hex}"
    result = _streamfer(command, spec_file, _with_password(redis_url, marker), conn)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert "authentication failed: wrong password for user streamfer" in line
    host, port = _address(redis_url)
    assert f"redis://streamfer:***@{host}:{port}/0" in line
    assert marker not in output
    assert urlsplit(redis_url).password not in output


@pytest.mark.parametrize("command", COMMANDS)
def test_redis_down_says_no_redis_answered_without_the_password(
    command: str, conn, model_file, unique, tmp_path: Path
) -> None:
    spec_file = write_spec(tmp_path / "spec.yaml", unique, {"path": str(model_file)})
    marker = f"secret-{uuid.uuid4().hex}"
    port = _free_port()
    result = _streamfer(command, spec_file, f"redis://streamfer:{marker}@127.0.0.1:{port}/0", conn)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert f"no Redis answered at redis://streamfer:***@127.0.0.1:{port}/0" in line
    assert marker not in output
