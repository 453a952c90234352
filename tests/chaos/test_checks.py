"""The chaos harness's own pure parts: a schedule replays from its seed, and each check
finds the fault it is there for (a check that can't fail proves nothing)."""

from __future__ import annotations

from collections import Counter

from tests.chaos.checks import Verdict, check_delivery, check_learner, check_merchant_counts
from tests.chaos.history import Seen
from tests.chaos.schedule import Fault, FaultCounts, make_schedule


def test_a_schedule_is_its_seed_and_holds_every_fault_asked_for() -> None:
    counts = FaultCounts()
    one = make_schedule(5, 100.0, counts, pipelines=2, supervisors=2, outage_s=31.0)
    assert one == make_schedule(5, 100.0, counts, pipelines=2, supervisors=2, outage_s=31.0)
    assert one != make_schedule(6, 100.0, counts, pipelines=2, supervisors=2, outage_s=31.0)
    kinds = Counter(step.fault for step in one)
    assert kinds[Fault.WORKER_SIGKILL] == counts.worker_sigkill and sum(kinds.values()) == 12
    assert all(10.0 <= s.at_s <= 80.0 for s in one)
    assert [s.at_s for s in one] == sorted(s.at_s for s in one)
    assert {s.hold_s for s in one if s.fault is Fault.BROKER_OUTAGE} == {31.0}
    assert FaultCounts.for_minutes(30).total() == 6 * counts.total()


def seen(rows: list[tuple[int, int, str, str]]) -> list[Seen]:
    return [Seen(p, o, e, k, False) for p, o, e, k in rows]


def test_delivery_finds_a_lost_event_a_duplicate_and_a_key_out_of_order() -> None:
    produced = {"c1": ["a", "b", "c"], "c2": ["d"]}
    verdict = Verdict()
    history = seen([(0, 0, "b", "c1"), (0, 1, "a", "c1"), (0, 2, "c", "c1"), (0, 3, "c", "c1")])
    check_delivery(verdict, produced, history, exactly_once=True)
    assert (verdict.lost, verdict.duplicated, verdict.out_of_order_keys) == (1, 1, 1)
    assert len(verdict.problems) == 3

    fine = Verdict()
    replayed = [(0, 0, "a", "c1"), (0, 1, "b", "c1"), (0, 2, "a", "c1"), (0, 3, "c", "c1")]
    check_delivery(fine, produced, seen([*replayed, (1, 0, "d", "c2")]), exactly_once=False)
    assert fine.problems == [] and fine.duplicated == 1  # at least once: a replay is allowed


def test_merchant_counts_must_be_one_to_n_per_window_in_any_order() -> None:
    events = {e: {"merchant_id": "m1", "event_time": 1000 * i} for i, e in enumerate("abcd")}

    def served(values: dict[str, float]) -> list[dict[str, object]]:
        return [{"event_id": e, "features": {"mc": v}} for e, v in values.items()]

    good = Verdict()
    check_merchant_counts(good, served({"a": 3, "b": 1, "c": 4, "d": 2}), events, "mc", 3_600_000)
    assert good.problems == []
    twice = Verdict()  # one event applied twice: a gap at the top, a count seen twice
    check_merchant_counts(twice, served({"a": 1, "b": 2, "c": 2, "d": 4}), events, "mc", 3_600_000)
    assert twice.merchant_windows_wrong == 1 and "missing [3.0]" in twice.problems[0]


def test_the_learner_must_have_learned_each_label_once() -> None:
    for status, ok in [
        ({"labels_seen": 10, "expired": 0, "pending": 0}, True),
        ({"labels_seen": 11, "expired": 0, "pending": 0}, False),
        ({"labels_seen": 9, "expired": 1, "pending": 0}, False),
        (None, False),
    ]:
        verdict = Verdict()
        check_learner(verdict, status, 10)
        assert (verdict.problems == []) is ok
