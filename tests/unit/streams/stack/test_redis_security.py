"""The local Redis's credentials and ACL, without a server: what is written, and how."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.connection import parse_url

from streams.security.redaction import redact
from streams.stack.redis_security import (
    ADMIN_USER,
    APP_COMMANDS,
    APP_USER,
    SETINFO,
    RedisPasswords,
    RedisSecurityError,
    app_commands,
    ensure_passwords,
    redis_url,
    render_acl,
    write_acl,
)

# What no application user may do: reconfigure, wipe, stop, enumerate or extend the server.
ADMIN_ONLY = ("config", "flushall", "flushdb", "debug", "shutdown", "keys", "module", "acl")


def test_passwords_are_made_once_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "redis" / "passwords.json"
    first = ensure_passwords(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert first.streamfer != first.admin and min(map(len, (first.streamfer, first.admin))) >= 24
    assert ensure_passwords(path) == first  # a restart reuses them


def test_passwords_are_redacted_once_known(tmp_path: Path) -> None:
    passwords = ensure_passwords(tmp_path / "passwords.json")
    assert passwords.admin not in redact(f"token {passwords.admin} in a message")


def test_a_widened_passwords_file_is_made_private_again(tmp_path: Path) -> None:
    path = tmp_path / "passwords.json"
    ensure_passwords(path)
    path.chmod(0o644)
    ensure_passwords(path)
    assert path.stat().st_mode & 0o777 == 0o600


def test_an_unreadable_passwords_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "passwords.json"
    path.write_text("{not json")
    with pytest.raises(RedisSecurityError, match=rf"{path} is unreadable.*remove it"):
        ensure_passwords(path)


def test_the_acl_gives_streamfer_its_commands_only_and_holds_no_password(tmp_path: Path) -> None:
    passwords = ensure_passwords(tmp_path / "passwords.json")
    acl = tmp_path / "users.acl"
    write_acl(acl, passwords, APP_COMMANDS)
    text = acl.read_text()
    assert acl.stat().st_mode & 0o777 == 0o600
    assert passwords.streamfer not in text and passwords.admin not in text  # digests only
    users = {line.split()[1]: line.split()[2:] for line in text.splitlines()}
    assert set(users) == {"default", ADMIN_USER, APP_USER}
    assert users["default"][0] == "off"
    assert {"on", "~*", "+@all"} <= set(users[ADMIN_USER])
    rules = users[APP_USER]
    assert "~sf:*" in rules and "~*" not in rules
    assert rules.index("-@all") < min(rules.index(f"+{c}") for c in APP_COMMANDS)
    granted = {r[1:].split("|")[0] for r in rules if r.startswith("+")}
    assert not granted & set(ADMIN_ONLY)
    assert not any(r.startswith("+@") for r in rules)  # commands by name, no category


def test_client_setinfo_is_granted_only_where_the_server_knows_it() -> None:
    assert SETINFO not in app_commands((7, 0))
    assert SETINFO in app_commands((7, 2))
    passwords = RedisPasswords(streamfer="s" * 24, admin="a" * 24)
    assert SETINFO not in render_acl(passwords, app_commands((7, 0)))
    assert SETINFO in render_acl(passwords, app_commands((7, 2)))


def test_urls_parse_back_to_the_user_password_and_ca() -> None:
    password = "p@ss:w/rd?#"
    plain = parse_url(redis_url(APP_USER, password, "127.0.0.1", 6379))
    assert (plain["username"], plain["password"], plain["port"]) == ("streamfer", password, 6379)
    ca = Path("/tmp/some home/tls/ca.pem")
    tls = parse_url(redis_url(APP_USER, password, "127.0.0.1", 6380, ca=ca))
    assert tls["connection_class"].__name__ == "SSLConnection"
    assert (tls["password"], tls["ssl_ca_certs"]) == (password, str(ca))
