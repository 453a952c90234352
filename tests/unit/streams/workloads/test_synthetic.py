from itertools import islice

from streams.workloads.synthetic import CardPayments, fraud_label


def test_same_seed_same_events():
    a = list(CardPayments(500, seed=3, end_ms=10**12).events())
    b = list(CardPayments(500, seed=3, end_ms=10**12).events())
    assert a == b
    assert len({e["event_id"] for e in a}) == 500


def test_events_end_near_end_ms_and_cards_are_skewed():
    events = list(CardPayments(5000, seed=1, end_ms=10**12, rate=100).events())
    assert max(e["event_time"] for e in events) <= 10**12
    assert min(e["event_time"] for e in events) >= 10**12 - 50_000 - 30_000
    counts: dict[str, int] = {}
    for e in events:
        counts[e["card_id"]] = counts.get(e["card_id"], 0) + 1
    assert max(counts.values()) > 20 * (5000 / len(counts))  # a Zipf head, not uniform


def test_fraud_pattern_changes_after_drift():
    event = next(islice(CardPayments(1, seed=1).events(), 1))
    event.update(amount=25.0, channel="pos", mcc=5411)
    assert fraud_label(event, 20.0, 5, drifted=False) == 0
    assert fraud_label(event, 20.0, 5, drifted=True) == 1
