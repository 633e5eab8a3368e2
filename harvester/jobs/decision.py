"""The refresh decision: what a refresh will fetch, as pure functions of facts and counts.

``refresh`` acts on these decisions, ``plan`` prints them and ``verify --repair`` reuses
them; none of them decides anything itself, so what ``plan`` shows is what the refresh
then does (as long as the source does not change in between).

**The changed rows.** A refresh fetches every row stamped (``createDateTime``) at or after
``since`` (the watermark minus the lookback). ``createDateTime`` is a batch stamp: one load
stamps thousands of rows with one second, and a reload stamps the whole dataset. Through
its lookback, a refresh re-reads the stamps of the loads it fetched last time; after a
reload, that is the whole lake again. So the lake's own stamps are facts too
(``StampFacts``: rows per stamp at or after ``since``), and a stamp the lake holds at least a
page of rows of is **excluded** from the fetch when the service holds no more rows with it
than the lake does (``decide_exclusions``). That is sound because a row that changes is
stamped anew: every row the service still has with an old load's stamp is that load's row
as the lake fetched it, and the rows that left it are changed (stamped later: fetched) or
deleted (found by reconciliation's counts). What it cannot see: rows of that load the lake
never got (they became visible after it was fetched) *and* as many of its rows changed or
deleted since; reconciliation's day counts still see such a row unless a deletion on the
same day hides it, which only ``verify --deep`` can find.

The excluded stamps are cut out of the query with exclusive bounds (``ChangedScope``),
and the service is made to prove it reads the query so: the count of the narrowed query
must equal the whole window's count minus the excluded stamps' counts, or nothing is
excluded (``decide_changed``). What is left is what changed since the lake was last made
equal to the source. When it is at least ``reload_share`` of the lake's rows, the source
has reloaded (many rows re-stamped at once) and the run is a **reload**: the coverage is
fetched again month by month instead (``reload_months``).

**Reconciliation** (after the changed rows are merged) compares rows per day with the
service's counts; ``decide_repairs`` turns the differing days into the days fetched again
now and the *suspects*: days that would lose all or most of their rows. A suspect is
counted again later in the same run (``confirm_drops``): when both counts agree, its rows go
in that run; only when the service's own counts disagree does it wait for a later run.

Counts cannot see a modification (a row changed in place keeps every count); stamps can,
which is why modified rows are found by the changed-rows fetch and never by counts.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from harvester.storage.shard import Shard
from harvester.storage.state import PendingDrop

DayDifferences = dict[dt.date, tuple[int, int]]  # day -> (lake, service)


# -- the changed rows -------------------------------------------------------------------
@dataclass(frozen=True)
class StampFacts:
    """What the lake's committed files hold stamped at or after ``since``: rows per stamp
    (ISO, seconds), and its rows in all. Read from the files, no request."""

    since: str
    per_stamp: Mapping[str, int]
    lake_rows: int

    def bulk(self, at_least: int) -> list[str]:
        """The stamps holding at least ``at_least`` rows: loads worth a count to skip."""
        return sorted(s for s, n in self.per_stamp.items() if n >= max(1, at_least))


@dataclass(frozen=True)
class ChangedScope:
    """Rows stamped at or after ``since``, less the rows of the ``excluded`` stamps: the
    query text is ``stamp_form``'s (proven on the service), cut with exclusive bounds."""

    since: str
    excluded: tuple[str, ...] = ()

    def query(self, stamp_form: str) -> str:
        def bound(stamp: str) -> str:
            return stamp_form.format(stamp=stamp)

        cuts = [s for s in sorted(set(self.excluded)) if s >= self.since]
        if not cuts:
            return f"createDateTime:[{bound(self.since)} TO *]"
        parts = []
        if cuts[0] > self.since:
            parts.append(f"createDateTime:[{bound(self.since)} TO {bound(cuts[0])}}}")
        parts.extend(
            f"createDateTime:{{{bound(a)} TO {bound(b)}}}" for a, b in itertools.pairwise(cuts)
        )
        parts.append(f"createDateTime:{{{bound(cuts[-1])} TO *]")
        return " OR ".join(parts)

    def shard(self, coverage: tuple[dt.date, dt.date], stamp_form: str) -> Shard:
        """The one root shard of the coverage's rows in this scope (split by the planner)."""
        return Shard(coverage[0], coverage[1], scope=self.query(stamp_form))


