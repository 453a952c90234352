"""Choose the feature store by URL scheme, as faust chooses its backends.

"memory://" gives the pure in-process `ReferenceFeatureStore`, "redis://" / "rediss://" /
"unix://" the `RedisFeatureStore` (a single Redis or a Redis Cluster, see
`features.redis_connect`); either way wrapped in a `Featurizer`, so the columns are
all of `FeatureSpec.names` (aggregations, then transforms).
"""

from __future__ import annotations

from features.featurizer import Featurizer
from features.spec import FeatureSpec
from features.store import FeatureStore


def open_store(spec: FeatureSpec, url: str, namespace: str = "default") -> FeatureStore:
    """The feature store for a URL ("memory://" or "redis://…"), returning all spec columns.

    `namespace` prefixes every Redis key, so pipelines (or tests) sharing a server never
    see each other's state.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        from features.reference import ReferenceFeatureStore

        return Featurizer(spec, ReferenceFeatureStore(spec))
    if scheme in ("redis", "rediss", "unix"):
        from features.redis_connect import connect, split_replicas
        from features.redis_store import RedisFeatureStore

        _, replicas = split_replicas(url)  # ?replicas=N: WAIT for N replicas per batch
        client = connect(url)
        store = RedisFeatureStore(spec, client, namespace, owns_client=True, replicas=replicas)
        return Featurizer(spec, store)
    raise ValueError(
        f"feature store URL {url!r} not understood: use 'memory://' or 'redis://host:port/db'"
    )
