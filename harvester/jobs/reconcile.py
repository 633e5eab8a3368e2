"""Reconciliation: compare the lake's rows per mail date with the service's counts.

Pure functions of the lake, the quarantine and count queries: they write nothing and report
nothing, so refresh (the days to repair), verify (every differing day) and plan (what a
refresh would fetch) ask the same questions the same way.

Months are counted first and days only within months that differ, so a mostly-equal range
costs about one request per month; a run of months the lake holds nothing of costs one
request while the service holds nothing there either, and a few more per month it holds
rows in (``count_months``: halving, not a count a month). Quarantined rows are counted by the service but are not
in the files, so they are added to the files' counts (``quarantine``'s one rule) before
comparing; otherwise a day holding one would differ for ever.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from harvester.jobs.planner import Counter
from harvester.storage import quarantine
from harvester.storage.commit import read_files
from harvester.storage.partition import Partition
from harvester.storage.shard import Shard, month_spans
from harvester.storage.state import HarvestState, PendingDrop
from harvester.storage.store import Lake

DayDifferences = dict[dt.date, tuple[int, int]]  # day -> (lake, service)


@dataclass(frozen=True)
class LakeRows:
    """The rows reconciliation counts: the lake's partitions, and per partition the
    ``columns`` (of ``id``, ``submissionDate``) of every row. The committed files
    (``committed``), or those with a refresh's staged changed rows upserted
    (``refresh.Refresher``: its days are counted against what the lake will hold once the
    changed rows are merged, which it merges in the same pass as the days)."""

    partitions: tuple[str, ...]
    read: Callable[[str, list[str]], pa.Table]

    @classmethod
    def committed(cls, lake: Lake, committed: Mapping[str, list[str]]) -> LakeRows:
        def read(partition: str, columns: list[str]) -> pa.Table:
            return read_files(lake, committed.get(partition, []), columns=columns)

        return cls(tuple(committed), read)


def day_counts(rows: LakeRows, partitions: Iterable[str] | None = None) -> dict[dt.date, int]:
    """Rows per mail date in ``partitions`` (default: all) of ``rows``."""
    counts: dict[dt.date, int] = {}
    for partition in rows.partitions if partitions is None else partitions:
        table = rows.read(partition, ["submissionDate"])
        if table.num_rows == 0:
            continue
        values = pc.value_counts(table.column("submissionDate"))
        for item in values.to_pylist():
            counts[item["values"]] = counts.get(item["values"], 0) + int(item["counts"])
    return counts


def newest_day(rows: LakeRows) -> dt.date | None:
    """The newest mail date of ``rows``, reading only the newest non-empty partition."""
    for partition in sorted(rows.partitions, key=Partition.parse, reverse=True):
        days = day_counts(rows, [partition])
        if days:
            return max(days)
    return None


async def differing_days(
    counter: Counter,
    date_template: str,
    lake_days: Mapping[dt.date, int],
    first: dt.date,
    last: dt.date,
    scope: str | None = None,
) -> DayDifferences:
    """Days of [first, last] whose lake row count differs from the service's, as (lake,
    service); ``scope`` narrows both sides' question (verify's changed rows)."""

    async def count(a: dt.date, b: dt.date) -> int:
        return await counter.count(Shard(a, b, scope=scope).criteria(date_template))

    months = month_spans(first, last)
    by_month: dict[tuple[int, int], int] = {}
    for day, n in lake_days.items():
        if first <= day <= last:
            by_month[(day.year, day.month)] = by_month.get((day.year, day.month), 0) + n
    lake_months = [by_month.get((a.year, a.month), 0) for a, _ in months]
    month_counts: list[int | None] = [None] * len(months)
    # Runs of months the lake holds nothing of (a coverage open to today ends in some, an
    # open start begins with decades of them) are counted by halving (``count_months``).
    for i, j in (r for r in _runs_of_zero(lake_months) if r[1] - r[0] > 1):
        month_counts[i:j] = await count_months(count, months[i:j])
    unknown = [k for k, n in enumerate(month_counts) if n is None]
    for k, n in zip(
        unknown, await asyncio.gather(*(count(*months[k]) for k in unknown)), strict=True
    ):
        month_counts[k] = n
    differing: DayDifferences = {}
    for (a, b), lake, service in zip(months, lake_months, month_counts, strict=True):
        if lake == service:
            continue
        days = Shard(a, b).days
        day_service = await asyncio.gather(*(count(d, d) for d in days))
        for day, n in zip(days, day_service, strict=True):
            if lake_days.get(day, 0) != n:
                differing[day] = (lake_days.get(day, 0), n)
    return differing


async def count_months(
    count: Callable[[dt.date, dt.date], Awaitable[int]],
    months: Sequence[tuple[dt.date, dt.date]],
) -> list[int]:
    """The service's count of each of consecutive ``months``, found by halving: a stretch
    it holds nothing of costs one count, each month it holds rows in about two counts per
    halving (``2 * log2(len(months))``), where counting month by month would cost one count
    a month: 1,500 of them for an open start before a lake of a few years."""
    total = await count(months[0][0], months[-1][1])
    if total == 0:
        return [0] * len(months)
    if len(months) == 1:
        return [total]
    middle = len(months) // 2
    low, high = await asyncio.gather(
        count_months(count, months[:middle]), count_months(count, months[middle:])
    )
    return [*low, *high]


def _runs_of_zero(values: list[int]) -> list[tuple[int, int]]:
    """``[i, j)`` index ranges of consecutive zeros in ``values``."""
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for k, value in enumerate([*values, 1]):
        if value == 0 and start is None:
            start = k
        elif value != 0 and start is not None:
            runs.append((start, k))
            start = None
    return runs


@dataclass
class Reconciliation:
    """The days of a refresh's reconcile window whose counts differ."""

    first: dt.date
    last: dt.date
    differing: DayDifferences
    quarantined: dict[str, int]  # ISO day -> quarantined rows counted on it (in the window)