def decide_exclusions(facts: StampFacts, service_counts: Mapping[str, int]) -> tuple[str, ...]:
    """The counted stamps the changed-rows fetch may skip: those the service holds no more
    rows of than the lake (the module docstring says why that is sound)."""
    return tuple(s for s, n in sorted(service_counts.items()) if n <= facts.per_stamp.get(s, 0))


@dataclass(frozen=True)
class ChangedDecision:
    """What a refresh fetches as changed rows, or that it reloads instead."""

    scope: ChangedScope
    changed: int  # rows in ``scope`` (the narrowed query's count)
    window: int  # rows stamped at or after since (the whole window's count)
    lake_rows: int
    reload_share: float
    excluded_rows: int = 0  # the service's rows of the excluded stamps
    notes: tuple[str, ...] = ()

    @property
    def is_reload(self) -> bool:
        """The changed rows are at least ``reload_share`` of the lake's (a lake of no rows
        never reloads: its first refresh fetches everything either way)."""
        return self.lake_rows > 0 and self.changed >= self.reload_share * self.lake_rows


def decide_changed(
    since: str,
    window: int,
    excluded: tuple[str, ...],
    excluded_counts: Mapping[str, int],
    narrowed: int | None,
    lake_rows: int,
    reload_share: float,
) -> ChangedDecision:
    """The changed-rows fetch: the window less the excluded stamps when the service's count
    of the narrowed query (``narrowed``) proves it reads the exclusive bounds as meant."""
    skipped = sum(excluded_counts[s] for s in excluded)
    if excluded and narrowed == window - skipped:
        return ChangedDecision(
            ChangedScope(since, excluded), narrowed, window, lake_rows, reload_share, skipped
        )
    notes: tuple[str, ...] = ()
    if excluded:
        notes = (
            f"the service counted {narrowed} rows for the window less {len(excluded)} loads"
            f" the lake holds, not {window} - {skipped}: fetching the whole window",
        )
    return ChangedDecision(ChangedScope(since), window, window, lake_rows, reload_share, 0, notes)


# -- a reload, month by month -------------------------------------------------------------
@dataclass(frozen=True)
class MonthVerdict:
    """What a reload does with one month: ``fetch`` it whole, or skip it as ``current``."""

    fetch: bool
    why: str


def month_verdict(changed: int, total: int | None, lake_rows: int) -> MonthVerdict:
    """A month with no changed rows (``changed``, the month's count in the run's scope) and
    as many rows as the lake holds (``total``, counted only when ``changed`` is 0) is
    current; any other is fetched whole. Changed rows alone decide nothing else: counts
    cannot tell a row changed in place from the old one."""
    if changed:
        return MonthVerdict(True, f"{changed:,} rows changed")
    if total is None:
        raise ValueError("a month without changed rows needs its total count")
    if total != lake_rows:
        return MonthVerdict(True, f"lake has {lake_rows:,} rows, service {total:,}")
    return MonthVerdict(False, "current")


# -- reconciliation ------------------------------------------------------------------------
def is_suspect(lake: int, service: int, drop_share: float) -> bool:
    """A day that would lose all, or more than ``drop_share``, of its rows."""
    return service < lake and (service == 0 or (lake - service) / lake > drop_share)


@dataclass
class Repairs:
    """What reconciliation does with the days that differ."""

    repair: dict[str, str] = field(default_factory=dict)  # ISO day -> why, fetched now
    suspects: dict[str, list[int]] = field(default_factory=dict)  # ISO day -> [lake, service]
    counts: dict[str, int] = field(default_factory=dict)  # a repair day's service count


