"""The SASL_SSL listener's pieces that need no broker: its settings, password file, refusals."""

from __future__ import annotations

import stat
from pathlib import Path

from confluent_kafka import KafkaError

from streams.stack.config import StackConfig, render_server_properties
from streams.stack.kafka_security import KAFKA_USER, SecureKafka, format_args, kafka_password
from streams.worker.kafka_log import BrokerLink, BrokerRefused, refusal

SECRET = "s3cret-password-value"
CONFIG = {
    "bootstrap.servers": "127.0.0.1:19094",
    "security.protocol": "SASL_SSL",
    "sasl.username": "alice",
    "sasl.password": SECRET,
}


def _settings(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_secure_properties_add_one_sasl_ssl_listener_beside_plaintext(tmp_path: Path) -> None:
    config = StackConfig(kafka_port=29092, controller_port=29093, kafka_secure_port=29094)
    keystore = tmp_path / "server-keystore.pem"
    plain = _settings(render_server_properties(config, tmp_path / "data"))
    secure = _settings(render_server_properties(config, tmp_path / "data", keystore))
    assert plain["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert secure["listeners"] == plain["listeners"] + ",SASL_SSL://127.0.0.1:29094"
    assert secure["advertised.listeners"].endswith(",SASL_SSL://127.0.0.1:29094")
    assert secure["inter.broker.listener.name"] == "PLAINTEXT"
    assert secure["listener.name.sasl_ssl.ssl.keystore.location"] == str(keystore)
    assert secure["listener.name.sasl_ssl.ssl.keystore.type"] == "PEM"
    assert "listener.name.sasl_ssl.ssl.keystore.location" not in plain


def test_the_password_is_made_once_private_and_reused(tmp_path: Path) -> None:
    first = kafka_password(tmp_path)
    assert len(first) >= 24 and kafka_password(tmp_path) == first
    [path] = tmp_path.iterdir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [flag, value] = format_args(KAFKA_USER, first)
    assert flag == "--add-scram" and value == f"SCRAM-SHA-512=[name=streamfer,password={first}]"


def test_the_exports_are_shell_quoted_and_name_the_contracts_variables(tmp_path: Path) -> None:
    secure = SecureKafka("127.0.0.1:9094", "streamfer", "a b'c", tmp_path / "ca.pem")
    lines = secure.export_lines()
    assert [line.split("=", 1)[0] for line in lines] == [
        "export STREAMFER_SECURE_BOOTSTRAP",
        "export STREAMFER_SECURE_KAFKA_USER",
        "export STREAMFER_SECURE_KAFKA_PASSWORD",
        "export STREAMFER_SECURE_CA",
    ]
    assert "export STREAMFER_SECURE_KAFKA_PASSWORD='a b'\"'\"'c'" in lines


def test_a_failed_sasl_login_is_a_refusal_naming_user_and_servers_not_the_password() -> None:
    err = KafkaError(
        KafkaError._AUTHENTICATION,
        f"sasl_ssl://127.0.0.1:19094/bootstrap: SASL authentication error: invalid credentials "
        f"(password={SECRET}) (after 300ms in state AUTH_REQ)",
    )
    refused = refusal(err, CONFIG)
    assert isinstance(refused, BrokerRefused)
    text = str(refused)
    assert "authentication failed for user 'alice' on 127.0.0.1:19094" in text
    assert "STREAMFER_RDKAFKA_SASL_USERNAME/PASSWORD" in text
    assert SECRET not in text and "after 300ms" not in text


def test_only_a_failed_certificate_check_is_a_tls_refusal() -> None:
    verify = KafkaError(KafkaError._SSL, "SSL handshake failed: certificate verify failed")
    cut = KafkaError(KafkaError._SSL, "SSL handshake failed: Disconnected")
    assert "STREAMFER_RDKAFKA_SSL_CA_LOCATION" in str(refusal(verify, CONFIG))
    assert refusal(cut, CONFIG) is None
    assert refusal(KafkaError(KafkaError._TRANSPORT, "refused"), CONFIG) is None


def test_the_link_keeps_the_first_refusal_until_other_credentials_are_given() -> None:
    link = BrokerLink()
    config = link.client_config(CONFIG)
    config["error_cb"](KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error"))
    assert link.refusal is not None
    link.client_config(CONFIG)  # another client with the same settings: still refused
    assert link.refusal is not None
    link.client_config({**CONFIG, "sasl.password": "another-one"})
    assert link.refusal is None
