"""The time-ordered merge of label partitions: order restored, partition order kept, holds
bounded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.learner.ordering import TimeOrderedMerge


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_partition_chunks_come_out_in_time_order() -> None:
    merge: TimeOrderedMerge[str] = TimeOrderedMerge([0, 1], clock=Clock())
    # librdkafka's way: a chunk of partition 0, then one of partition 1.
    for t in (10, 30, 50):
        merge.add(0, t, f"p0@{t}")
    assert merge.release() == [], "partition 1 is behind and may hold earlier labels"
    for t in (20, 40, 60):
        merge.add(1, t, f"p1@{t}")
    # p0 is seen up to 50 and p1 up to 60: everything up to 50 can go.
    assert merge.release() == ["p0@10", "p1@20", "p0@30", "p1@40", "p0@50"]
    merge.caught_up(0)
    assert merge.release() == ["p1@60"]
    assert merge.held == 0


def test_a_lagging_partition_holds_the_others_only_up_to_the_bound() -> None:
    clock = Clock()
    merge: TimeOrderedMerge[int] = TimeOrderedMerge([0, 1], max_hold_ms=500, clock=clock)
    merge.add(0, 100, 1)
    merge.add(0, 200, 2)
    clock.now = 499
    assert merge.release() == []
    clock.now = 500
    assert merge.release() == [1, 2]


def test_a_caught_up_partition_holds_nothing_back() -> None:
    merge: TimeOrderedMerge[int] = TimeOrderedMerge([0, 1, 2], clock=Clock())
    merge.caught_up(1)
    merge.caught_up(2)
    merge.add(0, 5, 5)
    assert merge.release() == [5]
    merge.caught_up(0)
    merge.add(2, 3, 3)  # produced later with an earlier time: it still goes at once
    assert merge.release() == [3]


def test_a_partition_keeps_its_own_order_and_untimed_records_their_place() -> None:
    merge: TimeOrderedMerge[str] = TimeOrderedMerge([0, 1], clock=Clock())
    merge.add(0, 50, "a")
    merge.add(0, 20, "b")  # out of time order inside its partition: stays after "a"
    merge.add(0, None, "bad")  # a malformed record: no time, keeps its place
    merge.add(1, 30, "c")
    merge.add(1, 60, "d")
    merge.caught_up(0)
    merge.caught_up(1)
    out = merge.release()
    assert out == ["c", "a", "b", "bad", "d"]


@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 10_000)), max_size=200),
    st.lists(st.integers(1, 20), min_size=1, max_size=10),
)
def test_any_chunking_gives_the_order_of_one_partition(
    labels: list[tuple[int, int]], chunks: list[int]
) -> None:
    # Each partition's times ascend (as a producer writing in time order makes them).
    per: dict[int, list[int]] = {p: sorted(t for q, t in labels if q == p) for p in range(4)}
    merge: TimeOrderedMerge[tuple[int, int]] = TimeOrderedMerge(range(4), clock=Clock())
    out: list[tuple[int, int]] = []
    cursor = dict.fromkeys(range(4), 0)
    step = 0
    while any(cursor[p] < len(per[p]) for p in range(4)):
        for p in range(4):
            size = chunks[step % len(chunks)]
            step += 1
            for t in per[p][cursor[p] : cursor[p] + size]:
                merge.add(p, t, (t, p))
            cursor[p] += size
            if cursor[p] >= len(per[p]):
                merge.caught_up(p)
            out.extend(merge.release())
    out.extend(merge.release())
    # Times ascend across partitions; equal times have no order of their own.
    assert [t for t, _ in out] == sorted(t for _, t in labels)
    assert sorted(out) == sorted((t, p) for p, t in labels)