def decide_repairs(
    differing: DayDifferences, pending: Mapping[str, PendingDrop], drop_share: float
) -> Repairs:
    """Days that differ are fetched again now, except suspects, which are counted again
    later in the run (``confirm_drops``). A suspect an earlier run already held with the
    same service count is confirmed by that count, and fetched now."""
    out = Repairs()
    for day, (lake, service) in sorted(differing.items()):
        key = day.isoformat()
        why = f"lake has {lake} rows, service {service}"
        if not is_suspect(lake, service, drop_share):
            out.repair[key] = why
        elif (earlier := pending.get(key)) is not None and earlier.service == service:
            out.repair[key] = f"{why} (confirmed: counted {service} since {earlier.seen_at})"
        else:
            out.suspects[key] = [lake, service]
            continue
        out.counts[key] = service
    return out


@dataclass
class Confirmed:
    """The suspects after their further counts."""

    repair: dict[str, str] = field(default_factory=dict)  # the counts agree: fetched now
    held: dict[str, str] = field(default_factory=dict)  # the counts disagree: kept for now
    pending: dict[str, PendingDrop] = field(default_factory=dict)  # counted again next run
    counts: dict[str, int] = field(default_factory=dict)  # a repaired day's settled count


# A suspect is counted at most this many times in one run (reconciliation's count included).
MAX_COUNTS = 3


def settled(counts: list[int]) -> int | None:
    """A day's count once two of its counts agree (None: no two did). Not "two in a row": a
    transient empty answer can come at any asking, so 2, 0, 2 is settled at 2."""
    for i, later in enumerate(counts):
        if later in counts[:i]:
            return later
    return None


def needs_recount(counts: list[int]) -> bool:
    """Whether a suspect is counted once more: not settled, and counted fewer than
    ``MAX_COUNTS`` times."""
    return settled(counts) is None and len(counts) < MAX_COUNTS


def confirm_drops(
    suspects: Mapping[str, list[int]],
    recounts: Mapping[str, list[int]],
    run_id: str,
    now: str,
    *,
    fetched: bool = False,
) -> Confirmed:
    """Each suspect (``[lake, service]``) with its further counts: when two counts agree
    the day is settled, and fetched again unless it now equals the lake (the first
    answer was a transient empty one); when no two agree its rows stay until a later
    run counts the same (``PendingDrop``). ``fetched``: the first number is what a fetch
    brought (a reload's month), so the day is replaced only when the counts settle on it."""
    out = Confirmed()
    for key, (lake, first) in sorted(suspects.items()):
        counts = [first, *recounts.get(key, [])]
        value = settled(counts)
        shown = ", ".join(str(n) for n in counts)
        if value == lake:
            continue  # the first answer was the odd one: nothing differs
        if fetched and value is not None and value != first:
            value = None  # the fetch and the counts disagree: neither is believed yet
        if value is None:
            out.held[key] = (
                f"lake has {lake} rows, service counted {shown}: kept until a later refresh"
                " counts the same"
            )
            out.pending[key] = PendingDrop(lake, counts[-1], now, run_id)
        else:
            out.repair[key] = f"lake has {lake} rows, service {value} (counted {shown})"
            out.counts[key] = value
    return out


# -- what it costs -------------------------------------------------------------------------
def pages(rows: int, page_size: int) -> int:
    """Requests to fetch ``rows`` rows at ``page_size`` a page."""
    return math.ceil(max(0, rows) / max(1, page_size))


def reload_requests(changed: int, lake_rows: int, months: int, page_size: int) -> int:
    """A reload's estimate: a page per ``page_size`` rows of the larger count, and two
    counts a month (changed rows, then rows in all or the shard's count)."""
    return pages(max(changed, lake_rows), page_size) + 2 * months
