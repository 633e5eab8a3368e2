"""Plan: split a date range into shards that each fit what the service allows.

The planner adapts shards to the data with as few count queries as the proofs allow (under
the real rate limit every request is time):

- the range is counted once, and each calendar month once; the months must add up to the
  range (``CountsDisagree`` otherwise: a silent loss is never planned);
- a month that fits ``limits.shard_size`` is one shard; a larger one is cut by ``id`` range
  into pieces of about the same size, *without* counting them: ids are uniform hex, so the
  pieces hold ~equal shares, and each piece's first page tells its real ``numFound`` anyway.
  A piece that turns out too large is split again at fetch time; the pieces of a month must
  add up to the month (checked by the harvest's closing check, per month);
- a range of several months that is too large (refresh's changed rows) is halved at a month
  boundary, both halves counted and checked against the whole.

Shards never cross a month, so every shard lands in exactly one ``year=/month=`` partition.
Shards and their keys are ``harvester.storage.shard``'s; the limits (``service.Limits``) are learned
and may shrink during a run. The planner knows nothing of HTTP beyond the ``Counter``
protocol, and nothing of files.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import math
from collections.abc import Sequence
from typing import Protocol

from harvester.errors import CountsDisagree
from harvester.service.profile import Limits
from harvester.storage.shard import EARLIEST_PROBE, Shard, month_spans

ID_SPACE_DIGITS = 32  # ids are 32 hex digits: no id range is ever cut finer than that


# Steps of the id space a piece spans at least when a range is cut (``id_bounds``).
EQUAL_SHARES = 64


class Counter(Protocol):
    """What the planner needs from the API: how many rows match a query."""

    async def count(self, criteria: str) -> int: ...


def id_bounds(low: str, high: str | None, pieces: int) -> list[str]:
    """``pieces + 1`` ascending hex bounds cutting ``[low, high)`` into equal shares (``high``
    None = the end of the id space; the last bound is then ``""``, meaning "no bound").

    Trailing zeros are dropped because, for fixed-length 32-hex ids, ``id >= "10"`` and
    ``id >= "1"`` select the same rows; it keeps keys short and readable. The bounds have
    digits enough for ``EQUAL_SHARES`` steps a piece, so the pieces' shares differ by
    under 2%: with only as many steps as pieces, 11 pieces of 16 one-digit steps were 6
    of one step and 5 of two, and each of those 5 overflowed its window and was split
    again at fetch time (a 10 M harvest at 5,000-row pages made 1,537 shards for 1,056
    planned, each with a part-full last page: 1.88 requests a page).
    """
    width = max(len(low), len(high or ""), 1)
    while True:
        a = int(low.ljust(width, "0"), 16)
        b = int(high.ljust(width, "0"), 16) if high else 16**width
        if b - a >= pieces * EQUAL_SHARES or width >= ID_SPACE_DIGITS:
            break
        width += 1
    if b - a < pieces:
        raise RuntimeError(f"cannot cut ids [{low}, {high}) into {pieces} pieces")
    cuts = [a + (b - a) * i // pieces for i in range(1, pieces)]
    inner = [format(c, f"0{width}x").rstrip("0") or "0" for c in cuts]
    return [low, *inner, high or ""]


def split_hex(low: str, high: str | None) -> str:
    """The midpoint between two hex prefixes (``high`` exclusive, None = end of id space)."""
    return id_bounds(low, high, 2)[1]


class Planner:
    """Turns a date range into shards no larger than ``limits.shard_size`` rows."""

    def __init__(self, counter: Counter, date_template: str, limits: Limits) -> None:
        self._counter = counter
        self._template = date_template
        self._limits = limits

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
        whole, *months = await self._count_all(
            [Shard(first, last), *(Shard(a, b) for a, b in month_spans(first, last))]
        )
        await self._check_adds_up(whole, months, "its months")
        shards: list[Shard] = []
        for month in months:
            shards.extend(await self.refine(month))
        return shards

    async def refine(self, shard: Shard) -> list[Shard]:
        """Split a counted shard until every piece fits; a fitting shard comes back as is."""
        if shard.expected <= self._limits.shard_size or shard.undated:
            return [shard]
        months = month_spans(shard.first, shard.last)
        if len(months) > 1:
            return await self._split_months(shard, months)
        return self._split_ids(shard)

    async def _check_adds_up(self, whole: Shard, parts: list[Shard], what: str) -> None:
        """The parts' counts must add up to the whole's; one recount of the whole forgives
        an index that moved in between, a second disagreement is the service's."""
        total = sum(p.expected for p in parts)
        if total == whole.expected:
            return
        again = (await self._count(whole)).expected
        if again != total:
            raise CountsDisagree(
                f"the service's counts do not add up for {whole.key}: the range counts"
                f" {again}, {what} {total}; refusing to plan a silent loss"
            )

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
        await self._check_adds_up(shard, halves, "its two halves")
        out: list[Shard] = []
        for half in halves:
            if half.expected > 0:
                out.extend(await self.refine(half))
        return out

    def _split_ids(self, shard: Shard) -> list[Shard]:
        """Cut a one-month shard by id range into pieces of about ``target`` rows, uncounted:
        each piece's size is an estimate until its first page says."""
        size = self._limits.shard_size
        # Room for chance: a piece of n uniform ids varies by ~sqrt(n); 4 of those rarely
        # overflow, and a piece that does is split again when its first page says so.
        target = max(1, int(size - 4 * math.sqrt(size)))
        pieces = math.ceil(shard.expected / target)
        bounds = id_bounds(shard.id_low or "0", shard.id_high, pieces)
        # Estimates that add up to the count they share (the plan's totals stay exact).
        base, extra = divmod(shard.expected, pieces)
        return [
            shard.narrowed(shard.first, shard.last, low, high or None).with_expected(
                base + (1 if i < extra else 0)
            )
            for i, (low, high) in enumerate(itertools.pairwise(bounds))
        ]
