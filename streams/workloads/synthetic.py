"""The card-payments workload: Zipf-distributed cards and merchants, a hidden fraud pattern.

Deterministic for a seed, generated in numpy blocks so producing a million events is cheap.
Event times advance at `rate` events per second of event time and end near "now", with a
small share of events delayed (out of order) to exercise lateness handling.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

CHANNELS = ("web", "pos", "atm")
COUNTRIES = ("DE", "FR", "NL", "US", "GB", "ES")
MCCS = (5411, 5812, 5999, 4829, 7995, 5732, 5311, 6011)
RISKY_MCCS = frozenset({4829, 7995, 6011})


@dataclass(frozen=True)
class CardPayments:
    n_events: int
    seed: int = 7
    n_cards: int = 10_000
    n_merchants: int = 2_000
    zipf_a: float = 1.3
    rate: float = 1000.0  # events per second of event time
    out_of_order: float = 0.02  # share of events delayed by up to `max_delay_ms`
    max_delay_ms: int = 30_000
    end_ms: int | None = None  # last event time; default: now
    drift_at: int | None = None  # event index where the fraud pattern changes
    run_id: str | None = None

    def events(self, block: int = 10_000) -> Iterator[dict[str, Any]]:
        """Yield events as dicts, in production (not event-time) order."""
        rng = np.random.default_rng(self.seed)
        end_ms = self.end_ms if self.end_ms is not None else int(time.time() * 1000)
        span_ms = int(self.n_events / self.rate * 1000)
        start_ms = end_ms - span_ms
        run_id = self.run_id or f"s{self.seed}"
        for first in range(0, self.n_events, block):
            n = min(block, self.n_events - first)
            idx = np.arange(first, first + n)
            times = start_ms + (idx * 1000 / self.rate).astype(np.int64)
            delayed = rng.random(n) < self.out_of_order
            times = times - np.where(delayed, rng.integers(0, self.max_delay_ms, n), 0)
            cards = _zipf(rng, self.zipf_a, self.n_cards, n)
            merchants = _zipf(rng, self.zipf_a, self.n_merchants, n)
            amounts = np.round(rng.lognormal(3.2, 1.1, n), 2)
            channels = rng.integers(0, len(CHANNELS), n)
            mccs = rng.integers(0, len(MCCS), n)
            countries = rng.integers(0, len(COUNTRIES), n)
            for j in range(n):
                yield {
                    "event_id": f"{run_id}-{first + j:09d}",
                    "event_time": int(times[j]),
                    "card_id": f"c{cards[j]}",
                    "merchant_id": f"m{merchants[j]}",
                    "amount": float(amounts[j]),
                    "currency": "EUR",
                    "channel": CHANNELS[channels[j]],
                    "mcc": MCCS[mccs[j]],
                    "country": COUNTRIES[countries[j]],
                }


def _zipf(rng: np.random.Generator, a: float, n: int, size: int) -> np.ndarray:
    """Zipf ranks truncated to 1..n (rejection keeps the head's shape)."""
    out = rng.zipf(a, size)
    bad = out > n
    while bad.any():
        out[bad] = rng.zipf(a, int(bad.sum()))
        bad = out > n
    return out


def fraud_label(
    event: dict[str, Any],
    card_mean_amount: float,
    card_count: float,
    *,
    drifted: bool = False,
) -> int:
    """The hidden pattern the demo model learns (and, after drift, loses).

    Before drift: large amounts far above the card's recent mean, or web payments at risky
    merchant categories. After drift: fraud moves to bursts of small point-of-sale payments.
    """
    amount = float(event["amount"])
    if not drifted:
        hit = (amount > 3.0 * max(card_mean_amount, 1.0) and amount > 150.0) or (
            event["channel"] == "web" and event["mcc"] in RISKY_MCCS and amount > 60.0
        )
    else:
        hit = event["channel"] == "pos" and card_count >= 4 and amount < 40.0
    return int(hit)
