"""Consumer lag of any group on any Kafka cluster: committed offset, log end, lag, rate, ETA.

Everything is read with the AdminClient (no group is joined, nothing is committed), so it
works whether or not the group's members run. A rate needs two readings: `LagWindow`
keeps the readings of the last few seconds and `lag_report` compares the newest with the
oldest. Committed offsets move only when a member commits (librdkafka auto-commits every
5 s by default), so a window shorter than that shows a stalled rate; the CLI uses 15 s.

    reader = LagReader(connections)
    report = lag_report(reader.snapshot(groups=["payments"]), baseline=None)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin import OffsetSpec as _OffsetSpec  # type: ignore[attr-defined]
from rich.console import Group
from rich.table import Table

from streams.spec import Connections

TopicPartitionKey = tuple[str, int]

# What ListOffsets asks for: the log start, the log end, or the first offset at a time.
EARLIEST: Any = _OffsetSpec.earliest()  # type: ignore[no-untyped-call]
LATEST: Any = _OffsetSpec.latest()  # type: ignore[no-untyped-call]


def _at_time(timestamp_ms: int) -> Any:
    return _OffsetSpec.for_timestamp(timestamp_ms)


@dataclass(frozen=True)
class GroupState:
    """What the coordinator says about a group: its state and how many members it has."""

    state: str
    members: int


@dataclass(frozen=True)
class OffsetsSnapshot:
    """One reading of committed offsets (per group) and log start/end (per partition).

    `committed[group][(topic, partition)]` is None for a partition of a topic the group
    reads but where it has committed nothing yet.
    """

    taken_at: float
    groups: dict[str, GroupState]
    committed: dict[str, dict[TopicPartitionKey, int | None]]
    log_start: dict[TopicPartitionKey, int]
    log_end: dict[TopicPartitionKey, int]


@dataclass(frozen=True)
class PartitionLag:
    """Lag of one group on one partition; rates in messages/s over the report's window.

    `lag` is log end minus committed; with nothing committed it is log end minus log start
    (everything retained is still ahead, as for a consumer starting at the earliest
    offset, which is what streamfer workers do). `eta_s` is the time to catch up at the
    current rates: lag / (consume rate - produce rate); 0 with no lag, None when unknown
    or when the group is not gaining on the producers.
    """

    topic: str
    partition: int
    committed: int | None
    log_start: int
    log_end: int
    lag: int
    consume_rate: float | None = None
    produce_rate: float | None = None
    eta_s: float | None = None


@dataclass(frozen=True)
class GroupLag:
    """All partitions of one group, with totals over them (same meaning as per partition)."""

    group: str
    state: str
    members: int
    partitions: list[PartitionLag]
    lag: int
    consume_rate: float | None
    produce_rate: float | None
    eta_s: float | None


@dataclass(frozen=True)
class LagReport:
    """Lag of every group read at `taken_at`; rates span the last `rate_window_s` seconds
    (None: a single reading, so no rates)."""

    taken_at: float
    rate_window_s: float | None
    groups: list[GroupLag] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- pure arithmetic ------------------------------------------------------------------------
def eta_seconds(lag: int, consume_rate: float | None, produce_rate: float | None) -> float | None:
    """Seconds to reach the log end: lag over the net rate at which the group gains."""
    if lag <= 0:
        return 0.0
    if consume_rate is None or produce_rate is None:
        return None
    gain = consume_rate - produce_rate
    return lag / gain if gain > 0 else None


def _rate(now: int | None, then: int | None, seconds: float | None) -> float | None:
    if now is None or then is None or not seconds:
        return None
    # A reset group (offsets moved back) has no meaningful rate for this window.
    return max(now - then, 0) / seconds


def lag_report(current: OffsetsSnapshot, baseline: OffsetsSnapshot | None) -> LagReport:
    """Lag per group and partition from one reading; rates against `baseline` if given."""
    span = current.taken_at - baseline.taken_at if baseline is not None else None
    if span is not None and span <= 0:
        span = None
    groups: list[GroupLag] = []
    for group in sorted(current.committed):
        parts: list[PartitionLag] = []
        for tp in sorted(current.committed[group]):
            if tp not in current.log_end:
                continue  # topic deleted or unreadable: nothing to measure against
            committed = current.committed[group][tp]
            start, end = current.log_start.get(tp, 0), current.log_end[tp]
            lag = max(end - committed, 0) if committed is not None else max(end - start, 0)
            consume = produce = None
            if baseline is not None and span is not None:
                before = baseline.committed.get(group, {}).get(tp)
                consume = _rate(committed, before, span)
                if consume is None and committed is None and tp in baseline.log_end:
                    consume = 0.0  # nothing committed then or now: consuming nothing
                produce = _rate(end, baseline.log_end.get(tp), span)
            parts.append(
                PartitionLag(
                    tp[0],
                    tp[1],
                    committed,
                    start,
                    end,
                    lag,
                    consume,
                    produce,
                    eta_seconds(lag, consume, produce),
                )
            )
        total = sum(p.lag for p in parts)
        consume_total = _sum_or_none(p.consume_rate for p in parts)
        produce_total = _sum_or_none(p.produce_rate for p in parts)
        state = current.groups.get(group, GroupState("unknown", 0))
        groups.append(
            GroupLag(
                group,
                state.state,
                state.members,
                parts,
                total,
                consume_total,
                produce_total,
                eta_seconds(total, consume_total, produce_total),
            )
        )
    return LagReport(current.taken_at, span, groups)


def _sum_or_none(values: Iterable[float | None]) -> float | None:
    listed = list(values)
    if not listed or any(v is None for v in listed):
        return None
    return float(sum(v for v in listed if v is not None))


class LagWindow:
    """Readings of the last `window_s` seconds; the oldest is the baseline of the rates."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._readings: deque[OffsetsSnapshot] = deque()

    def push(self, snapshot: OffsetsSnapshot) -> LagReport:
        """Add a reading and report lag with rates over (at most) the window."""
        self._readings.append(snapshot)
        # Keep one reading at least window_s old, so the span covers the whole window.
        while (
            len(self._readings) > 2
            and snapshot.taken_at - self._readings[1].taken_at >= self.window_s
        ):
            self._readings.popleft()
        baseline = self._readings[0] if len(self._readings) > 1 else None
        return lag_report(snapshot, baseline)


