"""The local Redis Cluster (`streamfer up --redis-cluster 3`, the `redis_cluster` fixture): it
serves every slot from 3 primaries, keeps the stack's ACL, and `connect` finds it by URL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from features.redis_connect import connect, is_cluster, with_cluster_mode
from tests.cluster_stack import CLUSTER_PRIMARIES, RedisClusterServices, free_cluster_base

SLOTS = 16384
# Two keys of two slots in one script call: allowed on one node by this flag (Redis >= 7).
# The keys go in ARGV: keys *declared* in one call must still share a slot (CROSSSLOT).
CROSS_SLOT = "#!lua flags=allow-cross-slot-keys\n"
TWO_KEYS = (
    "redis.call('SET', ARGV[1], ARGV[3]); redis.call('SET', ARGV[2], ARGV[4]);"
    " return {redis.call('GET', ARGV[1]), redis.call('GET', ARGV[2])}"
)


@pytest.fixture
def app(redis_cluster: RedisClusterServices) -> Iterator[Any]:
    client = connect(redis_cluster.url)
    yield client
    client.close()


def _owned_slots(node_url: str) -> set[int]:
    """The slots the node at `node_url` says it owns itself (CLUSTER SHARDS, its own view)."""
    client = redis.Redis.from_url(node_url)
    try:
        myself = client.execute_command("CLUSTER MYID").decode()
        slots: set[int] = set()
        for first, last, node in (
            (r[0], r[1], r[2]) for r in client.execute_command("CLUSTER SLOTS")
        ):
            if node[2].decode() == myself:
                slots.update(range(first, last + 1))
        return slots
    finally:
        client.close()


def test_three_primaries_own_all_slots_between_them(redis_cluster: RedisClusterServices) -> None:
    owned = [_owned_slots(url) for url in redis_cluster.node_admin_urls]
    assert len(owned) == CLUSTER_PRIMARIES
    assert all(owned), "a primary without slots"
    assert sum(len(slots) for slots in owned) == SLOTS  # no slot owned twice
    assert set().union(*owned) == set(range(SLOTS))
    for url in redis_cluster.node_admin_urls:
        client = redis.Redis.from_url(url)
        assert client.execute_command("ROLE")[0] == b"master"
        client.close()


def _keys_by_node(client: RedisCluster, prefix: str) -> tuple[str, str, str]:
    """Keys under `prefix`: two in different slots of one primary, a third on another."""
    first = f"sf:{prefix}:{{0}}"
    owner = client.get_node_from_key(first).name
    same = other = None
    for tag in range(1, 1000):
        key = f"sf:{prefix}:{{{tag}}}"
        on_owner = client.get_node_from_key(key).name == owner
        if same is None and on_owner and key_slot(key.encode()) != key_slot(first.encode()):
            same = key
        if other is None and not on_owner:
            other = key
        if same and other:
            return first, same, other
    raise AssertionError("1000 tags did not give two slots of one node and another node")


def test_the_streamfer_user_runs_a_cross_slot_script_on_one_node(app: Any, unique: str) -> None:
    assert is_cluster(app)
    first, second, elsewhere = _keys_by_node(app, unique)
    node = app.get_node_from_key(first)
    sha = app.script_load(CROSS_SLOT + TWO_KEYS)  # to every primary
    got = app.execute_command("EVALSHA", sha, 0, first, second, "a", "b", target_nodes=node)
    assert got == [b"a", b"b"]
    assert app.get(first) == b"a" and app.get(second) == b"b"  # each read from its slot
    # A flagged script without this flag is refused: the flag is what lets one call span
    # slots. (An unflagged, pre-7 script is not checked at all: no shebang is no promise.)
    plain = app.script_load("#!lua\n" + TWO_KEYS)
    with pytest.raises(redis.ResponseError, match="do not hash to the same slot"):
        app.execute_command("EVALSHA", plain, 0, first, second, "c", "d", target_nodes=node)
    # Nor may a call reach a slot another node serves, flag or not; and a script is not
    # rolled back: its writes before the refused key stay (group keys by node first).
    with pytest.raises(redis.ResponseError, match="non local key"):
        app.execute_command("EVALSHA", sha, 0, first, elsewhere, "e", "f", target_nodes=node)
    assert app.get(first) == b"e" and app.get(elsewhere) is None


def test_a_client_without_password_is_refused(redis_cluster: RedisClusterServices) -> None:
    from urllib.parse import urlsplit

    port = urlsplit(redis_cluster.url).port
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    cli = ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "CLUSTER", "SLOTS"]
    refused = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=10)
    assert "NOAUTH" in refused.stdout + refused.stderr
    # redis-py opens with HELLO, refused as well; `connect` says so rather than guessing.
    with pytest.raises(redis.AuthenticationError):
        connect(f"redis://127.0.0.1:{port}/0", socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        connect(f"redis://127.0.0.1:{port}/0?cluster=yes", socket_timeout=5)


def test_the_streamfer_user_may_not_leave_sf_keys(app: Any) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.set("other:key", 1)


def _streamfer(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "streams", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)


def test_up_redis_cluster_exports_a_cluster_url_and_down_stops_it(tmp_path: Path) -> None:
    from streams.stack.config import PORT_ENVS
    from tests.integration.test_stack import _free_ports

    base = free_cluster_base(CLUSTER_PRIMARIES)
    ports = dict(zip(PORT_ENVS.values(), map(str, _free_ports(len(PORT_ENVS))), strict=True))
    home = tmp_path / "home"
    env = {**os.environ, **ports, "STREAMFER_HOME": str(home)}
    env["STREAMFER_REDIS_CLUSTER_PORT"] = str(base)
    try:
        up = _streamfer(["up", "--redis-cluster", str(CLUSTER_PRIMARIES)], env)
        assert up.returncode == 0, up.stderr
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines()
        )
        again = _streamfer(["up", "--redis-cluster", str(CLUSTER_PRIMARIES)], env)
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stderr and again.stdout == up.stdout
        for name in ("STREAMFER_REDIS_URL", "STREAMFER_REDIS_ADMIN_URL"):
            client = connect(exports[name], socket_timeout=5)
            assert is_cluster(client) and client.ping()
            ports = sorted(node.port for node in client.get_primaries())
            assert ports == [base + i for i in range(CLUSTER_PRIMARIES)]
            client.close()
        status = _streamfer(["status"], env)
        assert status.returncode == 0 and "redis_cluster_pids=" in status.stdout
    finally:
        down = _streamfer(["down"], env)
    assert down.returncode == 0, down.stderr
    from streams.stack.redis_cluster import running_pids

    assert running_pids(home) == []
    assert _streamfer(["status"], env).returncode == 1


def test_up_with_replicas_gives_each_primary_a_synced_replica_and_says_so_in_the_url(
    tmp_path: Path,
) -> None:
    from streams.stack.config import PORT_ENVS
    from tests.integration.test_stack import _free_ports

    base = free_cluster_base(2 * CLUSTER_PRIMARIES)
    ports = dict(zip(PORT_ENVS.values(), map(str, _free_ports(len(PORT_ENVS))), strict=True))
    home = tmp_path / "home"
    env = {**os.environ, **ports, "STREAMFER_HOME": str(home)}
    env["STREAMFER_REDIS_CLUSTER_PORT"] = str(base)
    try:
        alone = _streamfer(["up", "--redis-replicas", "1"], env)
        assert alone.returncode == 2 and "--redis-replicas needs --redis-cluster" in alone.stderr
        up = _streamfer(
            ["up", "--redis-cluster", str(CLUSTER_PRIMARIES), "--redis-replicas", "1"], env
        )
        assert up.returncode == 0, up.stderr
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines()
        )
        assert exports["STREAMFER_REDIS_URL"].endswith("?replicas=1")
        client = connect(exports["STREAMFER_REDIS_ADMIN_URL"], socket_timeout=5)
        try:
            primaries = client.get_primaries()
            assert len(primaries) == CLUSTER_PRIMARIES
            for node in primaries:
                replication = client.info("replication", target_nodes=node)
                assert replication["connected_slaves"] == 1
                assert replication["slave0"]["state"] == "online"
        finally:
            client.close()
    finally:
        down = _streamfer(["down"], env)
    assert down.returncode == 0, down.stderr


def test_a_secure_cluster_serves_tls_clients_on_its_tls_ports(tmp_path: Path) -> None:
    from streams.security.tls import ensure_certificates
    from streams.stack.discovery import find_redis_cli, find_redis_server
    from streams.stack.redis_cluster import LocalRedisCluster

    base = free_cluster_base(CLUSTER_PRIMARIES)
    home = tmp_path / "home"
    cluster = LocalRedisCluster(home, base, CLUSTER_PRIMARIES, ensure_certificates(home / "tls"))
    try:
        urls = cluster.up(find_redis_server(), find_redis_cli(), time.monotonic() + 60.0)
        assert urls.secure_url is not None and urls.secure_url.startswith("rediss://")
        client = connect(urls.secure_url, socket_timeout=5)
        # The slot map a TLS client gets names the TLS ports: every hop stays encrypted.
        tls_ports = [base + CLUSTER_PRIMARIES + i for i in range(CLUSTER_PRIMARIES)]
        assert sorted(node.port for node in client.get_primaries()) == tls_ports
        client.set("sf:tls:{1}", "x")
        assert client.get("sf:tls:{1}") == b"x"
        client.close()
    finally:
        cluster.down()


def test_connect_tells_one_redis_from_a_cluster(
    redis_url: str, redis_cluster: RedisClusterServices, unique: str
) -> None:
    single, cluster = connect(redis_url), connect(redis_cluster.url)
    try:
        assert not is_cluster(single) and single.ping()
        assert is_cluster(cluster) and cluster.ping()
        # cluster=no on a cluster node: a plain client, which the other nodes' slots MOVE.
        plain = connect(with_cluster_mode(redis_cluster.url, "no"))
        keys = [f"sf:{unique}:{{{tag}}}" for tag in range(20)]
        elsewhere = [k for k in keys if cluster.get_node_from_key(k).port != plain_port(plain)]
        assert elsewhere
        with pytest.raises(redis.exceptions.MovedError):
            plain.get(elsewhere[0])
        plain.close()
    finally:
        single.close()
        cluster.close()


def plain_port(client: redis.Redis) -> int:
    return int(client.connection_pool.connection_kwargs["port"])


def test_a_cluster_brought_down_comes_back_on_its_nodes_conf_with_its_data(
    tmp_path: Path,
) -> None:
    from streams.stack.discovery import find_redis_cli, find_redis_server
    from streams.stack.redis_cluster import LocalRedisCluster

    cluster = LocalRedisCluster(
        tmp_path / "home", free_cluster_base(CLUSTER_PRIMARIES), CLUSTER_PRIMARIES
    )
    tools = (find_redis_server(), find_redis_cli())
    keys = [f"sf:restart:{{{tag}}}" for tag in range(30)]  # over every node
    try:
        urls = cluster.up(*tools, time.monotonic() + 60.0)
        client = connect(urls.url)
        for key in keys:
            client.set(key, key)
        client.close()
        cluster.down()  # SIGTERM: each node writes its AOF out before it exits
        assert cluster.pids() == [None] * CLUSTER_PRIMARIES
        assert cluster.up(*tools, time.monotonic() + 60.0) == urls
        client = connect(urls.url)
        assert [client.get(key) for key in keys] == [key.encode() for key in keys]
        client.close()
    finally:
        cluster.down()


def test_the_streamfer_user_follows_an_ask_redirect_while_a_slot_migrates(
    tmp_path: Path,
) -> None:
    from streams.stack.discovery import find_redis_cli, find_redis_server
    from streams.stack.redis_cluster import LocalRedisCluster

    base = free_cluster_base(CLUSTER_PRIMARIES)
    cluster = LocalRedisCluster(tmp_path / "home", base, CLUSTER_PRIMARIES)
    try:
        urls = cluster.up(find_redis_server(), find_redis_cli(), time.monotonic() + 60.0)
        app = connect(urls.url, socket_timeout=5)
        key = "sf:ask:{1}"
        slot, source = key_slot(key.encode()), app.get_node_from_key(key).port
        admins = {base + i: redis.Redis.from_url(u) for i, u in enumerate(urls.node_admin_urls)}
        target = next(port for port in admins if port != source)
        ids = {port: admin.execute_command("CLUSTER MYID") for port, admin in admins.items()}
        admins[target].execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[source])
        admins[source].execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[target])
        # The key is not on the source: it answers ASK, and the client goes on with ASKING.
        assert app.set(key, "moved") and app.get(key) == b"moved"
        assert admins[source].execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 0
        assert admins[target].execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 1
        app.close()
        for admin in admins.values():
            admin.close()
    finally:
        cluster.down()
