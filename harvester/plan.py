"""Plan: split a date range into shards that each fit inside the API's paging window.

A shard is a slice of the source defined by mail dates (one day, or several days within one
month) and optionally an ``id`` range. The planner adapts shards to the data with cheap
count queries: a month that holds more than ``shard_size`` rows is split into days (packed
back together while they fit), and a day that still holds too many is split by ``id`` range
(ids are uniform hex, so halving the range halves the rows). No shard ever needs a ``start``
beyond the window. Shards never cross a month, so every shard lands in exactly one
``year=/month=`` partition.

Shards and their keys are ``harvester.shard``'s. The planner knows nothing of HTTP beyond
the ``Counter`` protocol, and nothing of files.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Protocol

from harvester.shard import EARLIEST_PROBE, Shard, month_spans


class Counter(Protocol):
    """What the planner needs from the API: how many rows match a query."""

    async def count(self, criteria: str) -> int: ...


def split_hex(low: str, high: str | None) -> str:
    """The midpoint between two hex prefixes (``high`` exclusive, None = end of id space).

    Trailing zeros are dropped because, for fixed-length 32-hex ids, ``id >= "10"`` and
    ``id >= "1"`` select the same rows; it keeps keys short and readable.
    """
    width = max(len(low), len(high or ""), 1)
    while True:
        a = int(low.ljust(width, "0"), 16)
        b = int(high.ljust(width, "0"), 16) if high else 16**width
        mid = (a + b) // 2
        if mid > a:
            return format(mid, f"0{width}x").rstrip("0") or "0"
        width += 1


class Planner:
    """Turns a date range into shards no larger than ``shard_size`` rows."""

    def __init__(self, counter: Counter, date_template: str, shard_size: int) -> None:
        self._counter = counter
        self._template = date_template
        self._shard_size = shard_size

    async def _count(self, shard: Shard) -> Shard:
        return shard.with_expected(await self._counter.count(shard.criteria(self._template)))

    async def _count_all(self, shards: Sequence[Shard]) -> list[Shard]:
        return list(await asyncio.gather(*(self._count(s) for s in shards)))

    async def probe_first_day(self, last: dt.date) -> dt.date | None:
        """The earliest mail date with rows, by binary search over count queries (~15)."""
        if (await self._count(Shard(EARLIEST_PROBE, last))).expected == 0:
            return None
        low, high = EARLIEST_PROBE, last
        while low < high:
            mid = low + (high - low) // 2
            if (await self._count(Shard(EARLIEST_PROBE, mid))).expected > 0:
                high = mid
            else:
                low = mid + dt.timedelta(days=1)
        return low

    async def plan(self, first: dt.date, last: dt.date) -> list[Shard]:
        """Shards covering every day of [first, last], empty months included (as one shard
        each, so a later check notices rows that appear there)."""
        months = await self._count_all([Shard(a, b) for a, b in month_spans(first, last)])
        shards: list[Shard] = []
        for month in months:
            shards.extend(await self.refine(month))
        return shards

    async def refine(self, shard: Shard) -> list[Shard]:
        """Split a counted shard until every piece fits; a fitting shard comes back as is."""
        if shard.expected <= self._shard_size or shard.undated:
            return [shard]
        months = month_spans(shard.first, shard.last)
        if len(months) > 1:
            return await self._split_months(shard, months)
        if shard.first != shard.last:
            return await self._split_days(shard)
        return await self._split_ids(shard)

    async def _split_months(
        self, shard: Shard, months: list[tuple[dt.date, dt.date]]
    ) -> list[Shard]:
        """Halve a long range at a month boundary: a refresh over decades of mostly
        untouched months costs a few counts per changed month, not one per day."""
        middle = months[len(months) // 2][0]
        halves = await self._count_all(
            [
                shard.narrowed(shard.first, middle - dt.timedelta(days=1)),
                shard.narrowed(middle, shard.last),
            ]
        )
        out: list[Shard] = []
        for half in halves:
            if half.expected > 0:
                out.extend(await self.refine(half))
        return out

    async def _split_days(self, shard: Shard) -> list[Shard]:
        days = [
            shard.narrowed(shard.first + dt.timedelta(days=i), shard.first + dt.timedelta(days=i))
            for i in range((shard.last - shard.first).days + 1)
        ]
        counted = await self._count_all(days)
        shards: list[Shard] = []
        run: list[Shard] = []

        def close_run() -> None:
            if run:
                total = sum(d.expected for d in run)
                shards.append(shard.narrowed(run[0].first, run[-1].last).with_expected(total))
                run.clear()

        # Pack consecutive days while they fit: fewer, larger shards mean fewer files.
        for day in counted:
            if day.expected > self._shard_size:
                close_run()
                shards.extend(await self._split_ids(day))
            elif sum(d.expected for d in run) + day.expected > self._shard_size:
                close_run()
                run.append(day)
            else:
                run.append(day)
        close_run()
        return shards

    async def _split_ids(self, shard: Shard) -> list[Shard]:
        low = shard.id_low or "0"
        mid = split_hex(low, shard.id_high)
        if len(mid) > 32:  # cannot happen with 32-hex ids; guards against a runaway split
            raise RuntimeError(f"cannot split shard {shard.key} any further")
        left = await self._count(shard.narrowed(shard.first, shard.last, low, mid))
        # The right half's count follows from the parent's: one request per split, not two.
        # Should the index move in between, a wrong estimate is caught at fetch time (the
        # shard is split again) and by the closing check (every shard is counted again).
        right = shard.narrowed(shard.first, shard.last, mid, shard.id_high).with_expected(
            max(0, shard.expected - left.expected)
        )
        out: list[Shard] = []
        for half in (left, right):
            out.extend(await self.refine(half))
        return out
