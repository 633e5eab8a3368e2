"""Quarantined rows per mail date, attributed the way the service counts them.

The service counts a quarantined row in its day, but the lake's files do not hold it, so
``verify`` adds these counts to the files' before comparing. A row is counted once however
many quarantine files hold it (fetching a day again re-quarantines its bad rows), in its
newest version when it has an id (a modified row is quarantined again as a new version).

A row whose own ``submissionDate`` cannot be read still has a day in the service: the
shard that fetched it says which. A one-day shard names the day. A shard of several days
(never more than one month) only bounds it: such a row is "floating". It is counted on the
shard's first day, which keeps month totals right, and ``settle`` moves it to the day of
that shard's range where the service has a row the lake lacks, once days are compared.

Quarantine files are only ever added to, so a quarantined row the service has since
deleted is still in them. A floating row that no day lacks is such a row and is dropped; a
row with a known day keeps being counted there, and that day keeps differing by one.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from harvester.lake import Lake
from harvester.state import ROOT

# Shard keys (harvester.plan): "2019-07-15", "2019-07-01..2019-07-09", each maybe with
# "/id[0-8)"; the second date group is empty for a one-day shard.
_SHARD_KEY = re.compile(
    r"(\d{4}-\d{2}-\d{2})(?:\.\.(\d{4}-\d{2}-\d{2}))?(?:/id\[[0-9A-Za-z]*-[0-9A-Za-z]*\))?"
)
Span = tuple[dt.date, dt.date]


@dataclass
class QuarantineCounts:
    rows: int = 0  # distinct quarantined rows
    per_day: dict[dt.date, int] = field(default_factory=dict)
    per_day_since: dict[dt.date, int] = field(default_factory=dict)  # createDateTime >= since
    floating: dict[Span, int] = field(default_factory=dict)  # rows known by shard range only
    floating_since: dict[Span, int] = field(default_factory=dict)

    def days(self, recent: bool) -> tuple[dict[dt.date, int], dict[Span, int]]:
        """Rows per day with the floating ones on their range's first day, and the ranges."""
        per_day, floating = (
            (self.per_day_since, self.floating_since) if recent else (self.per_day, self.floating)
        )
        out = dict(per_day)
        for (first, _), n in floating.items():
            out[first] = out.get(first, 0) + n
        return out, floating


def _span(sources: set[str]) -> Span | None:
    """The narrowest day range the shards that fetched a row give it (None: no date shard)."""
    spans = []
    for source in sources:
        match = _SHARD_KEY.fullmatch(source)
        if match is not None:
            first = dt.date.fromisoformat(match[1])
            spans.append((first, dt.date.fromisoformat(match[2]) if match[2] else first))
    return min(spans, key=lambda s: s[1] - s[0]) if spans else None


def _day(value: Any) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _stamp(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(value)[:19])
    except ValueError:
        return None


def quarantine_counts(lake: Lake, since: dt.datetime | None) -> QuarantineCounts:
    rows: dict[Any, tuple[dict[str, Any], set[str]]] = {}
    paths = lake.list_files(f"{ROOT}/quarantine", suffix=".jsonl")
    for raw in lake.read_many(paths):
        for line in raw.splitlines():
            if not line.strip():
                continue
            entry = orjson.loads(line)
            doc = entry.get("doc")
            doc = doc if isinstance(doc, dict) else {"value": doc}
            row_id = doc.get("id")
            key = (
                row_id
                if isinstance(row_id, str) and row_id
                else orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
            )
            kept, sources = rows.get(key, (doc, set()))
            if str(doc.get("createDateTime") or "") >= str(kept.get("createDateTime") or ""):
                kept = doc  # the newest version of the row (ISO strings sort by time)
            sources.add(str(entry.get("source", "")))
            rows[key] = (kept, sources)
    counts = QuarantineCounts(rows=len(rows))
    for doc, sources in rows.values():
        day = _day(doc.get("submissionDate")) if "submissionDate" in doc else None
        span = (day, day) if day is not None else _span(sources)
        if span is None:
            continue  # no date and no date shard: the day queries never count it
        stamp = _stamp(doc.get("createDateTime"))
        recent = since is not None and stamp is not None and stamp >= since
        if span[0] == span[1]:
            counts.per_day[span[0]] = counts.per_day.get(span[0], 0) + 1
            if recent:
                counts.per_day_since[span[0]] = counts.per_day_since.get(span[0], 0) + 1
        else:
            counts.floating[span] = counts.floating.get(span, 0) + 1
            if recent:
                counts.floating_since[span] = counts.floating_since.get(span, 0) + 1
    return counts


def settle(
    differing: dict[dt.date, tuple[int, int]], floating: dict[Span, int]
) -> dict[dt.date, tuple[int, int]]:
    """Move floating rows from their range's first day (where ``QuarantineCounts.days``
    put them) to days of the range the lake is short of (dropping those no day lacks: the
    service deleted them), then drop days that now agree.

    ``differing`` maps day -> (lake, service) for the days that differ; a day of a range
    missing from it agrees already (or its month did: then nothing of it is listed)."""
    lake = {day: counts[0] for day, counts in differing.items()}
    for (first, last), n in sorted(floating.items()):
        if first not in lake:
            continue  # the first day agrees with the rows counted on it: they are there
        lake[first] -= n
        pool = n
        for day in sorted(d for d in lake if first <= d <= last):
            take = min(pool, max(0, differing[day][1] - lake[day]))
            lake[day] += take
            pool -= take
    return {d: (lake[d], differing[d][1]) for d in sorted(lake) if lake[d] != differing[d][1]}
