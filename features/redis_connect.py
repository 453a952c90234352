"""One way to open a Redis client from a URL: a single server or a Redis Cluster, by the URL.

Every component gets its Redis as a URL (`redis://user:password@host:port/0`, `rediss://…`
with `ssl_ca_certs=…` as query arguments). `connect` turns it into `redis.Redis` or
`redis.cluster.RedisCluster`, so that nothing else has to know which one it talks to.
A query argument `cluster=yes|no|auto` says which; it is taken out of the URL before
redis-py sees it. `auto` (the default) asks the server `INFO cluster`: one round trip at
connect time, none after. A managed cluster that refuses INFO needs `?cluster=yes`.

A query argument `replicas=N` asks the feature store to count a batch's state written only
once N replicas of each node it wrote to have it (`WAIT`), so that a failover to one of them
loses no batch the workers went on from (`features.shard_calls`); `connect` takes it out too.
"""

from __future__ import annotations

import logging
from typing import Any, TypeAlias
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

RedisClient: TypeAlias = redis.Redis | RedisCluster

CLUSTER_ARG = "cluster"
MODES = ("yes", "no", "auto")

log = logging.getLogger(__name__)


def split_cluster_mode(url: str) -> tuple[str, str]:
    """(`url` without its `cluster=` query argument, that argument's value or "auto").

    The other query arguments keep their order and encoding; a ValueError names a value
    that is none of yes/no/auto.
    """
    parts = urlsplit(url)
    # Split by hand rather than re-encode: the other arguments reach redis-py byte for byte.
    fields = [field for field in parts.query.split("&") if field]
    ours = [field for field in fields if field.partition("=")[0] == CLUSTER_ARG]
    if not ours:
        return url, "auto"
    given = unquote_plus(ours[-1].partition("=")[2])
    mode = given.strip().lower()
    if mode not in MODES:
        raise ValueError(
            f"the Redis URL's {CLUSTER_ARG}={given!r} is not one of {', '.join(MODES)}: "
            f"write {CLUSTER_ARG}=yes for a Redis Cluster, {CLUSTER_ARG}=no for one server, or "
            "leave it out to ask the server"
        )
    query = "&".join(field for field in fields if field not in ours)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment)), mode


REPLICAS_ARG = "replicas"


def split_replicas(url: str) -> tuple[str, int]:
    """(`url` without its `replicas=` query argument, that number or 0); a ValueError for
    a value that is not a whole number of 0 or more."""
    parts = urlsplit(url)
    fields = [field for field in parts.query.split("&") if field]
    ours = [field for field in fields if field.partition("=")[0] == REPLICAS_ARG]
    if not ours:
        return url, 0
    given = unquote_plus(ours[-1].partition("=")[2]).strip()
    if not given.isdigit():
        raise ValueError(
            f"the Redis URL's {REPLICAS_ARG}={given!r} is not a number of replicas: write "
            f"{REPLICAS_ARG}=1 to wait for one replica per node, or leave it out"
        )
    query = "&".join(field for field in fields if field not in ours)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment)), int(given)


def with_replicas(url: str, replicas: int) -> str:
    """`url` with its `replicas=` argument set (left out for 0)."""
    bare, _ = split_replicas(url)
    if not replicas:
        return bare
    return f"{bare}{'&' if urlsplit(bare).query else '?'}{REPLICAS_ARG}={replicas}"


def with_cluster_mode(url: str, mode: str) -> str:
    """`url` with its `cluster=` argument set to `mode` (one of yes/no/auto)."""
    if mode not in MODES:
        raise ValueError(f"cluster mode {mode!r} is not one of {', '.join(MODES)}")
    bare, _ = split_cluster_mode(url)
    return f"{bare}{'&' if urlsplit(bare).query else '?'}{CLUSTER_ARG}={mode}"


def connect(url: str, **kwargs: Any) -> RedisClient:
    """A client for the Redis at `url`: `RedisCluster` for a cluster, `redis.Redis` otherwise.

    `kwargs` go to redis-py's `from_url` either way (e.g. `socket_timeout`,
    `decode_responses`). With `cluster=auto`, a server that cannot be reached yet gets a
    plain, lazily connecting client as `redis.Redis.from_url` gives (a worker may start
    before its Redis); one that refuses INFO (NOPERM) is taken as a single server;
    a wrong or missing password raises `redis.AuthenticationError` here, as does any
    failure to connect to a cluster (RedisCluster connects at once).
    """
    url, mode = split_cluster_mode(url)
    url, _ = split_replicas(url)  # the feature store's (open_store), not redis-py's
    if mode == "yes":
        return _cluster(url, kwargs)
    client = redis.Redis.from_url(url, **kwargs)
    if mode == "no":
        return client
    try:
        info = client.info("cluster")
    except redis.AuthenticationError:  # a wrong password is the caller's to report
        client.close()
        raise
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # DEBUG: the caller meets the same failure on its first command and reports it.
        log.debug(
            "could not ask the Redis whether it is a cluster (%s): using a single-server "
            "client; add ?%s=yes to the URL of a cluster that may be down at startup",
            type(exc).__name__,
            CLUSTER_ARG,
        )
        return client
    except redis.ResponseError:  # INFO refused: a managed service; ?cluster=yes says otherwise
        return client
    if not int(info.get("cluster_enabled", 0)):
        return client
    client.close()
    return _cluster(url, kwargs)


def _cluster(url: str, kwargs: dict[str, Any]) -> RedisCluster:
    """RedisCluster.from_url, which connects at once; a failure that has a Redis cause
    (wrong password, no server) raises that `redis.RedisError`, so callers catch one family
    for both kinds of client (redis-py wraps it in RedisClusterException, no RedisError)."""
    try:
        return RedisCluster.from_url(url, **kwargs)
    except RedisClusterException as exc:
        if isinstance(exc.__cause__, redis.RedisError):
            raise exc.__cause__ from exc
        raise


def is_cluster(client: RedisClient) -> bool:
    """Whether `client` talks to a Redis Cluster (keys then need hash tags per slot)."""
    return isinstance(client, RedisCluster)
