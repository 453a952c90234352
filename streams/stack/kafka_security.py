"""The local broker's SASL_SSL listener (`streamfer up --secure`): its SCRAM user and TLS.

One more listener in the same JVM, next to the PLAINTEXT one: SCRAM-SHA-512 over TLS, with
the throwaway CA and server certificate of `streams.security.tls`. The SCRAM user is made
with Kafka's own tools: `kafka-storage format --add-scram` when the storage is formatted,
and the Admin API (through the PLAINTEXT listener) for a storage formatted earlier without
it. Its password is generated once and kept under the stack's home (mode 0600), so every
restart serves the same credentials.
"""

from __future__ import annotations

import os
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streams.stack.config import LOCALHOST, StackError

SECURITY_PROTOCOL = "SASL_SSL"
SCRAM_MECHANISM = "SCRAM-SHA-512"
KAFKA_USER = "streamfer"
PASSWORD_FILE = "scram-streamfer.password"
# The minimum Kafka accepts, and the default of its own tools (kafka-configs, kafka-storage).
_SCRAM_ITERATIONS = 4096


@dataclass(frozen=True)
class SecureKafka:
    """Where the SASL_SSL listener is and how a client logs in to it."""

    bootstrap: str
    user: str
    password: str
    ca: Path

    def client_settings(self) -> dict[str, str]:
        """The librdkafka settings of a client of this listener."""
        return {
            "security.protocol": SECURITY_PROTOCOL,
            "sasl.mechanism": SCRAM_MECHANISM,
            "sasl.username": self.user,
            "sasl.password": self.password,
            "ssl.ca.location": str(self.ca),
        }

    def exports(self) -> dict[str, str]:
        """The STREAMFER_SECURE_* variables `streamfer up --secure` prints."""
        return {
            "STREAMFER_SECURE_BOOTSTRAP": self.bootstrap,
            "STREAMFER_SECURE_KAFKA_USER": self.user,
            "STREAMFER_SECURE_KAFKA_PASSWORD": self.password,
            "STREAMFER_SECURE_CA": str(self.ca),
        }

    def export_lines(self) -> list[str]:
        return [f"export {k}={shlex.quote(v)}" for k, v in self.exports().items()]


def secure_bootstrap(port: int) -> str:
    return f"{LOCALHOST}:{port}"


def kafka_password(folder: Path) -> str:
    """The SCRAM user's password, made once under `folder` (mode 0600) and reused after."""
    path = folder / PASSWORD_FILE
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        password = path.read_text().strip()
        if not password:
            raise StackError(
                f"{path} is empty: remove it and the Kafka data ({folder / 'data'}), then run "
                "`streamfer up --secure` again"
            ) from None
        return password
    password = secrets.token_urlsafe(24)  # [A-Za-z0-9_-]: safe in --add-scram's syntax
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


def format_args(user: str, password: str) -> list[str]:
    """`kafka-storage format` arguments that create the SCRAM user with the storage."""
    return ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={password}]"]


def ensure_scram_user(plaintext_bootstrap: str, user: str, password: str, timeout_s: float) -> None:
    """Create (or reset to `password`) the SCRAM user unless the broker already has it.

    A storage formatted without `--add-scram` (a stack first started without `--secure`)
    gets its user this way, through the PLAINTEXT listener, which has no authorizer.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    from streams.worker.kafka_log import quiet_admin

    admin = AdminClient(quiet_admin({"bootstrap.servers": plaintext_bootstrap}))
    try:
        described = admin.describe_user_scram_credentials([user], request_timeout=timeout_s)
        info = described[user].result(timeout=timeout_s)
        mechanisms = {c.mechanism for c in info.scram_credential_infos}
        if ScramMechanism.SCRAM_SHA_512 in mechanisms:
            return
    except KafkaException:
        pass  # RESOURCE_NOT_FOUND: no credentials for this user yet
    upsert = UserScramCredentialUpsertion(
        user,
        ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, _SCRAM_ITERATIONS),
        password.encode(),
    )
    try:
        admin.alter_user_scram_credentials([upsert], request_timeout=timeout_s)[user].result(
            timeout=timeout_s
        )
    except KafkaException as exc:
        raise StackError(
            f"could not create the Kafka SCRAM user {user!r}: {exc.args[0].str()}"
        ) from None


def wait_secure_listener(
    secure: SecureKafka, deadline: float, check_alive: Callable[[], None]
) -> None:
    """Wait until a client of the SASL_SSL listener logs in and reads metadata."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from streams.worker.kafka_log import BrokerLink

    link = BrokerLink()
    admin = AdminClient(
        link.client_config({"bootstrap.servers": secure.bootstrap, **secure.client_settings()})
    )
    last: str = "no answer yet"
    while True:
        check_alive()
        try:
            admin.list_topics(timeout=1.0)
            return
        except KafkaException as exc:
            last = exc.args[0].str()
        admin.poll(0)  # serves error_cb: a refused login is noted by the link
        if time.monotonic() >= deadline:
            # A refusal is waited out until then: new SCRAM credentials take a moment to apply.
            if link.refusal is not None:
                raise StackError(
                    f"the Kafka SASL_SSL listener refused the stack's user: {link.refusal}"
                )
            raise StackError(f"the Kafka SASL_SSL listener did not answer in time ({last})")
        time.sleep(0.2)
