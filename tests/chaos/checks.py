"""The checks of a chaos run, over its whole recorded history (Kafka's transactional system
tests and Jepsen's checkers are the model): pure functions of what was produced and what
the clients read, each returning the problems it found (empty: the check holds).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.history import Seen
from tests.integration.harness import assert_features_exact

FENCED = re.compile(r"_FENCED|fenced", re.IGNORECASE)


@dataclass
class Verdict:
    """Figures of one pipeline's history and the problems found (empty: every check held)."""

    events: int = 0
    predicted: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order_keys: int = 0
    mismatched_features: int = 0
    merchant_windows_wrong: int = 0
    late: int = 0
    fenced_lines: int = 0
    problems: list[str] = field(default_factory=list)


def check_delivery(
    verdict: Verdict,
    produced: Mapping[str, Sequence[str]],
    seen: Sequence[Seen],
    *,
    exactly_once: bool,
) -> None:
    """Every event has a prediction; no duplicate in exactly-once mode; per key, events are
    first predicted in the order they were produced (one producer, so topic order)."""
    want = {event_id for ids in produced.values() for event_id in ids}
    counts = Counter(s.event_id for s in seen)
    verdict.events, verdict.predicted = len(want), len(set(counts) & want)
    missing = want - set(counts)
    verdict.lost = len(missing)
    if missing:
        example = sorted(missing)[:3]
        verdict.problems.append(f"{len(missing)} events have no prediction, e.g. {example}")
    if strange := set(counts) - want:
        verdict.problems.append(f"{len(strange)} predictions of events never produced")
    verdict.duplicated = sum(c - 1 for c in counts.values())
    if exactly_once and verdict.duplicated:
        twice = [e for e, c in counts.items() if c > 1][:3]
        verdict.problems.append(f"{verdict.duplicated} duplicate predictions, e.g. {twice}")
    firsts: dict[str, list[str]] = defaultdict(list)
    first_seen: set[str] = set()
    for s in sorted(seen, key=lambda s: (s.partition, s.offset)):
        if s.event_id not in first_seen and s.key is not None:
            first_seen.add(s.event_id)
            firsts[s.key].append(s.event_id)
    wrong = [
        key
        for key, ids in produced.items()
        if firsts.get(key, []) != [event_id for event_id in ids if event_id in counts]
    ]
    verdict.out_of_order_keys = len(wrong)
    if wrong:
        example = wrong[0]
        verdict.problems.append(
            f"{len(wrong)} keys predicted out of their produced order, e.g. "
            f"{example}: {firsts.get(example, [])[:6]} vs {list(produced[example])[:6]}"
        )
    verdict.late = len({s.event_id for s in seen if s.late})


def check_card_features(
    verdict: Verdict,
    served: Sequence[dict[str, Any]],
    expected: Mapping[str, Sequence[float]],
    names: Sequence[str],
    card_names: Sequence[str],
) -> None:
    """Every served value of a card feature (the entity events are keyed by, so one
    partition holds all of a card's events) equals the reference recomputation."""
    columns = [names.index(n) for n in card_names]
    sliced = {event_id: [row[i] for i in columns] for event_id, row in expected.items()}
    try:
        assert_features_exact(list(served), sliced, tuple(card_names))
    except AssertionError as exc:
        # assert_features_exact says "<n> feature values differ, e.g. …"
        found = re.match(r"\s*(\d+) feature values differ", str(exc))
        verdict.mismatched_features = int(found.group(1)) if found else len(served)
        verdict.problems.append(f"card features: {exc}")


def check_merchant_counts(
    verdict: Verdict,
    served: Iterable[dict[str, Any]],
    events: Mapping[str, dict[str, Any]],
    name: str,
    window_ms: int,
) -> None:
    """A merchant's events span partitions, so no order of them is the true one; but a
    tumbling count (window = bucket) read right after each event's own update must serve
    the events of one merchant in one window exactly the counts 1..n, in some order, when
    each event was applied once. A redelivered event applied again after lost state counts
    by its last serving (the first one's state is gone)."""
    last: dict[str, float] = {}
    for record in served:
        last[record["event_id"]] = record["features"][name]
    groups: dict[tuple[str, int], list[tuple[float, str]]] = defaultdict(list)
    for event_id, value in last.items():
        event = events[event_id]
        window = (event["merchant_id"], int(event["event_time"]) // window_ms)
        groups[window].append((value, event_id))
    wrong = []
    for group, served_values in groups.items():
        values = Counter(v for v, _ in served_values)
        n = len(served_values)
        if sorted(values.elements()) != [float(i) for i in range(1, n + 1)]:
            missing = sorted(set(map(float, range(1, n + 1))) - set(values))[:5]
            twice = sorted((v, e) for v, e in served_values if values[v] > 1)[:6]
            wrong.append(f"{group}: n={n}, missing {missing}, repeated {twice}")
    verdict.merchant_windows_wrong = len(wrong)
    if wrong:
        verdict.problems.append(
            f"{len(wrong)} of {len(groups)} merchant windows do not serve counts 1..n, "
            f"e.g. {wrong[:2]}"
        )


def check_learner(verdict: Verdict, status: Mapping[str, Any] | None, labels_produced: int) -> None:
    """The learner, killed and restarted, learned each label once: as many as produced,
    none expired (every label followed its prediction), none left pending."""
    if status is None:
        verdict.problems.append("the learner gave no final status")
        return
    seen, expired = status.get("labels_seen"), status.get("expired")
    if seen != labels_produced or expired or status.get("pending"):
        verdict.problems.append(
            f"learner: {seen} labels learned, {expired} expired, {status.get('pending')} "
            f"pending, of {labels_produced} produced"
        )


def check_logs(verdict: Verdict, logs: Iterable[Path]) -> None:
    """Two supervisors on one group, restarts, outages: not one fenced producer."""
    lines = [
        line
        for log in logs
        if log.exists()
        for line in log.read_text(errors="replace").splitlines()
        if FENCED.search(line)
    ]
    verdict.fenced_lines = len(lines)
    if lines:
        verdict.problems.append(f"{len(lines)} fenced lines in the logs, e.g. {lines[:2]}")
