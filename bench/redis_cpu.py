"""Redis CPU of a measurement: `INFO cpu` of every server behind a client, before and after.

One Redis core is what caps the feature store (issue 13), so the benchmark charges each run
the CPU seconds its Redis spent: `used_cpu_sys + used_cpu_user` of the server (Lua, commands,
protocol, background work), and of its main thread alone where Redis reports it (≥ 7:
`used_cpu_*_main_thread`; I/O threads and forks excluded). On a cluster every primary is
read and the figures summed; the busiest node against the mean (`balance`, 1.0 = even) says
whether the shard tags spread the load. Sampling is per run, not per event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.cluster import RedisCluster

from features.redis_connect import RedisClient

CpuSample = dict[str, float]  # "cpu" (user + sys) and, where reported, "main_thread"


def primaries(client: RedisClient) -> list[redis.Redis]:
    """One client per server: the Redis itself, or each primary of a cluster."""
    if isinstance(client, RedisCluster):
        return [client.get_redis_connection(node) for node in client.get_primaries()]
    return [client]


def parse_cpu(info: dict[str, Any]) -> CpuSample:
    """The CPU seconds of one `INFO cpu` reply: the server's, and its main thread's if given."""
    sample = {"cpu": float(info["used_cpu_user"]) + float(info["used_cpu_sys"])}
    if "used_cpu_user_main_thread" in info and "used_cpu_sys_main_thread" in info:
        sample["main_thread"] = float(info["used_cpu_user_main_thread"]) + float(
            info["used_cpu_sys_main_thread"]
        )
    return sample


def sample_cpu(client: RedisClient) -> list[CpuSample]:
    """The CPU seconds so far of each server behind `client` (one per cluster primary)."""
    return [parse_cpu(node.info("cpu")) for node in primaries(client)]


def node_cpu_s(client: RedisClient) -> list[float]:
    """CPU seconds (user + sys) of each server so far."""
    return [s["cpu"] for s in sample_cpu(client)]


def balance(values: Sequence[float]) -> float | None:
    """The largest value over the mean (1.0 = even); None without a positive mean."""
    if not values:
        return None
    mean = sum(values) / len(values)
    return max(values) / mean if mean > 0 else None


def cpu_per_event(
    before: Sequence[CpuSample], after: Sequence[CpuSample], events: int
) -> dict[str, Any]:
    """Redis CPU µs per event between two samples of the same servers, summed over them;
    on several servers also each one's figure and their balance."""
    if len(before) != len(after):
        raise ValueError(f"{len(before)} servers sampled before, {len(after)} after")
    if events <= 0:
        return {}
    per_node = [(b["cpu"] - a["cpu"]) * 1e6 / events for a, b in zip(before, after, strict=True)]
    out: dict[str, Any] = {
        "redis_cpu_s": sum(b["cpu"] - a["cpu"] for a, b in zip(before, after, strict=True)),
        "redis_cpu_us_per_event": sum(per_node),
    }
    if all("main_thread" in s for s in (*before, *after)):
        out["redis_main_thread_us_per_event"] = sum(
            (b["main_thread"] - a["main_thread"]) * 1e6 / events
            for a, b in zip(before, after, strict=True)
        )
    if len(per_node) > 1:
        out["node_cpu_us_per_event"] = per_node
        out["balance"] = balance(per_node)
    return out
