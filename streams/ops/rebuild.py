"""`streamfer rebuild`: recompute the Redis feature state from the events topic.

After Redis lost data, the state continuous processing would have produced is a function
of the events the workers consumed, in per-partition offset order: every partition is
replayed from `--from` (default the earliest retained offset) up to the worker group's
committed offset, decoded exactly as a worker decodes it, and applied through the real
`RedisFeatureStore.update_and_read` with each event's (topic, partition, offset), so the
per-partition idempotency marks and replay records come back too. Workers then resume at
their committed offsets on top of the same state.

What the workers dead-lettered is not applied: schema and decoding rejects are decided
again the same way, and the event-time range check (`max_past`/`max_future`, which depends
on the wall clock when the worker ran) is taken from the dead-letter topic, which names
each rejected source offset, rather than re-judged against today's clock.

Procedure: stop the workers (the group must have no members, unless `--force`), rebuild,
start the workers. After a loss the workers detected (no state epoch), they are paused and
need no stop: the rebuild marks the namespace as rebuilding while it runs and writes a new
epoch when it is done, and they resume on their own (`features.epoch`). See
docs/operations.md.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from streams.events import dead_letters
from streams.ops.lag import LagReader
from streams.ops.progress import NoProgress, ProgressReporter
from streams.spec import Connections, PipelineSpec
from streams.worker.kafka_log import COMMAND_LINK, quiet_consumer

if TYPE_CHECKING:  # the real imports are in the functions: `streamfer --help` stays fast
    from confluent_kafka import Consumer, Message

    from features.redis_connect import RedisClient
    from features.store import FeatureBatch, FeatureStore

# Reasons the worker judged against its wall clock or its Redis script, which a rebuild
# cannot re-judge identically: taken from the dead-letter topic instead.
_RECORDED_REJECTS = (dead_letters.Reason.EVENT_TIME_OUT_OF_RANGE, dead_letters.Reason.FEATURE_ERROR)


class RebuildError(Exception):
    """The rebuild cannot run safely; the message names the cause and the fix."""


@dataclass(frozen=True)
class PartitionRange:
    """Offsets [start, end) of one events partition to replay."""

    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return max(self.end - self.start, 0)


@dataclass(frozen=True)
class RebuildPlan:
    """What a rebuild replays: per partition of the events topic, up to the group's commit."""

    topic: str
    group: str
    ranges: tuple[PartitionRange, ...]

    @property
    def total(self) -> int:
        """Offsets to replay (an upper bound on events: transaction markers take offsets)."""
        return sum(r.size for r in self.ranges)


@dataclass
class RebuildResult:
    """What one rebuild did."""

    plan: RebuildPlan
    deleted_keys: int = 0
    messages: int = 0
    events: int = 0  # replayed through the store; `late` of them were too late to apply
    late: int = 0
    dead_letters: int = 0  # skipped, as the workers dead-lettered them
    seconds: float = 0.0


def parse_start(value: str) -> str | int:
    """'earliest', epoch milliseconds, or an ISO-8601 time (UTC if no offset) → ms."""
    text = value.strip()
    if text.lower() == "earliest":
        return "earliest"
    if text.isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RebuildError(
            f"--from {value!r} is neither 'earliest', epoch milliseconds nor an ISO-8601 "
            "time such as 2026-05-01T12:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def plan_rebuild(
    reader: LagReader, spec: PipelineSpec, *, group: str | None = None, start: str | int
) -> RebuildPlan:
    """Per partition: from `start` (earliest or a time) up to the group's committed offset.

    A partition where the group committed nothing is left out: the workers will read it
    from the beginning themselves (auto.offset.reset=earliest).
    """
    topic, group = spec.topics.events, group or spec.group
    committed = reader.committed_offsets(group, topic)
    if not committed:
        raise RebuildError(
            f"topic {topic!r} does not exist on this cluster (check STREAMFER_BOOTSTRAP)"
        )
    marks = reader.watermarks(topic)
    starts = (
        {p: lo for p, (lo, _hi) in marks.items()}
        if start == "earliest"
        else reader.offsets_for_time(topic, int(start))
    )
    ranges = []
    for partition in sorted(committed):
        end = committed[partition]
        if end is None:
            continue
        # Retention may have removed offsets below the log start: those are gone for good.
        begin = max(starts.get(partition, 0), marks.get(partition, (0, 0))[0])
        if begin < end:
            ranges.append(PartitionRange(partition, begin, end))
    return RebuildPlan(topic, group, tuple(ranges))


