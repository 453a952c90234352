"""One redaction for every message, log record and exception text that can hold a secret.

Secrets reach streamfer through the environment only (Redis URLs with passwords, librdkafka
settings such as `sasl.password`, the snapshot and model keys). `Connections.from_env`
registers each one here; `redact` then hides every registered value wherever it appears,
plus any URL password and any `…password=…` / `…secret=…` setting it finds even when the
value was never registered (a URL typed on the command line). `RedactingFilter` applies it
to every log record, so a library that logs a URL or a config dict cannot leak either.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

MASK = "***"
# Values shorter than this are not registered: masking "a" everywhere would garble text,
# and a secret that short is no secret.
_MIN_SECRET_LEN = 4

# scheme://user:password@host → scheme://user:***@host (also scheme://:password@host)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s/]+)@")
# sasl.password=…, ssl.key.password: '…', "sasl_password": "…", STREAMFER_SNAPSHOT_KEY=…
_SETTING = re.compile(
    r"(?P<head>(?:[\w.-]*(?:password|secret|passwd|_key|\.key|token|credentials?))"
    r"['\"]?\s*[:=]\s*['\"]?)(?P<secret>[^\s'\",}]+)",
    re.IGNORECASE,
)

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value so `redact` hides it wherever it shows up."""
    if value and len(value) >= _MIN_SECRET_LEN:
        with _lock:
            _secrets.add(value)


def registered() -> frozenset[str]:
    with _lock:
        return frozenset(_secrets)


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """`text` with every known secret, URL password and secret-looking setting masked."""
    for secret in sorted({*registered(), *(e for e in extra if e)}, key=len, reverse=True):
        if len(secret) >= _MIN_SECRET_LEN:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _SETTING.sub(lambda m: f"{m['head']}{MASK}", text)


def redact_url(url: str) -> str:
    """A URL fit to print: its password (if any) masked."""
    return redact(url)


class RedactingFilter(logging.Filter):
    """Redacts each record's final message (arguments merged) and its exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            cleaned_exc = redact(text)
            if cleaned_exc != text:
                record.exc_info = None
                record.exc_text = cleaned_exc
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Attach `RedactingFilter` to every handler of `logger` (the root by default), so
    records from any library pass through it; idempotent."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
