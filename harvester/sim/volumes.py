"""How many rows each mail day holds: computed up front in O(days), never by generating rows.

Office actions are mailed on weekdays, with a trickle on weekends and nothing on some days
(holidays, outages). Weights carry that shape; the largest-remainder method turns them into
integer counts that add up to exactly ``records``, so ``*:*`` has a known ``numFound``.
"""

from __future__ import annotations

import datetime as dt
import random
from itertools import accumulate

from harvester.sim.seeding import derive_seed

WEEKDAY_WEIGHT = 1.0
WEEKEND_WEIGHT = 0.04
HOLIDAY_SHARE = 0.03  # weekdays with no mail at all
EMPTY_WEEKEND_SHARE = 0.5


def day_weights(seed: int, start: dt.date, days: int) -> list[float]:
    """Relative mail volume per day: weekdays heavy and jittered, weekends light or empty."""
    rng = random.Random(derive_seed(seed, "volumes"))
    first_weekday = start.weekday()
    weights: list[float] = []
    for offset in range(days):
        jitter = rng.random()
        empty = rng.random()
        if (first_weekday + offset) % 7 >= 5:
            weight = 0.0 if empty < EMPTY_WEEKEND_SHARE else WEEKEND_WEIGHT * (0.5 + jitter)
        else:
            weight = 0.0 if empty < HOLIDAY_SHARE else WEEKDAY_WEIGHT * (0.7 + 0.6 * jitter)
        weights.append(weight)
    if not any(weights):
        # A range made only of empty days would make ``records`` impossible to place.
        weights = [1.0] * days
    return weights


def largest_remainder(total: int, weights: list[float]) -> list[int]:
    """Integer shares of ``total`` proportional to ``weights``, summing to exactly ``total``."""
    mass = sum(weights)
    if total == 0 or mass == 0:
        return [0] * len(weights)
    quotas = [total * w / mass for w in weights]
    counts = [int(q) for q in quotas]
    short = total - sum(counts)
    # Ties broken by position so the result is deterministic across platforms.
    order = sorted(range(len(weights)), key=lambda i: (counts[i] - quotas[i], i))
    for i in order[:short]:
        counts[i] += 1
    return counts


def day_counts(seed: int, records: int, start: dt.date, days: int) -> list[int]:
    """Rows per day from ``start`` for ``days`` days; exact total ``records``."""
    return largest_remainder(records, day_weights(seed, start, days))


def prefix_sums(counts: list[int]) -> list[int]:
    """``[0, c0, c0+c1, ...]``: the global position of each day's first row."""
    return [0, *accumulate(counts)]
