"""A Redis user whose ACL lacks a command of the feature script: the store says so and the
caller stops, instead of every event being dead-lettered as "poison" (they are not at
fault). The refusal is Redis's own: a real ACL user without APPEND."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from features.redis_connect import connect
from features.redis_store import RedisFeatureStore
from features.store import FeatureBatch, StoreRefused
from streams.stack.redis_security import APP_COMMANDS
from tests.contract.test_feature_store import SPEC

pytestmark = pytest.mark.integration


def test_a_command_the_acl_refuses_inside_the_script_stops_the_store(
    admin_client: Any, redis_admin_url: str, unique: str
) -> None:
    user, password = f"noappend-{unique}", secrets.token_hex(16)
    allowed = [c for c in APP_COMMANDS if c != "append"]
    admin_client.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{password}"],
        keys=["sf:*"],
        commands=["-@all", *(f"+{c}" for c in allowed)],
    )
    admin = urlsplit(redis_admin_url)
    url = urlunsplit(admin._replace(netloc=f"{user}:{password}@{admin.hostname}:{admin.port}"))
    client = connect(url)
    try:
        store = RedisFeatureStore(SPEC, client, unique)
        batch = FeatureBatch(
            [{"card": "c1", "amount": 1.0, "merchant": "m1"}],
            [1_795_000_000_000],
            [("events", 0, 0)],
        )
        with pytest.raises(StoreRefused, match="refused a command of the feature script"):
            store.update_and_read(batch)
        store.close()
    finally:
        client.close()
        admin_client.acl_deluser(user)