def wipe_feature_state(client: RedisClient, namespace: str) -> int:
    """Delete the feature-store keys of `namespace` (`sf:<ns>:{…}`) but the shards' epochs
    (they hold the rebuilding mark), nothing else; on a cluster, on every primary.

    The prediction log (`sf:<ns>:plh:{…}`, and the earlier `sf:{<ns>}:pl…`) and other
    namespaces are not touched.
    """
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in namespace)
    deleted = 0
    batch: list[bytes] = []
    # RedisCluster.scan_iter walks every primary; keys of many slots are unlinked per slot.
    for key in client.scan_iter(match=f"sf:{escaped}:{{*", count=1000):
        if key.endswith(b":epoch"):
            continue
        batch.append(key)
        if len(batch) >= 1000:
            deleted += int(client.unlink(*batch))
            batch.clear()
    if batch:
        deleted += int(client.unlink(*batch))
    return deleted


def _state_lost(connections: Connections, namespace: str) -> bool:
    """The namespace has no state epoch, or one marking it lost or rebuilding: guarded
    workers are paused on it."""
    from features.epoch import read_epoch
    from features.redis_connect import connect
    from features.semantics import LOST_EPOCH, REBUILDING_EPOCH

    client = connect(connections.redis_url, socket_timeout=30)
    try:
        return read_epoch(client, namespace) in (None, LOST_EPOCH, REBUILDING_EPOCH)
    finally:
        client.close()