# -- reading the cluster ---------------------------------------------------------------------
class LagReadError(Exception):
    """The cluster did not answer a lag query; the message says which and why."""


class LagReader:
    """Reads offsets with one AdminClient; safe to call repeatedly (e.g. every second)."""

    def __init__(
        self,
        connections: Connections,
        *,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from streams.ops.topics import admin_for

        self._admin: AdminClient = admin_for(connections, timeout_s)
        self._timeout = timeout_s
        self._clock = clock

    def groups(self) -> list[str]:
        """Every consumer group the cluster knows, sorted."""
        result = self._admin.list_consumer_groups(request_timeout=self._timeout).result()
        return sorted(g.group_id for g in result.valid)

    def snapshot(
        self, groups: Sequence[str] | None = None, topics: Sequence[str] | None = None
    ) -> OffsetsSnapshot:
        """Read committed offsets of `groups` (default: all) on `topics` (default: the topics
        each group has committed on), and the log start and end of those partitions.

        With `topics` given, groups that never committed on them are left out unless they
        were named in `groups`.
        """
        named = list(groups) if groups else None
        group_ids = named if named is not None else self.groups()
        layout = self._layout()
        partitions = _partitions_of(layout, topics) if topics else None
        if partitions == []:
            group_ids = []  # none of the topics exists: nobody has lag on them
        committed: dict[str, dict[TopicPartitionKey, int | None]] = {}
        futures = {
            group: self._admin.list_consumer_group_offsets(
                [
                    ConsumerGroupTopicPartitions(
                        group, [TopicPartition(t, p) for t, p in partitions] if partitions else None
                    )
                ],
                request_timeout=self._timeout,
            )[group]
            for group in group_ids
        }
        for group, future in futures.items():
            try:
                answer = future.result()
            except KafkaException as exc:
                if named is None:
                    continue  # a group that went away since it was listed
                raise LagReadError(f"committed offsets of group {group!r}: {exc}") from None
            offsets: dict[TopicPartitionKey, int | None] = {
                (tp.topic, tp.partition): tp.offset if tp.offset >= 0 else None
                for tp in answer.topic_partitions or []
                if tp.error is None
            }
            if partitions is None and offsets:
                # Every partition of each topic the group reads, committed on or not.
                for tp in _partitions_of(layout, sorted({t for t, _ in offsets})):
                    offsets.setdefault(tp, None)
            if named is None and all(v is None for v in offsets.values()):
                continue  # a group with nothing committed on these topics
            committed[group] = offsets
        wanted = sorted({tp for offsets in committed.values() for tp in offsets})
        log_start = self._offsets(wanted, EARLIEST)
        log_end = self._offsets(wanted, LATEST)
        return OffsetsSnapshot(
            self._clock(), self._states(list(committed)), committed, log_start, log_end
        )

    def _layout(self) -> dict[str, list[int]]:
        """Partitions of every topic. All topics at once: asking the broker for one named
        topic could auto-create it (auto.create.topics.enable), e.g. on a typo."""
        topics = self._admin.list_topics(timeout=self._timeout).topics
        return {
            name: sorted(meta.partitions) for name, meta in topics.items() if meta.error is None
        }

    def _partitions(self, topics: Sequence[str]) -> list[TopicPartitionKey]:
        return _partitions_of(self._layout(), topics)

    def _offsets(self, tps: Sequence[TopicPartitionKey], spec: Any) -> dict[Any, int]:
        if not tps:
            return {}
        futures = self._admin.list_offsets(
            {TopicPartition(t, p): spec for t, p in tps},
            isolation_level=IsolationLevel.READ_UNCOMMITTED,
            request_timeout=self._timeout,
        )
        out: dict[TopicPartitionKey, int] = {}
        for tp, future in futures.items():
            try:
                out[(tp.topic, tp.partition)] = future.result().offset
            except KafkaException:
                continue  # partition gone or leaderless right now: reported as missing
        return out

    def _states(self, groups: list[str]) -> dict[str, GroupState]:
        if not groups:
            return {}
        out: dict[str, GroupState] = {}
        futures = self._admin.describe_consumer_groups(groups, request_timeout=self._timeout)
        for group, future in futures.items():
            try:
                described = future.result()
            except KafkaException:
                out[group] = GroupState("unknown", 0)
                continue
            name = getattr(described.state, "name", str(described.state))
            out[group] = GroupState(str(name).lower(), len(described.members))
        return out

    def committed_offsets(self, group: str, topic: str) -> dict[int, int | None]:
        """Committed offset per partition of `topic` for `group` (None: nothing committed)."""
        snap = self.snapshot([group], [topic])
        return {p: off for (t, p), off in snap.committed.get(group, {}).items() if t == topic}

    def watermarks(self, topic: str) -> dict[int, tuple[int, int]]:
        """(log start, log end) per partition of `topic`."""
        tps = self._partitions([topic])
        start = self._offsets(tps, EARLIEST)
        end = self._offsets(tps, LATEST)
        return {p: (start[(t, p)], end[(t, p)]) for t, p in tps if (t, p) in end}

    def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        """Per partition, the first offset whose timestamp is at or after `timestamp_ms`
        (the log end when there is none)."""
        tps = self._partitions([topic])
        found = self._offsets(tps, _at_time(timestamp_ms))
        end = self._offsets(tps, LATEST)
        return {
            p: found.get((t, p), -1) if found.get((t, p), -1) >= 0 else end[(t, p)] for t, p in tps
        }

    def group_state(self, group: str) -> GroupState:
        """State and member count of one group ("dead" when the cluster does not know it)."""
        return self._states([group]).get(group, GroupState("dead", 0))


def _partitions_of(
    layout: Mapping[str, list[int]], topics: Sequence[str]
) -> list[TopicPartitionKey]:
    """(topic, partition) of each known topic in `topics`; unknown topics have none."""
    return [(t, p) for t in topics for p in layout.get(t, [])]


# -- presentation ----------------------------------------------------------------------------
def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _per_s(value: float | None) -> str:
    return "?" if value is None else f"{value:,.1f}/s"


def format_eta(seconds: float | None, lag: int) -> str:
    """'0s', '3m12s', '∞' (not catching up) or '?' (no rate yet)."""
    if seconds is None:
        return "?" if lag > 0 else "0s"
    if seconds == 0:
        return "0s"
    s = round(seconds)
    if s >= 86_400:
        return f"{s // 86_400}d{s % 86_400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _eta_cell(eta: float | None, lag: int, consume: float | None, produce: float | None) -> str:
    if eta is None and lag > 0 and consume is not None and produce is not None:
        return "∞"  # rates known, but the group is not gaining on the producers
    return format_eta(eta, lag)


def render_report(report: LagReport) -> Group:
    """One rich table per group: a row per partition and a bold total row."""
    tables: list[Table] = []
    window = (
        f"rates over {report.rate_window_s:.0f}s"
        if report.rate_window_s
        else "rates need two readings (--follow, or --sample SECONDS)"
    )
    for g in report.groups:
        table = Table(
            title=f"group [bold]{g.group}[/] ({g.state}, {g.members} members)",
            caption=window,
            title_justify="left",
        )
        for name in ("topic", "partition", "committed", "log end", "lag", "consumed", "produced"):
            table.add_column(name, justify="left" if name == "topic" else "right")
        table.add_column("ETA", justify="right")
        for p in g.partitions:
            table.add_row(
                p.topic,
                str(p.partition),
                _count(p.committed),
                _count(p.log_end),
                _count(p.lag),
                _per_s(p.consume_rate),
                _per_s(p.produce_rate),
                _eta_cell(p.eta_s, p.lag, p.consume_rate, p.produce_rate),
            )
        table.add_row(
            "[bold]total[/]",
            "",
            "",
            "",
            f"[bold]{g.lag:,}[/]",
            _per_s(g.consume_rate),
            _per_s(g.produce_rate),
            _eta_cell(g.eta_s, g.lag, g.consume_rate, g.produce_rate),
            end_section=True,
        )
        tables.append(table)
    if not tables:
        return Group("no consumer group has committed offsets on the selected topics")
    return Group(*tables)
