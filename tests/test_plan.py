"""The planner counts the range and its months, cuts large months by id range without
counting the pieces, checks that counts add up, and every row lands in exactly one shard.

The counts come from an in-memory table of ids per day: the planner's contract with the
API is only "how many rows match this criteria", and this test evaluates that exactly.
End-to-end planning against the simulator is covered by the harvest tests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import re

import pytest

from harvester.config import DEFAULT_DATE_TEMPLATE
from harvester.errors import CountsDisagree
from harvester.jobs.planner import Planner, id_bounds, split_hex
from harvester.service.profile import Limits
from harvester.storage.shard import Shard, month_spans

CRITERIA = re.compile(
    r"submissionDate:\[(\d{4}-\d\d-\d\d)T00:00:00Z TO (\d{4}-\d\d-\d\d)T23:59:59Z\]"
    r"(?: AND id:\[(\S+) TO (\S+)[}\]])?$"
)


class TableCounter:
    """Counts rows of a fixed {day: [ids]} table for the criteria the planner builds."""

    def __init__(self, rows: dict[dt.date, list[str]], drift: int = 0) -> None:
        self.rows = rows
        self.calls = 0
        self.drift = drift  # added to every count of more than one day (a lying service)

    async def count(self, criteria: str) -> int:
        self.calls += 1
        match = CRITERIA.match(criteria)
        assert match, criteria
        first, last = dt.date.fromisoformat(match[1]), dt.date.fromisoformat(match[2])
        low = match[3] if match[3] not in (None, "*") else ""
        high = match[4] if match[4] not in (None, "*") else None
        return (self.drift if last > first else 0) + sum(
            1
            for day, ids in self.rows.items()
            if first <= day <= last
            for i in ids
            if i >= low and (high is None or i < high)
        )


def limits(shard_size: int) -> Limits:
    return Limits(page_size=100, window=shard_size, shard_size_setting=shard_size)


def ids(day: dt.date, n: int) -> list[str]:
    return [hashlib.md5(f"{day}-{i}".encode()).hexdigest() for i in range(n)]


def test_split_hex_midpoints() -> None:
    assert split_hex("0", None) == "8"
    assert split_hex("0", "8") == "4"
    assert split_hex("8", None) == "c"
    assert split_hex("0", "1") == "08"
    assert split_hex("08", "1") == "0c"


@pytest.mark.parametrize(
    ("low", "high", "pieces"), [("0", None, 3), ("0", None, 40), ("4", "5", 7)]
)
def test_id_bounds_cut_a_range_into_ascending_pieces(
    low: str, high: str | None, pieces: int
) -> None:
    bounds = id_bounds(low, high, pieces)
    assert len(bounds) == pieces + 1 and bounds[0] == low and bounds[-1] == (high or "")
    inner = bounds[1:-1]
    assert inner == sorted(inner) and len(set(inner)) == len(inner)
    assert all(low < b and (high is None or b < high) for b in inner)


@pytest.mark.parametrize(
    ("low", "high", "pieces"), [("0", None, 11), ("0", None, 3), ("2", "4", 5), ("0", None, 97)]
)
def test_id_bounds_cut_shares_equal_within_two_percent(
    low: str, high: str | None, pieces: int
) -> None:
    """Uniform ids fill the pieces by their share of the id space: 11 pieces cut at one
    hex digit were 6 of 1/16 and 5 of 2/16, and the larger ones overflowed the window."""
    bounds = id_bounds(low, high, pieces)

    def value(bound: str, end: bool) -> int:
        return 16**32 if end and not bound else int(bound.ljust(32, "0"), 16)

    shares = [value(b, True) - value(a, False) for a, b in itertools.pairwise(bounds)]
    assert len(shares) == pieces and min(shares) > 0
    assert max(shares) / min(shares) < 1.02, shares


def test_month_spans_clip_to_range() -> None:
    spans = month_spans(dt.date(2019, 1, 15), dt.date(2019, 3, 2))
    assert spans == [
        (dt.date(2019, 1, 15), dt.date(2019, 1, 31)),
        (dt.date(2019, 2, 1), dt.date(2019, 2, 28)),
        (dt.date(2019, 3, 1), dt.date(2019, 3, 2)),
    ]


def test_keys_are_readable_and_slugs_distinct() -> None:
    d = dt.date(2019, 7, 15)
    shards = [
        Shard(d, d),
        Shard(dt.date(2019, 7, 1), dt.date(2019, 7, 9)),
        Shard(d, d, "0", "8"),
        Shard(d, d, "8", None),
    ]
    assert [s.key for s in shards] == [
        "2019-07-15",
        "2019-07-01..2019-07-09",
        "2019-07-15/id[0-8)",
        "2019-07-15/id[8-)",
    ]
    assert len({s.slug for s in shards}) == 4
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", s.slug) for s in shards)
    assert Shard(d, d, "8", None).criteria(DEFAULT_DATE_TEMPLATE).endswith("AND id:[8 TO *]")
    assert Shard.from_json(shards[2].to_json()) == shards[2]


async def test_plan_covers_every_row_once_with_a_count_per_month() -> None:
    table: dict[dt.date, list[str]] = {}
    day = dt.date(2019, 1, 1)
    sizes = [0, 30, 5, 250, 90, 0, 1000, 40] * 8  # some months far above the shard size
    for size in sizes:
        table[day] = ids(day, size)
        day += dt.timedelta(days=1)
    last = day - dt.timedelta(days=1)
    counter = TableCounter(table)
    planner = Planner(counter, DEFAULT_DATE_TEMPLATE, limits(100))
    shards = await planner.plan(dt.date(2019, 1, 1), last)

    # The range once and each month once: the pieces of a large month are not counted.
    assert counter.calls == 1 + len(month_spans(dt.date(2019, 1, 1), last))
    all_ids = sorted(i for v in table.values() for i in v)
    covered = []
    for shard in shards:
        assert shard.expected <= 100, shard  # the estimate fits ...
        assert shard.first.month == shard.last.month  # never crosses a partition
        rows = [
            i
            for d, v in table.items()
            if shard.first <= d <= shard.last
            for i in v
            if (shard.id_low or "") <= i and (shard.id_high is None or i < shard.id_high)
        ]
        assert len(rows) <= 100, shard  # ... and so, with room for chance, do the rows
        covered.extend(rows)
    assert sorted(covered) == all_ids  # every id in exactly one shard
    assert any(s.has_id_range for s in shards)


async def test_counts_that_do_not_add_up_stop_the_plan_naming_the_range() -> None:
    day = dt.date(2019, 1, 1)
    table = {day + dt.timedelta(days=i): ids(day, 30) for i in range(59)}
    planner = Planner(TableCounter(table, drift=5), DEFAULT_DATE_TEMPLATE, limits(100))
    with pytest.raises(CountsDisagree, match=r"2019-01-01\.\.2019-02-28"):
        await planner.plan(dt.date(2019, 1, 1), dt.date(2019, 2, 28))
    # A range of several months is halved, and both halves must add up to it.
    root = Shard(dt.date(2019, 1, 1), dt.date(2019, 2, 28)).with_expected(30 * 59 + 5)
    with pytest.raises(CountsDisagree, match="its two halves"):
        await planner.refine(root)


async def test_a_range_of_months_is_halved_with_both_halves_counted() -> None:
    day = dt.date(2019, 1, 1)
    table = {day + dt.timedelta(days=i): ids(day + dt.timedelta(days=i), 3) for i in range(120)}
    counter = TableCounter(table)
    planner = Planner(counter, DEFAULT_DATE_TEMPLATE, limits(100))
    root = Shard(day, dt.date(2019, 4, 30)).with_expected(360)
    shards = await planner.refine(root)
    assert sum(s.expected for s in shards) == 360
    assert all(s.first.month == s.last.month for s in shards)


@pytest.mark.parametrize("first_day", [dt.date(2018, 6, 1), dt.date(2011, 10, 19)])
async def test_probe_finds_the_earliest_day(first_day: dt.date) -> None:
    counter = TableCounter({first_day: ids(first_day, 3), dt.date(2020, 1, 1): ids(first_day, 2)})
    planner = Planner(counter, DEFAULT_DATE_TEMPLATE, limits(100))
    assert await planner.probe_first_day(dt.date(2026, 1, 1)) == first_day
    assert counter.calls < 25


async def test_probe_of_an_empty_service_is_none() -> None:
    planner = Planner(TableCounter({}), DEFAULT_DATE_TEMPLATE, limits(100))
    assert await planner.probe_first_day(dt.date(2026, 1, 1)) is None
