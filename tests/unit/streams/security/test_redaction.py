"""`redact`: URL passwords, secret settings and registered values are masked, and nothing
else is touched; log records and uncaught tracebacks pass through it."""

from __future__ import annotations

import logging
import pickle
import sys
import uuid

import pytest

from streams.security.redaction import (
    MASK,
    RedactingFilter,
    RedactingStream,
    is_secret_setting,
    redact,
    redacted_traceback,
    register_secret,
    register_url_secrets,
)


def marker(what: str) -> str:
    return f"MARKER-{what}-{uuid.uuid4().hex}"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://streamfer:s3cr3t-pw@127.0.0.1:6379/0", "redis://streamfer:***@127.0.0.1:6379/0"),
        ("redis://:s3cr3t-pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://streamfer:s3cr3t-pw@10.0.0.1:6380/0", "rediss://streamfer:***@10.0.0.1:6380/0"),
        ("rediss://u:p@ss:w:rd@host:6380", "rediss://u:***@host:6380"),
        ("http://admin:s3cr3t-pw@host/metrics", "http://admin:***@host/metrics"),
    ],
)
def test_url_passwords_are_masked(url: str, shown: str) -> None:
    assert (
        redact(f"no Redis answered at {url} (refused)") == f"no Redis answered at {shown} (refused)"
    )


@pytest.mark.parametrize(
    "text",
    [
        "redis://127.0.0.1:6379/0",
        "redis://streamfer@127.0.0.1:6379/0",
        "http://127.0.0.1:9108/metrics",
        "kafka://127.0.0.1:9092",
        "spec.yaml has 1 problem(s):\n  event.key: is required: add it",
        "ssl.key.location=/tmp/tls/key.pem",
        "WRONGPASS invalid username-password pair or user is disabled.",
        "snapshot_key=SecretStr('**********')",
    ],
)
def test_text_without_secrets_is_unchanged(text: str) -> None:
    assert redact(text) == text


def test_settings_in_dict_reprs_env_lines_and_kwargs_are_masked() -> None:
    config = {
        "bootstrap.servers": "b:9092",
        "sasl.username": "worker",
        "sasl.password": "pw with, spaces",
        "ssl.key.password": "kp",
        "sasl.oauthbearer.client.secret": "cs",
    }
    shown = redact(repr(config))
    assert shown == (
        "{'bootstrap.servers': 'b:9092', 'sasl.username': 'worker', 'sasl.password': '***', "
        "'ssl.key.password': '***', 'sasl.oauthbearer.client.secret': '***'}"
    )
    assert redact('{"sasl.password": "x1"}') == '{"sasl.password": "***"}'
    assert redact("STREAMFER_SNAPSHOT_KEY=k1k1k1 next") == "STREAMFER_SNAPSHOT_KEY=*** next"
    assert redact("SASLCredentials(sasl_plain_password='pp')") == (
        "SASLCredentials(sasl_plain_password='***')"
    )


def test_registered_values_are_masked_anywhere_longest_first() -> None:
    short = marker("a")
    long = short + "-longer"
    register_secret(short)
    register_secret(long)
    assert redact(f"x{long}y {short}") == f"x{MASK}y {MASK}"
    register_secret("abc")  # too short to be a secret: never masked
    assert redact("abc") == "abc"


def test_a_url_password_is_registered_as_written_and_decoded() -> None:
    secret = marker("url") + "/+"
    register_url_secrets(f"redis://u:{secret.replace('/', '%2F').replace('+', '%2B')}@h:1/0")
    assert redact(f"the password is {secret}") == f"the password is {MASK}"


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("sasl.password", True),
        ("ssl.key.password", True),
        ("ssl.keystore.password", True),
        ("sasl.oauthbearer.client.secret", True),
        ("sasl.oauthbearer.config", True),
        ("ssl.key.pem", True),
        ("STREAMFER_SNAPSHOT_KEY", True),
        ("STREAMFER_MODEL_KEY", True),
        ("STREAMFER_SECURE_KAFKA_PASSWORD", True),
        ("sasl.username", False),
        ("ssl.key.location", False),
        ("STREAMFER_RDKAFKA_SSL_KEY_LOCATION", False),
        ("sasl.oauthbearer.token.endpoint.url", False),
        ("bootstrap.servers", False),
    ],
)
def test_which_setting_names_hold_secrets(name: str, secret: bool) -> None:
    assert is_secret_setting(name) is secret


