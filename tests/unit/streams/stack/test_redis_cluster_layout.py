"""Where `streamfer up --redis-cluster N` puts its nodes, and what it refuses, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.stack.config import REDIS_CLUSTER_PORT_ENV, StackConfig, StackError
from streams.stack.redis_cluster import (
    LocalRedisCluster,
    check_one_redis_kind,
    cluster_of_home,
    cluster_ports,
)
from streams.stack.redis_security import APP_COMMANDS, RedisPasswords, render_acl


@pytest.mark.parametrize(("base", "count"), [(7000, 3), (41400, 5)])
def test_ports_come_in_three_blocks_of_n_from_the_base(base: int, count: int) -> None:
    ports = cluster_ports(base, count)
    clients, tls, bus = (sorted(p[i] for p in ports) for i in range(3))
    assert clients == list(range(base, base + count))
    assert tls == list(range(base + count, base + 2 * count))
    assert bus == list(range(base + 2 * count, base + 3 * count))


def test_fewer_than_three_primaries_are_refused() -> None:
    with pytest.raises(StackError, match="at least 3 primaries, not 2"):
        cluster_ports(7000, 2)


def test_a_base_too_high_names_the_variable_and_the_highest_base() -> None:
    with pytest.raises(StackError, match=f"{REDIS_CLUSTER_PORT_ENV}=65530 .* at most 65527"):
        cluster_ports(65530, 3)


def test_the_base_port_is_read_from_the_environment() -> None:
    config = StackConfig.from_env({REDIS_CLUSTER_PORT_ENV: "41400"})
    assert config.redis_cluster_port == 41400
    with pytest.raises(StackError, match=REDIS_CLUSTER_PORT_ENV):
        StackConfig.from_env({REDIS_CLUSTER_PORT_ENV: "seven"})


def test_each_node_has_its_own_folder_and_shares_the_homes_credentials(tmp_path: Path) -> None:
    cluster = LocalRedisCluster(tmp_path, 41400, 3)
    folders = {node.folder for node in cluster.nodes}
    assert len(folders) == 3 and all(f.parent == tmp_path / "redis-cluster" for f in folders)
    assert cluster.passwords_file == tmp_path / "redis" / "passwords.json"
    urls = cluster.urls(RedisPasswords(streamfer="s3cret", admin="adm1n"))
    assert urls.url == "redis://streamfer:s3cret@127.0.0.1:41400/0"
    assert [u.rsplit(":", 1)[1] for u in urls.node_admin_urls] == ["41400/0", "41401/0", "41402/0"]
    assert urls.secure_url is None


def test_a_home_that_runs_no_cluster_has_none_unless_one_is_asked_for(tmp_path: Path) -> None:
    assert cluster_of_home(tmp_path, 0, 7000, None) is None
    asked = cluster_of_home(tmp_path, 3, 41400, None)
    assert asked is not None and [n.port for n in asked.nodes] == [41400, 41401, 41402]


def test_a_cluster_is_refused_where_the_single_redis_runs(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="runs a single redis-server: run `streamfer down`"):
        check_one_redis_kind(tmp_path, 3, single_runs=True)
    check_one_redis_kind(tmp_path, 0, single_runs=True)
    check_one_redis_kind(tmp_path, 3, single_runs=False)


def test_the_streamfer_user_may_read_the_slot_map_and_the_command_table() -> None:
    acl = render_acl(RedisPasswords(streamfer="s", admin="a"), APP_COMMANDS)
    app_line = next(line for line in acl.splitlines() if line.startswith("user streamfer"))
    assert {"+cluster|slots", "+command", "+asking"} <= set(app_line.split())
    # Only the slot map: no CLUSTER subcommand that changes the cluster.
    assert not [w for w in app_line.split() if w.startswith("+cluster") and w != "+cluster|slots"]
