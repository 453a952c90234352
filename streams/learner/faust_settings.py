"""The faust side's broker credentials, from the librdkafka settings (STREAMFER_RDKAFKA_*)
of `Connections.kafka`, so the app's aiokafka clients reach the same secured brokers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.learner.errors import LearnerError

# The librdkafka security settings (STREAMFER_RDKAFKA_*) that the faust side maps; any other
# sasl.*/ssl.* setting would be silently dropped there, so it is refused instead.
_FAUST_SECURITY = frozenset(
    {
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "sasl.kerberos.service.name",
        "ssl.ca.location",
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.key.password",
        "ssl.endpoint.identification.algorithm",
        "enable.ssl.certificate.verification",
    }
)


def faust_broker_credentials(kafka: Mapping[str, str]) -> Any:
    """The librdkafka security settings of `Connections.kafka` as faust credentials, so the
    app's own aiokafka clients (metrics table changelog, alerts) reach the same secured
    brokers as the librdkafka labels consumer. None for PLAINTEXT."""
    import ssl

    import faust

    unmapped = sorted(
        k
        for k in kafka
        if (k.startswith(("sasl.", "ssl.")) or k == "enable.ssl.certificate.verification")
        and k not in _FAUST_SECURITY
    )
    if unmapped:
        raise LearnerError(
            f"the learner's faust clients cannot use {unmapped} (from STREAMFER_RDKAFKA_*); "
            f"supported: {sorted(_FAUST_SECURITY)}"
        )
    protocol = kafka.get("security.protocol", "plaintext").upper()
    if protocol == "PLAINTEXT":
        return None
    if protocol not in ("SSL", "SASL_PLAINTEXT", "SASL_SSL"):
        raise LearnerError(
            f"security.protocol {protocol!r}: use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
        )
    context: ssl.SSLContext | None = None
    if protocol in ("SSL", "SASL_SSL"):
        try:
            context = ssl.create_default_context(cafile=kafka.get("ssl.ca.location"))
            if "ssl.certificate.location" in kafka:
                context.load_cert_chain(
                    kafka["ssl.certificate.location"],
                    keyfile=kafka.get("ssl.key.location"),
                    password=kafka.get("ssl.key.password"),
                )
        except (OSError, ssl.SSLError) as exc:
            raise LearnerError(
                f"TLS settings for the learner's faust clients: {exc} (check "
                "STREAMFER_RDKAFKA_SSL_CA_LOCATION, _SSL_CERTIFICATE_LOCATION, _SSL_KEY_LOCATION)"
            ) from None
        if kafka.get("ssl.endpoint.identification.algorithm", "https").lower() == "none":
            context.check_hostname = False
        if kafka.get("enable.ssl.certificate.verification", "true").lower() in ("false", "0"):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    mechanism = (kafka.get("sasl.mechanism") or kafka.get("sasl.mechanisms") or "GSSAPI").upper()
    if mechanism == "GSSAPI":
        return faust.GSSAPICredentials(
            kerberos_service_name=kafka.get("sasl.kerberos.service.name", "kafka"),
            ssl_context=context,
        )
    if mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        raise LearnerError(
            f"sasl.mechanism {mechanism!r}: the learner's faust clients support PLAIN, "
            "SCRAM-SHA-256, SCRAM-SHA-512 and GSSAPI"
        )
    missing = [k for k in ("sasl.username", "sasl.password") if not kafka.get(k)]
    if missing:
        names = [f"STREAMFER_RDKAFKA_{k.upper().replace('.', '_')}" for k in missing]
        raise LearnerError(f"sasl.mechanism {mechanism} needs {', '.join(names)}")
    return faust.SASLCredentials(
        username=kafka["sasl.username"],
        password=kafka["sasl.password"],
        mechanism=mechanism,
        ssl_context=context,
    )
