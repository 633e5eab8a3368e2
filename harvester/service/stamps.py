"""The watermark: the newest ``createDateTime`` the service holds, asked before fetching.

A watermark taken from what a run fetched runs ahead of the data: a row changed during a
long harvest, in a shard fetched earlier, carries a stamp below the newest fetched one and
is never looked for again. So the watermark of a run is the newest stamp the service
reports *when the run starts*: every row changed after that has a newer stamp and is found
by the next refresh. It is found with count queries only (no sort is needed): first whether
anything is stamped in the future beyond a tolerance (such rows are reported and never
become the watermark: one row stamped ``9999-12-31`` would blind every later refresh), then
a bisection over ``[low, now + tolerance]`` to the day: about 16 counts from 1900 (a
harvest), 2 or 3 from the last watermark (a refresh). A day is precise enough: the result
is rounded *down*, so it can only ask for a little more than needed, never miss a row, and
refresh looks back whole days (``lookback``) from it anyway.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Protocol

from harvester.storage.shard import EARLIEST_PROBE

log = logging.getLogger("harvester.service.stamps")
PRECISION = dt.timedelta(days=1)


class Counter(Protocol):
    async def count(self, criteria: str) -> int: ...


@dataclass(frozen=True)
class Newest:
    """The newest stamp at or below the ceiling (None: nothing there), and how many rows
    lie beyond the ceiling (the future, by more than the tolerance)."""

    stamp: str | None
    ceiling: str
    beyond: int


def _iso(moment: dt.datetime) -> str:
    return moment.replace(microsecond=0).isoformat()


def _between(stamp_form: str, low: dt.datetime, high: dt.datetime | None) -> str:
    upper = "*" if high is None else stamp_form.format(stamp=_iso(high))
    return f"createDateTime:[{stamp_form.format(stamp=_iso(low))} TO {upper}]"


async def newest_stamp(
    counter: Counter,
    stamp_form: str,
    *,
    low: str | None,
    tolerance: dt.timedelta,
    now: dt.datetime | None = None,
) -> Newest:
    """The newest ``createDateTime`` in ``[low, now + tolerance]`` (``low`` None: 1900)."""
    moment = (now or dt.datetime.now(dt.UTC)).replace(tzinfo=None)
    ceiling = moment + tolerance
    beyond = await counter.count(_between(stamp_form, ceiling + dt.timedelta(seconds=1), None))
    if beyond:
        log.warning("%d rows are stamped after %s (the future): never a watermark", beyond, ceiling)
    start = (
        dt.datetime.fromisoformat(low) if low else dt.datetime.combine(EARLIEST_PROBE, dt.time())
    )
    if start > ceiling or await counter.count(_between(stamp_form, start, ceiling)) == 0:
        return Newest(None, _iso(ceiling), beyond)
    # Invariant: something is stamped in [lo, ceiling]; nothing at or after hi (unless hi is
    # still the ceiling). Halve to a day, then take lo: the newest stamp rounded down.
    lo, hi = start, ceiling
    while hi - lo > PRECISION:
        mid = (lo + (hi - lo) / 2).replace(microsecond=0)
        if await counter.count(_between(stamp_form, mid, ceiling)) > 0:
            lo = mid
        else:
            hi = mid
    return Newest(_iso(lo), _iso(ceiling), beyond)