async def differing_in_window(
    state: HarvestState,
    rows: LakeRows,
    counter: Counter,
    date_template: str,
    first: dt.date,
    last: dt.date,
) -> Reconciliation:
    """The days of ``[first, last]`` whose lake count (files plus quarantine) differs from
    the service's. Only the partitions inside the window are read, not the whole lake."""
    counts = await asyncio.to_thread(quarantine.count, state)
    quarantined, floating = counts.days()
    in_window = [
        p
        for p in rows.partitions
        if Partition.of(first) <= Partition.parse(p) <= Partition.of(last)
    ]
    lake_days = await asyncio.to_thread(day_counts, rows, in_window)
    for day, n in quarantined.items():
        lake_days[day] = lake_days.get(day, 0) + n
    differing = quarantine.settle(
        await differing_days(counter, date_template, lake_days, first, last), floating
    )
    return Reconciliation(
        first,
        last,
        differing,
        {d.isoformat(): n for d, n in sorted(quarantined.items()) if first <= d <= last},
    )


def window(
    rows: LakeRows,
    coverage_first: dt.date,
    coverage_last: dt.date,
    reconcile_days: int,
) -> tuple[dt.date, dt.date]:
    """The days a refresh reconciles: the whole coverage, or (``reconcile_days`` > 0) its
    last that many days back from the newest day the lake holds."""
    if reconcile_days == 0:
        return coverage_first, coverage_last
    newest = newest_day(rows) or coverage_last
    newest = min(newest, coverage_last)
    return max(coverage_first, newest - dt.timedelta(days=reconcile_days - 1)), coverage_last


@dataclass
class Verdict:
    """What reconciliation does with the days that differ."""

    repair: dict[str, str]  # ISO day -> why it is fetched again now
    held: dict[str, str]  # ISO day -> why its rows are kept for now
    pending: dict[str, PendingDrop]  # what the next refresh checks again


def hold_drops(
    differing: DayDifferences,
    pending: Mapping[str, PendingDrop],
    drop_share: float,
    run_id: str,
    now: str,
) -> Verdict:
    """A day whose count fell to 0, or by more than ``drop_share`` of its rows, is fetched
    again (and its rows replaced) only when a later refresh counts the same: a transient
    ``404`` or an empty replica must not delete a day. Other differences are repaired now."""
    verdict = Verdict({}, {}, {})
    for day, (lake, service) in sorted(differing.items()):
        key = day.isoformat()
        why = f"lake has {lake} rows, service {service}"
        suspicious = service < lake and (service == 0 or (lake - service) / lake > drop_share)
        if not suspicious:
            verdict.repair[key] = why
            continue
        earlier = pending.get(key)
        if earlier is not None and earlier.run_id != run_id and earlier.service == service:
            verdict.repair[key] = f"{why} (confirmed: counted {service} since {earlier.seen_at})"
            continue
        if earlier is not None and earlier.run_id == run_id:
            verdict.pending[key] = earlier  # a resumed run: the same count, not a later one
        else:
            verdict.pending[key] = PendingDrop(lake, service, now, run_id)
        verdict.held[key] = f"{why}: kept until a later refresh counts the same"
    return verdict