def _record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("t", logging.ERROR, __file__, 1, msg, args, exc_info)


def test_a_log_record_with_arguments_is_redacted() -> None:
    secret = marker("arg")
    register_secret(secret)
    record = _record("connecting to %s with %r", "redis://u:pw12@h/0", {"sasl.password": "zz"})
    RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert text == "connecting to redis://u:***@h/0 with {'sasl.password': '***'}"
    record = _record("key %s", secret)
    RedactingFilter().filter(record)
    assert record.getMessage() == f"key {MASK}"


def test_a_log_record_with_an_exception_is_redacted() -> None:
    secret = marker("exc")
    register_secret(secret)
    try:
        raise RuntimeError(f"failed with {secret} at redis://:hidden-pw@h/0")
    except RuntimeError as exc:
        record = _record("it failed", exc=exc)
    RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert "RuntimeError: failed with *** at redis://:***@h/0" in text
    assert "Traceback" in text and secret not in text and "hidden-pw" not in text


def test_registering_a_secret_redacts_records_whatever_the_handlers() -> None:
    """Faust's worker replaces the root handlers: records are redacted where they are made."""
    secret = marker("factory")
    register_secret(secret)
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(self.format(record))

    logger = logging.getLogger(f"redaction-test-{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(Keep())
    logger.warning("value %s", secret)
    assert seen == [f"value {MASK}"]


def test_a_traceback_is_redacted() -> None:
    secret = marker("tb")
    register_secret(secret)
    try:
        raise ValueError(secret)
    except ValueError as exc:
        text = redacted_traceback(type(exc), exc, exc.__traceback__)
    assert text.startswith("Traceback") and f"ValueError: {MASK}" in text


def test_the_redacting_stream_writes_to_the_current_target(
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = marker("stream")
    register_secret(secret)
    stream = RedactingStream(lambda: sys.stderr)
    stream.write(f"leak? {secret}\n")
    assert capsys.readouterr().err == f"leak? {MASK}\n"


def test_connections_hide_their_secrets_and_register_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.spec import Connections

    redis_pw, sasl, snap, model, admin = (marker(w) for w in ("r", "s", "k", "m", "a"))
    monkeypatch.setenv("STREAMFER_REDIS_URL", f"redis://streamfer:{redis_pw}@h:1/0")
    monkeypatch.setenv("STREAMFER_RDKAFKA_SASL_PASSWORD", sasl)
    monkeypatch.setenv("STREAMFER_RDKAFKA_SASL_USERNAME", "worker")
    monkeypatch.setenv("STREAMFER_SNAPSHOT_KEY", snap)
    monkeypatch.setenv("STREAMFER_MODEL_KEY", model)
    monkeypatch.setenv("STREAMFER_REDIS_ADMIN_URL", f"redis://admin:{admin}@h:1/0")
    connections = Connections.from_env()
    for shown in (repr(connections), str(connections), f"{connections}"):
        for secret in (redis_pw, sasl, snap, model, admin):
            assert secret not in shown
        assert "redis://streamfer:***@h:1/0" in shown and "'sasl.username': 'worker'" in shown
    assert connections.kafka["sasl.password"] == sasl  # the clients still get the value
    for secret in (redis_pw, sasl, snap, model, admin):
        assert redact(f"<{secret}>") == f"<{MASK}>"


def test_connections_unpickled_in_a_worker_register_their_secrets() -> None:
    """A spawned worker process gets its Connections by pickle, not from the environment:
    the secrets are registered there too."""
    import subprocess

    from streams.spec import Connections

    secret = marker("pickled")
    payload = pickle.dumps(Connections(kafka={"sasl.password": secret}))
    child = (
        "import pickle, sys; from streams.security.redaction import redact; "
        "c = pickle.loads(sys.stdin.buffer.read()); "
        "print(redact('sasl ' + c.kafka['sasl.password']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", child], input=payload, capture_output=True, timeout=60, check=True
    )
    assert done.stdout.decode().strip() == f"sasl {MASK}"
