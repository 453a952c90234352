"""Who a worker is: its instance id, and the Kafka ids derived from it.

A transactional id must be unique among the live producers of a cluster (two processes with
one id fence each other) and stable across restarts of the same worker slot (the restarted
producer fences its own zombie and aborts the transaction it left open, instead of leaving
read_committed readers waiting for the transaction timeout). So it is built from an instance
id (one per host or pod: the hostname by default, `STREAMFER_INSTANCE_ID` or `--instance-id`
to choose) and the worker's index in its supervisor. A zombie that kept its partitions past
a rebalance is fenced by the group's generation (KIP-447: the offsets go into the
transaction with the consumer's group metadata), not by the transactional id.
"""

from __future__ import annotations

import os
import re
import socket

INSTANCE_ENV = "STREAMFER_INSTANCE_ID"
# Kafka accepts any string, but operators grep for these ids in broker logs and ACLs.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_LEN = 128


def clean_instance_id(value: str) -> str:
    """`value` with anything but letters, digits, `.`, `_` and `-` replaced by `-`."""
    cleaned = _UNSAFE.sub("-", value.strip()).strip("-")[:_MAX_LEN]
    if not cleaned:
        raise ValueError(f"instance id {value!r} has no letter or digit: give e.g. the host name")
    return cleaned


def resolve_instance_id(explicit: str | None = None) -> str:
    """`--instance-id`, else `STREAMFER_INSTANCE_ID`, else the host name (a pod's name in
    Kubernetes, the container's id under Docker Compose: distinct for every replica)."""
    for value in (explicit, os.environ.get(INSTANCE_ENV)):
        if value and value.strip():
            return clean_instance_id(value)
    return clean_instance_id(socket.gethostname() or "localhost")


def transactional_id(group: str, instance_id: str, worker_index: int) -> str:
    """`streamfer-<group>-<instance id>-<worker index>`: one per worker slot in the cluster."""
    return f"streamfer-{group}-{instance_id}-{worker_index}"


def client_id(pipeline: str, instance_id: str, worker_index: int) -> str:
    """The `client.id` of a worker's Kafka clients, so broker logs tell the workers apart."""
    return f"streamfer-{pipeline}-{instance_id}-{worker_index}"
