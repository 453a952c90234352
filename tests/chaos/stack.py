"""The chaos run's own Kafka + Redis on free ports: its faults (broker stopped, Redis
wiped) disturb no other test and no one else's stack; always taken down at the end."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from streams.stack.local import LocalStack, StackConfig
from tests.integration.test_stack import _free_ports


@contextlib.contextmanager
def own_stack(home: Path) -> Iterator[LocalStack]:
    kafka_port, controller_port, redis_port = _free_ports(3)
    stack = LocalStack(
        StackConfig(
            home=home,
            kafka_port=kafka_port,
            controller_port=controller_port,
            redis_port=redis_port,
        )
    )
    try:
        stack.up()
        yield stack
    finally:
        stack.down()  # also when the run failed: no broker outlives it