def read_range(
    connections: Connections,
    topic: str,
    ranges: Mapping[int, tuple[int, int]],
    *,
    batch_size: int = 1000,
    idle_timeout_s: float = 60.0,
) -> Iterator[list[Message]]:
    """Batches of committed messages of `topic`, per partition in offset order, covering
    offsets [start, end) of each partition in `ranges` (read_committed, as workers read)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    todo = {p: (s, e) for p, (s, e) in ranges.items() if s < e}
    if not todo:
        return
    consumer = Consumer(
        quiet_consumer(
            connections.kafka_config(
                **{
                    "group.id": f"streamfer-rebuild-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,
                }
            )
        )
    )
    try:
        consumer.incremental_assign([TopicPartition(topic, p, s) for p, (s, _e) in todo.items()])
        last_progress = time.monotonic()
        while todo:
            out: list[Message] = []
            for msg in consumer.consume(batch_size, 0.5):
                p, offset = msg.partition(), msg.offset()
                if p not in todo or p is None or offset is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        # The log end is at or past `end`: only markers were left.
                        if offset >= todo[p][1]:
                            _done(consumer, topic, p, todo)
                        continue
                    raise RebuildError(f"reading {topic}[{p}]: {err}")
                if offset >= todo[p][1]:
                    _done(consumer, topic, p, todo)
                    continue
                out.append(msg)
                if offset >= todo[p][1] - 1:
                    _done(consumer, topic, p, todo)
            if out:
                last_progress = time.monotonic()
                yield out
            COMMAND_LINK.raise_if_refused()
            if not out and time.monotonic() - last_progress > idle_timeout_s:
                raise RebuildError(
                    f"no progress reading {topic} partitions {sorted(todo)} for "
                    f"{idle_timeout_s:.0f}s (an open transaction holding back read_committed?)"
                )
    finally:
        consumer.close()


def _text(value: str | bytes | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value or ""


def _done(consumer: Consumer, topic: str, p: int, todo: dict[int, tuple[int, int]]) -> None:
    from confluent_kafka import TopicPartition

    if todo.pop(p, None) is not None:
        consumer.incremental_unassign([TopicPartition(topic, p)])


def recorded_rejects(connections: Connections, spec: PipelineSpec) -> set[tuple[int, int]]:
    """(partition, offset) of events topic messages the workers dead-lettered for a reason
    that depends on when or where they ran (see _RECORDED_REJECTS)."""
    reader = LagReader(connections)
    marks = reader.watermarks(spec.topics.dead_letter)
    rejected: set[tuple[int, int]] = set()
    ranges = {p: (lo, hi) for p, (lo, hi) in marks.items()}
    for batch in read_range(connections, spec.topics.dead_letter, ranges, batch_size=5000):
        for msg in batch:
            headers = {str(k): _text(v) for k, v in list(msg.headers() or [])}
            if headers.get(dead_letters.KIND) not in _RECORDED_REJECTS:
                continue
            if headers.get(dead_letters.SOURCE_TOPIC) != spec.topics.events:
                continue
            try:
                partition = int(headers[dead_letters.SOURCE_PARTITION])
                offset = int(headers[dead_letters.SOURCE_OFFSET])
            except (KeyError, ValueError):
                continue
            rejected.add((partition, offset))
    return rejected


def _apply(store: FeatureStore, batch: FeatureBatch) -> tuple[int, int]:
    """Apply a batch → (events replayed, of which late). On a script error apply it event
    by event and skip the poisoned ones, as a worker isolates them (it dead-lettered them)."""
    import redis

    from features.store import FeatureBatch

    try:
        late = store.update_and_read(batch).late
        return len(late), int(late.sum())
    except redis.ResponseError:
        assert batch.sources is not None
        done = late_count = 0
        for i in range(len(batch.records)):
            try:
                one = store.update_and_read(
                    FeatureBatch([batch.records[i]], [batch.event_time_ms[i]], [batch.sources[i]])
                )
            except redis.ResponseError:
                continue
            done += 1
            late_count += int(one.late[0])
        return done, late_count


def rebuild_state(
    spec: PipelineSpec,
    connections: Connections,
    *,
    group: str | None = None,
    start: str | int = "earliest",
    wipe: bool = True,
    force: bool = False,
    progress: ProgressReporter | None = None,
    on_plan: Callable[[RebuildPlan], None] | None = None,
    batch_size: int | None = None,
) -> RebuildResult:
    """Replay the events topic into the spec's Redis feature namespace; see the module doc."""
    from features.epoch import mark_rebuilding, write_epoch
    from features.redis_connect import connect, split_replicas
    from features.redis_store import RedisFeatureStore
    from features.store import FeatureBatch
    from streams.events.codec import decode_batch
    from streams.events.schema import EventValidator

    started = time.perf_counter()
    reader = LagReader(connections)
    group = group or spec.group
    state = reader.group_state(group)
    # Workers that found the state lost are paused, writing and committing nothing, and
    # resume on their own once the rebuild writes the new epoch: no need to stop them.
    if state.members and not force and not _state_lost(connections, spec.namespace):
        raise RebuildError(
            f"consumer group {group!r} has {state.members} running member(s): stop the "
            "workers first (they would commit past the rebuild and write to Redis while it "
            "runs), then rebuild, then start them again. --force skips this check."
        )
    plan = plan_rebuild(reader, spec, group=group, start=start)
    if on_plan is not None:
        on_plan(plan)
    result = RebuildResult(plan)
    client = connect(connections.redis_url, socket_timeout=30)
    try:
        client.ping()
        # Guarded batches see lost state from here until the rebuild is done (the wipe
        # leaves the epoch key alone).
        mark_rebuilding(client, spec.namespace)
        if wipe:
            result.deleted_keys = wipe_feature_state(client, spec.namespace)
    finally:
        client.close()
    skip = recorded_rejects(connections, spec) if plan.ranges else set()
    # Time-range rejects come from the dead-letter topic, not from today's clock.
    event = spec.event.model_copy(update={"max_past": None, "max_future": None})
    validator = EventValidator(event)
    # Unguarded: it writes the state anew (and no epoch) under the rebuilding mark.
    store = RedisFeatureStore(
        spec.features,
        connect(connections.redis_url, socket_timeout=30),
        spec.namespace,
        owns_client=True,
        guard=False,
        replicas=split_replicas(connections.redis_url)[1],
    )
    reporter = progress or NoProgress()
    ranges = {r.partition: (r.start, r.end) for r in plan.ranges}
    try:
        for messages in read_range(
            connections, plan.topic, ranges, batch_size=batch_size or spec.batching.max_size
        ):
            result.messages += len(messages)
            kept = [m for m in messages if (m.partition(), m.offset()) not in skip]
            decoded = decode_batch(
                kept, validator, max_bytes=spec.event.max_bytes, now_ms=int(time.time() * 1000)
            )
            result.dead_letters += len(messages) - len(decoded.records)
            if decoded.records:
                events, late = _apply(
                    store, FeatureBatch(decoded.records, decoded.event_time_ms, decoded.sources)
                )
                result.events += events
                result.late += late
            reporter.advance(len(messages))
    finally:
        store.close()
    client = connect(connections.redis_url, socket_timeout=30)
    try:
        write_epoch(client, spec.namespace)  # the state is whole: paused workers resume
    finally:
        client.close()
    reporter.update(plan.total)
    result.seconds = time.perf_counter() - started
    return result
