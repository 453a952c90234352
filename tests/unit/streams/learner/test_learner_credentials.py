"""The learner's faust clients get the STREAMFER_RDKAFKA_* security settings of the
librdkafka ones: what aiokafka is handed for each protocol, and refusals that name the fix."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streams.learner.errors import LearnerError
from streams.learner.faust_settings import faust_broker_credentials
from streams.spec import Connections


def aiokafka_auth(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """What aiokafka receives when these variables are set (through Connections.from_env)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    kafka = Connections.from_env().kafka
    return dict(credentials_to_aiokafka_auth(faust_broker_credentials(kafka)))


def test_plaintext_needs_no_credentials() -> None:
    assert faust_broker_credentials({}) is None
    assert faust_broker_credentials({"security.protocol": "plaintext"}) is None
    assert faust_broker_credentials({"session.timeout.ms": "6000"}) is None


def test_sasl_ssl_with_scram(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = aiokafka_auth(
        {
            "STREAMFER_RDKAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "STREAMFER_RDKAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "STREAMFER_RDKAFKA_SASL_USERNAME": "streamfer",
            "STREAMFER_RDKAFKA_SASL_PASSWORD": "s3cret",
        },
        monkeypatch,
    )
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("streamfer", "s3cret")
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED


def test_sasl_plaintext_plain_has_no_tls() -> None:
    credentials = faust_broker_credentials(
        {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "PLAIN",
            "sasl.username": "u",
            "sasl.password": "p",
        }
    )
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == "SASL_PLAINTEXT" and auth["ssl_context"] is None


def test_ssl_without_verification_as_librdkafka_says() -> None:
    credentials = faust_broker_credentials(
        {"security.protocol": "SSL", "enable.ssl.certificate.verification": "false"}
    )
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == "SSL"
    assert auth["ssl_context"].verify_mode == ssl.CERT_NONE
    assert not auth["ssl_context"].check_hostname


def test_missing_password_names_the_variable() -> None:
    with pytest.raises(LearnerError, match="STREAMFER_RDKAFKA_SASL_PASSWORD"):
        faust_broker_credentials(
            {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "u"}
        )


def test_unreadable_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LearnerError, match="SSL_CA_LOCATION"):
        faust_broker_credentials(
            {"security.protocol": "SSL", "ssl.ca.location": str(tmp_path / "missing.pem")}
        )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"}, "OAUTHBEARER"),
        ({"security.protocol": "SSL", "ssl.keystore.location": "/k.p12"}, "ssl.keystore"),
        ({"security.protocol": "TLS"}, "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
    ],
)
def test_settings_faust_cannot_honour_are_refused(settings: dict[str, str], message: str) -> None:
    with pytest.raises(LearnerError, match=message):
        faust_broker_credentials(settings)
