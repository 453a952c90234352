"""What a command says when Redis refuses it or does not answer: one line naming the cause
(no server, TLS, wrong password, a command the ACL user lacks) and the fix, with the URL's
password masked. `check_redis` asks once, before a command starts its real work."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from streams.cli.errors import UserError
from streams.security.redaction import redact, redact_url

if TYPE_CHECKING:
    from streams.spec import Connections


def _user(url: str) -> str:
    try:
        return unquote(urlsplit(url).username or "") or "default"
    except ValueError:
        return "default"


def _has_password(url: str) -> bool:
    try:
        return bool(urlsplit(url).password)
    except ValueError:
        return False


def redis_failure(url: str, exc: BaseException) -> str:
    """The message for a Redis error `exc` met at `url`; never holds the password."""
    import redis

    shown, user, why = redact_url(url), _user(url), redact(str(exc))
    if isinstance(exc, redis.AuthenticationError) or why.startswith(("WRONGPASS", "NOAUTH")):
        if not _has_password(url):
            return (
                f"authentication failed: Redis at {shown} requires a password ({why}). Put "
                "`<user>:<password>@` before the host in STREAMFER_REDIS_URL."
            )
        return (
            f"authentication failed: wrong password for user {user} at {shown} (or the user is "
            "disabled). Set the right password in STREAMFER_REDIS_URL."
        )
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return (
            f"Redis at {shown} refused a command to user {user} ({why}): that ACL user needs "
            "the commands and keys listed in docs/operations.md"
        )
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        if "SSL" in why or "certificate" in why.lower():
            return (
                f"the TLS handshake with Redis at {shown} failed ({why}): give the CA that "
                "signed the server's certificate as ?ssl_ca_certs=<ca.pem> in the rediss:// URL"
            )
        return (
            f"no Redis answered at {shown} ({why}). Start the local stack with `streamfer up`, "
            "or set STREAMFER_REDIS_URL (rediss://… for a TLS port)."
        )
    return f"Redis at {shown}: {why}"


def check_redis(connections: Connections) -> None:
    """Fail early, naming the cause and the fix, when Redis refuses us or does not answer."""
    import redis
    from redis.exceptions import RedisClusterException

    from features.redis_connect import connect

    url = connections.redis_url
    try:
        client = connect(url, socket_timeout=5)
    except ValueError as exc:  # a URL redis-py (or its cluster= argument) cannot parse
        raise UserError(
            f"the Redis URL {redact_url(url)} is not understood ({redact(str(exc))}): use "
            "redis://<user>:<password>@host:port/db, or rediss://… for TLS"
        ) from None
    except (redis.RedisError, RedisClusterException) as exc:  # a cluster connects at once
        raise UserError(redis_failure(url, exc)) from None
    try:
        client.ping()
    except (redis.RedisError, RedisClusterException) as exc:
        raise UserError(redis_failure(url, exc)) from None
    finally:
        client.close()
