"""``reconcile.count_months``: the months of a stretch the lake holds nothing of, counted by
halving. An open start begins in 1900, so a refresh or verify of a lake of a few years
counts 1,500 empty months: one count while the service holds nothing there, a few more per
month it holds rows in, and every month's count exact."""

from __future__ import annotations

import asyncio
import datetime as dt
import math

import pytest

from harvester.jobs.reconcile import count_months, differing_days
from harvester.storage.shard import EARLIEST_PROBE, month_spans

MONTHS = month_spans(EARLIEST_PROBE, dt.date(2026, 12, 31))


class DayCounter:
    """A service holding ``rows`` per day; answers a date-range count query, counting them."""

    def __init__(self, rows: dict[dt.date, int]) -> None:
        self.rows = rows
        self.asked = 0

    async def span(self, a: dt.date, b: dt.date) -> int:
        self.asked += 1
        return sum(n for d, n in self.rows.items() if a <= d <= b)


@pytest.mark.parametrize(
    "days",
    [
        [],
        [dt.date(2018, 12, 29)],
        [dt.date(1900, 1, 1), dt.date(2026, 12, 31)],
        [dt.date(1950 + k * 7, 1 + k % 12, 3) for k in range(9)],
    ],
)
def test_every_month_is_counted_exactly_at_about_two_counts_a_halving(
    days: list[dt.date],
) -> None:
    service = DayCounter(dict.fromkeys(days, 2))
    counts = asyncio.run(count_months(service.span, MONTHS))
    want = [sum(2 for d in days if a <= d <= b) for a, b in MONTHS]
    assert counts == want
    bound = 1 + 2 * len(days) * math.ceil(math.log2(len(MONTHS)))
    assert service.asked <= bound, (service.asked, bound)
    assert len(MONTHS) > 1500 and (days or service.asked == 1)


class ByCriteria:
    """The ``Counter`` interface over a ``DayCounter``: reads the range back from the query."""

    TEMPLATE = "submissionDate:[{start} TO {end}]"

    def __init__(self, service: DayCounter) -> None:
        self.service = service

    async def count(self, criteria: str) -> int:
        low, high = criteria.split("[", 1)[1].rstrip("]").split(" TO ")
        return await self.service.span(dt.date.fromisoformat(low), dt.date.fromisoformat(high))


def test_differing_days_of_an_open_start_cost_a_count_for_the_stretch_before_the_lake() -> None:
    """A lake of January 2019 and a service holding the same: the 1,428 months before it
    cost one count, not one each; a row that appears in 2018 is then found, on its day."""
    lake = {dt.date(2019, 1, d): 5 for d in range(2, 32)}
    service = DayCounter(dict(lake))
    counter, last = ByCriteria(service), dt.date(2019, 1, 31)

    def differing() -> dict[dt.date, tuple[int, int]]:
        return asyncio.run(differing_days(counter, ByCriteria.TEMPLATE, lake, EARLIEST_PROBE, last))

    assert differing() == {} and service.asked == 2  # the stretch before, then January
    service.rows[dt.date(2018, 12, 29)] = 3
    service.asked = 0
    assert differing() == {dt.date(2018, 12, 29): (0, 3)}
    # Halving to December 2018, then its 31 days.
    assert service.asked <= 2 + 2 * math.ceil(math.log2(1428)) + 31, service.asked
