"""The local redis-server's access control: passwords, ACL users and the TLS port.

Redis requires a password by default. Two ACL users are made once per stack home and kept
in `redis/passwords.json` (mode 0600): `streamfer`, allowed only the commands the workers,
the learner and the tools send and only keys under `sf:`, and `admin`, allowed everything
(tests, FLUSHALL, CONFIG). The `default` user is off, so a client that does not
authenticate is refused (NOAUTH). The ACL file redis-server reads holds SHA-256 digests of
the passwords, never the passwords, and no password is ever put on a command line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from streams.security.redaction import register_secret
from streams.security.tls import Certificates
from streams.stack.config import StackError

APP_USER = "streamfer"
ADMIN_USER = "admin"
# Every key streamfer writes starts with this: features, prediction log, snapshots.
KEY_PATTERN = "sf:*"

# What the streamfer user may send, by who sends it; anything else is refused (NOPERM),
# Lua included: ACLs also apply to the redis.call()s of a script.
APP_COMMANDS: tuple[str, ...] = (
    # redis-py's connection handshake and health checks
    "auth",
    "hello",
    "ping",
    "select",
    # features/features.lua (EVALSHA, one call per micro-batch) and its loading
    "evalsha",
    "script|load",
    "script|exists",
    "get",
    "set",
    "del",
    "pexpire",
    "append",
    "exists",  # on a cluster, a key probed before the script's writes
    "pfadd",
    "pfcount",
    "pfmerge",
    "wait",  # after each call, with ?replicas=N (features/shard_calls.py)
    # prediction log (streams/worker/prediction_log.py) and the learner's label join
    "hset",
    "mget",
    "persist",
    # signed snapshots (inference/adaptation/snapshots.py): a MULTI/EXEC publish
    "incrby",  # redis-py sends INCR as INCRBY
    "hmget",
    "expire",
    "multi",
    "exec",
    "discard",
    # `streamfer rebuild`: wipe one namespace's feature keys
    "scan",
    "unlink",
    # `bench` reports the server's version and CPU time (read-only; no keys, no config);
    # features/redis_connect.py asks `INFO cluster` whether a URL names a cluster
    "info",
    # redis-py's RedisCluster at start and on every topology refresh: CLUSTER SLOTS (the
    # slot map) and COMMAND (its key-position table), both read-only introspection; ASKING
    # before it follows an ASK redirect to a slot's new node while the slot migrates
    "cluster|slots",
    "command",
    "asking",
)


# redis-py sends CLIENT SETINFO on connect (and ignores a refusal); Redis knows it from 7.2,
# and an ACL naming a subcommand the server lacks would stop the server from starting.
SETINFO = "client|setinfo"
SETINFO_SINCE = (7, 2)


class RedisSecurityError(StackError):
    """The stack's Redis credentials could not be read or made; says which file and why."""


@dataclass(frozen=True)
class RedisPasswords:
    """The two ACL users' passwords of one stack home."""

    streamfer: str
    admin: str


def ensure_passwords(path: Path) -> RedisPasswords:
    """The passwords kept in `path`, generated on first use (mode 0600); registered with the
    redaction so no message or log line prints them."""
    passwords = _read(path) if path.exists() else _create(path)
    register_secret(passwords.streamfer)
    register_secret(passwords.admin)
    return passwords


def _create(path: Path) -> RedisPasswords:
    passwords = RedisPasswords(streamfer=secrets.token_urlsafe(24), admin=secrets.token_urlsafe(24))
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({APP_USER: passwords.streamfer, ADMIN_USER: passwords.admin})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Created 0600 (O_EXCL): never readable by others, not even for an instant; linked into
    # place whole, so a reader never sees a half-written file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.link(tmp, path)
    except FileExistsError:  # another `streamfer up` made it first: use theirs
        return _read(path)
    finally:
        tmp.unlink(missing_ok=True)
    return passwords


def _read(path: Path) -> RedisPasswords:
    try:
        raw = json.loads(path.read_text())
        passwords = RedisPasswords(streamfer=str(raw[APP_USER]), admin=str(raw[ADMIN_USER]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RedisSecurityError(
            f"the Redis passwords file {path} is unreadable ({type(exc).__name__}): remove it "
            "after `streamfer down`, and `streamfer up` makes new passwords"
        ) from None
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o600)  # someone widened it; the passwords stay private
    return passwords


def _digest(password: str) -> str:
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def server_version(redis_server: str) -> tuple[int, int]:
    """(major, minor) of a redis-server binary, from `redis-server --version`."""
    try:
        done = subprocess.run(
            [redis_server, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RedisSecurityError(f"`{redis_server} --version` failed: {exc}") from None
    match = re.search(r"v=(\d+)\.(\d+)", done.stdout)
    if match is None:
        raise RedisSecurityError(
            f"`{redis_server} --version` printed no version: {done.stdout.strip()[:200]!r}"
        )
    return int(match.group(1)), int(match.group(2))


def app_commands(version: tuple[int, int]) -> tuple[str, ...]:
    """The streamfer user's commands for a redis-server of this version."""
    return APP_COMMANDS + ((SETINFO,) if version >= SETINFO_SINCE else ())


def render_acl(passwords: RedisPasswords, commands: tuple[str, ...] = APP_COMMANDS) -> str:
    """The ACL file: `default` off, `admin` with all, `streamfer` with `commands` only.

    `default` is off with no password: no client can authenticate as it, and connections
    start unauthenticated. It still holds every permission, because redis-server replays
    its AOF as `default`, and Redis 7.0 (fixed upstream in redis/redis#14545) re-checks the
    ACL of each MULTI/EXEC there: with `-@all` every Lua script's writes (replicated as
    MULTI/EXEC) were dropped on a restart, silently: the whole feature state.
    """
    allowed = " ".join(f"+{command}" for command in commands)
    return (
        "user default off resetpass ~* &* +@all\n"
        f"user {ADMIN_USER} on {_digest(passwords.admin)} ~* &* +@all\n"
        f"user {APP_USER} on {_digest(passwords.streamfer)} resetchannels "
        f"~{KEY_PATTERN} -@all {allowed}\n"
    )


def write_acl(path: Path, passwords: RedisPasswords, commands: tuple[str, ...]) -> None:
    """Write the ACL file redis-server loads (`--aclfile`), private to this user."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(render_acl(passwords, commands))
    tmp.replace(path)


def tls_args(port: int, certs: Certificates) -> list[str]:
    """redis-server's TLS listener: the stack's certificate; clients need no certificate of
    their own (the ACL password is what authenticates them)."""
    return [
        "--tls-port",
        str(port),
        "--tls-cert-file",
        str(certs.cert),
        "--tls-key-file",
        str(certs.key),
        "--tls-ca-cert-file",
        str(certs.ca),
        "--tls-auth-clients",
        "no",
    ]


def redis_url(
    user: str, password: str, host: str, port: int, *, ca: Path | None = None, db: int = 0
) -> str:
    """`redis://user:password@host:port/db`, or `rediss://…?ssl_ca_certs=<ca>` with a CA:
    redis-py's `from_url` passes the query argument on to its TLS connection."""
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    if ca is None:
        return f"redis://{auth}{host}:{port}/{db}"
    return f"rediss://{auth}{host}:{port}/{db}?ssl_ca_certs={quote(str(ca), safe='/')}"
