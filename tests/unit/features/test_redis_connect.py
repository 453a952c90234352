"""The `cluster=` and `replicas=` arguments of a Redis URL: read, taken out, and nothing
else changed."""

from __future__ import annotations

import pytest
from redis.connection import parse_url

from features.redis_connect import (
    connect,
    is_cluster,
    split_cluster_mode,
    split_replicas,
    with_cluster_mode,
    with_replicas,
)

TLS = "rediss://streamfer:p%40ss%2Fw@127.0.0.1:7001/0?ssl_ca_certs=/tmp/a%20b/ca.pem"


@pytest.mark.parametrize("mode", ["yes", "no", "auto"])
def test_the_mode_is_read_and_stripped_wherever_it_stands(mode: str) -> None:
    first = TLS.replace("?", f"?cluster={mode}&")
    last = f"{TLS}&cluster={mode}"
    assert split_cluster_mode(first) == (TLS, mode)
    assert split_cluster_mode(last) == (TLS, mode)


def test_no_mode_is_auto_and_leaves_the_url_as_it_was() -> None:
    assert split_cluster_mode(TLS) == (TLS, "auto")
    plain = "redis://u:p@h:1/0"
    assert split_cluster_mode(plain) == (plain, "auto")


def test_a_lone_mode_leaves_no_empty_query() -> None:
    assert split_cluster_mode("redis://h:1/0?cluster=YES") == ("redis://h:1/0", "yes")


def test_what_redis_py_reads_is_unchanged_by_the_mode() -> None:
    bare, _ = split_cluster_mode(with_cluster_mode(TLS, "yes"))
    assert parse_url(bare) == parse_url(TLS)
    options = parse_url(bare)
    assert options["password"] == "p@ss/w"
    assert options["ssl_ca_certs"] == "/tmp/a b/ca.pem"


def test_with_cluster_mode_replaces_a_mode_already_there() -> None:
    url = with_cluster_mode(with_cluster_mode("redis://h:1/0", "yes"), "no")
    assert url == "redis://h:1/0?cluster=no"
    assert split_cluster_mode(url) == ("redis://h:1/0", "no")


def test_an_unknown_mode_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="'maybe' is not one of yes, no, auto"):
        split_cluster_mode("redis://h:1/0?cluster=maybe")


def test_replicas_are_read_and_stripped_and_default_to_none() -> None:
    assert split_replicas(TLS) == (TLS, 0)
    assert split_replicas(with_replicas(TLS, 2)) == (TLS, 2)
    assert split_replicas("redis://h:1/0?replicas=1&cluster=yes") == (
        "redis://h:1/0?cluster=yes",
        1,
    )
    assert with_replicas("redis://h:1/0?replicas=3", 0) == "redis://h:1/0"


def test_replicas_that_are_no_number_are_refused() -> None:
    with pytest.raises(ValueError, match="replicas='one' is not a number of replicas"):
        split_replicas("redis://h:1/0?replicas=one")


def test_connect_hides_replicas_from_redis_py() -> None:
    client = connect("redis://127.0.0.1:1/0?replicas=1&cluster=no")
    assert client.connection_pool.connection_kwargs["port"] == 1
    assert "replicas" not in client.connection_pool.connection_kwargs
    client.close()


def test_cluster_no_gives_a_plain_client_without_asking_the_server() -> None:
    # Port 1 on localhost: nothing listens; `no` must not connect at all.
    client = connect("redis://127.0.0.1:1/0?cluster=no")
    assert not is_cluster(client)
    assert client.connection_pool.connection_kwargs["port"] == 1
    client.close()


def test_auto_on_an_unreachable_server_gives_a_lazy_plain_client() -> None:
    client = connect("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    assert not is_cluster(client)
    client.close()
