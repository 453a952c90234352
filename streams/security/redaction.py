"""One redaction for every message, log record and exception text that can hold a secret.

Secrets reach streamfer through the environment only (Redis URLs with passwords, librdkafka
settings such as `sasl.password`, the snapshot and model keys). `Connections` registers each
one here; `redact` then hides every registered value wherever it appears, plus any URL
password and any `…password=…` / `'sasl.password': '…'` setting it finds even when the value
was never registered (a URL typed on the command line). Registering a secret also makes every
log record of the process pass through `redact` (a log record factory, which survives a
library replacing the root handlers, as faust's worker does); `RedactingFilter` does the same
for handlers, and `install_exception_redaction` for tracebacks nobody caught.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterable
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

MASK = "***"
# Values shorter than this are not registered: masking "a" everywhere would garble text,
# and a secret that short is no secret.
_MIN_SECRET_LEN = 4

# scheme://user:password@host → scheme://user:***@host (also scheme://:password@host). The
# password runs to the last '@' before the host, so one holding an '@' is masked whole.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^\s/]+)@")

# Names that hold a secret: librdkafka's (sasl.password, ssl.key.password, ssl.keystore.password,
# sasl.oauthbearer.client.secret, ssl.key.pem), aiokafka's (sasl_plain_password), ours
# (STREAMFER_SNAPSHOT_KEY, snapshot_key, model_key). A bare `key` is no secret (`event.key`
# names a field), nor is a file location or an endpoint URL.
_SECRET_WORDS = r"password|passwd|secret|token|credentials?|(?:snapshot|model|private|api)[_.-]?key"
# For names of variables and librdkafka settings (not free text): also `…_KEY` variables and
# sasl.oauthbearer.config, whose free-form value may carry a token.
_SECRET_NAME = re.compile(
    rf"(?:{_SECRET_WORDS}|ssl[_.]key[_.]pem|oauthbearer[_.]config|(?:^|[_.])key$)", re.IGNORECASE
)
_NOT_SECRET_NAME = re.compile(r"[_.](?:location|url|endpoint|file|path)$", re.IGNORECASE)

# sasl.password=…, 'ssl.key.password': '…', "sasl_password": "…", STREAMFER_SNAPSHOT_KEY=…
_SETTING = re.compile(
    rf"(?P<head>(?<![\w.-])[\w.-]*(?:{_SECRET_WORDS}|ssl[_.]key[_.]pem)(?![\w.-])"
    r"['\"]?\s*[:=]\s*)"
    # A value already masked (pydantic's SecretStr('**********')) is left as it is.
    r"(?!SecretStr\(|\*)(?P<secret>'[^']*'|\"[^\"]*\"|[^\s'\",;&()\]}>]+)",
    re.IGNORECASE,
)

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # longest first, so a secret inside another is masked whole


def is_secret_setting(name: str) -> bool:
    """Whether a setting or variable named `name` holds a secret (`sasl.password`,
    `ssl.key.password`, `sasl.oauthbearer.client.secret`, `STREAMFER_MODEL_KEY`; not
    `ssl.key.location`)."""
    return bool(_SECRET_NAME.search(name)) and not _NOT_SECRET_NAME.search(name)


def register_secret(value: str | None) -> None:
    """Remember a secret value so `redact` hides it wherever it shows up; from then on every
    log record of this process is redacted too."""
    global _secrets
    if not value or len(value) < _MIN_SECRET_LEN:
        return
    with _lock:
        if value not in _secrets:
            _secrets = tuple(sorted({*_secrets, value}, key=len, reverse=True))
    _install_record_factory()


def register_url_secrets(url: str | None) -> None:
    """Register the password of a URL (`redis://user:pw@host`), as written and decoded."""
    if not url:
        return
    try:
        password = urlsplit(url).password
    except ValueError:  # not a URL we can parse: the pattern in `redact` still applies
        return
    if password:
        register_secret(password)
        register_secret(unquote(password))


def registered() -> frozenset[str]:
    return frozenset(_secrets)


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """`text` with every known secret, URL password and secret-looking setting masked."""
    secrets = _secrets
    more = [e for e in extra if e and len(e) >= _MIN_SECRET_LEN]
    if more:
        secrets = tuple(sorted({*secrets, *more}, key=len, reverse=True))
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _SETTING.sub(_mask_setting, text)


def _mask_setting(match: re.Match[str]) -> str:
    value = match["secret"]
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match['head']}{quote}{MASK}{quote}"


def redact_url(url: str) -> str:
    """A URL fit to print: its password (if any) masked."""
    return redact(url)


def redacted_traceback(
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> str:
    """The traceback Python would print, redacted."""
    return redact("".join(traceback.format_exception(exc_type, exc, tb)))


# -- logging ---------------------------------------------------------------------------------
def _redact_record(record: logging.LogRecord) -> None:
    """Replace the record's message (arguments merged) and exception text with redacted ones."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: logging reports it when the record is emitted
        return
    cleaned = redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and record.exc_info[1] is not None:
        text = logging.Formatter().formatException(record.exc_info)
        cleaned_exc = redact(text)
        if cleaned_exc != text:
            # Formatters print `exc_text` when `exc_info` is gone: the redacted text is
            # all that is left of the exception.
            record.exc_info, record.exc_text = None, cleaned_exc
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class RedactingFilter(logging.Filter):
    """Redacts each record's final message (arguments merged) and its exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


_factory_installed = False


def _install_record_factory() -> None:
    """Every record made from now on is redacted where it is made: handlers a library adds
    or replaces later (faust's worker clears the root's) cannot miss it."""
    global _factory_installed
    with _lock:
        if _factory_installed:
            return
        _factory_installed = True
        previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact_record(record)
        return record

    logging.setLogRecordFactory(factory)


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Redact every log record: a record factory for the whole process, and
    `RedactingFilter` on every handler of `logger` (the root by default) for records made
    elsewhere (`logging.makeLogRecord`); idempotent."""
    _install_record_factory()
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


# -- uncaught exceptions ---------------------------------------------------------------------
def _print_redacted(
    exc_type: type[BaseException], exc: BaseException | None, tb: TracebackType | None
) -> None:
    sys.stderr.write(redacted_traceback(exc_type, exc, tb))
    sys.stderr.flush()


def _thread_hook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    sys.stderr.write(f"Exception in thread {name}:\n")
    _print_redacted(args.exc_type, args.exc_value, args.exc_traceback)


def install_exception_redaction() -> None:
    """Tracebacks nobody caught (main thread and other threads) print redacted."""
    sys.excepthook = _print_redacted
    threading.excepthook = _thread_hook


class RedactingStream:
    """A text stream that writes `redact(text)` to the stream `target()` returns at each
    write (looked up each time, so a swapped `sys.stderr` — pytest, CliRunner — is honoured)."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def write(self, text: str) -> int:
        self._target().write(redact(text))
        return len(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return bool(self._target().isatty())

    def fileno(self) -> int:
        return int(self._target().fileno())

    @property
    def encoding(self) -> str:
        return str(getattr(self._target(), "encoding", None) or "utf-8")
