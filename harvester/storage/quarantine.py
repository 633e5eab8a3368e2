"""Quarantine: rows that could not be decoded. This module writes them, supersedes them and
counts them, by one rule, for refresh, verify and status alike.

**Writing.** A shard's bad rows go to one file of its own (``HarvestState.quarantine_path``),
each line ``{"reason", "source", "doc"}`` with the row as served; a refresh keeps its staging
areas' files under names of its own run (``promote``).

**One rule for counting.** The service counts a quarantined row in its day, but the lake's
files do not hold it, so reconciliation adds these counts to the files' before comparing. A
row is counted once however many quarantine files hold it (fetching a day again
re-quarantines its bad rows), in its newest version when it has an id (a modified row is
quarantined again as a new version); a row without an id is one row per distinct content.

A row whose own ``submissionDate`` cannot be read still has a day in the service: the
shard that fetched it says which. A one-day shard names the day. A shard of several days
(never more than one month) only bounds it: such a row is "floating". It is counted on the
shard's first day, which keeps month totals right, and ``settle`` moves it to the day of
that shard's range where the service has a row the lake lacks, once days are compared.
Rows fetched by no date shard (the undated shard) are in no day the service counts.

**Superseding.** Fetching a day again whole quarantines whatever is still bad there, so the
rows quarantined earlier for that day (by the rule above) are dropped (``supersede_days``).
Otherwise quarantine files are only added to, so a quarantined row the service has since
deleted can still be in them. A floating row that no day lacks is such a row and is
dropped; a row with a known day keeps being counted there until its day is fetched again.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from harvester.storage.shard import Shard
from harvester.storage.state import HarvestState, StageName

Span = tuple[dt.date, dt.date]


@dataclass
class QuarantineCounts:
    rows: int = 0  # distinct quarantined rows
    per_day: dict[dt.date, int] = field(default_factory=dict)
    per_day_since: dict[dt.date, int] = field(default_factory=dict)  # createDateTime >= since
    floating: dict[Span, int] = field(default_factory=dict)  # rows known by shard range only
    floating_since: dict[Span, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)  # kind of reason -> distinct rows

    def days(self, recent: bool = False) -> tuple[dict[dt.date, int], dict[Span, int]]:
        """Rows per day with the floating ones on their range's first day, and the ranges."""
        per_day, floating = (
            (self.per_day_since, self.floating_since) if recent else (self.per_day, self.floating)
        )
        out = dict(per_day)
        for (first, _), n in floating.items():
            out[first] = out.get(first, 0) + n
        return out, floating


# -- writing and superseding ----------------------------------------------------------------
def write(state: HarvestState, shard: Shard, rows: list[dict[str, Any]]) -> None:
    """A shard's quarantined rows (``QuarantinedRow.to_json``), replacing what the shard had."""
    path = state.quarantine_path(shard)
    if rows:
        state.lake.write_bytes(path, b"".join(orjson.dumps(r) + b"\n" for r in rows))
    else:
        state.lake.delete(path)


def promote(state: HarvestState, stage: HarvestState, run_id: str, name: StageName) -> None:
    """Keep a refresh staging area's quarantine files in the lake, under the run's names."""
    for path in stage.quarantine_files():
        target = state.promoted_quarantine_path(run_id, name, path)
        state.lake.write_bytes(target, stage.lake.read_bytes(path))


def supersede_days(state: HarvestState, days: set[dt.date], run_id: str) -> None:
    """Forget rows quarantined for ``days`` before the run ``run_id`` fetched them again
    whole: that fetch quarantined whatever is still bad there (the files ``promote`` names
    for the run are kept). A row's day is the one ``count`` gives it."""
    if not days:
        return
    keep = state.promoted_prefix(run_id)
    for path in state.quarantine_files():
        if path.rsplit("/", 1)[-1].startswith(keep):
            continue
        lines = [line for line in state.lake.read_bytes(path).splitlines() if line.strip()]
        kept = [line for line in lines if _entry_day(orjson.loads(line)) not in days]
        if len(kept) == len(lines):
            continue
        if kept:
            state.lake.write_bytes(path, b"".join(line + b"\n" for line in kept))
        else:
            state.lake.delete(path)


# -- the one counting rule -----------------------------------------------------------------
def _doc(entry: dict[str, Any]) -> dict[str, Any]:
    doc = entry.get("doc")
    return doc if isinstance(doc, dict) else {"value": doc}


def _shard_span(source: str) -> Span | None:
    """The day range of the shard a row came from (None: not a date shard)."""
    try:
        return Shard.parse_key(source).span
    except ValueError:
        return None


def _span(doc: dict[str, Any], sources: set[str]) -> Span | None:
    """The row's own mail date; else the narrowest day range of the shards that fetched it."""
    day = _day(doc.get("submissionDate")) if "submissionDate" in doc else None
    if day is not None:
        return day, day
    spans = [span for source in sources if (span := _shard_span(source)) is not None]
    return min(spans, key=lambda s: s[1] - s[0]) if spans else None


def _entry_day(entry: dict[str, Any]) -> dt.date | None:
    """The one day a quarantine line belongs to, when it has one (not a floating row)."""
    span = _span(_doc(entry), {str(entry.get("source", ""))})
    return span[0] if span is not None and span[0] == span[1] else None


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


def count(state: HarvestState, since: dt.datetime | None = None) -> QuarantineCounts:
    """The lake's quarantined rows by the rule above; ``*_since`` count those created or
    changed at or after ``since``."""
    rows: dict[Any, tuple[dict[str, Any], str, set[str]]] = {}
    for raw in state.lake.read_many(state.quarantine_files()):
        for line in raw.splitlines():
            if not line.strip():
                continue
            entry = orjson.loads(line)
            doc = _doc(entry)
            row_id = doc.get("id")
            key = (
                row_id
                if isinstance(row_id, str) and row_id
                else orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
            )
            kept, reason, sources = rows.get(key, (doc, "", set()))
            if str(doc.get("createDateTime") or "") >= str(kept.get("createDateTime") or ""):
                # The newest version of the row (ISO strings sort by time).
                kept, reason = doc, str(entry.get("reason", "?"))
            sources.add(str(entry.get("source", "")))
            rows[key] = (kept, reason, sources)
    counts = QuarantineCounts(rows=len(rows))
    # "bad submissionDate: '2019-13-01'" -> "bad submissionDate": the kind, not the value.
    counts.reasons = dict(Counter(reason.split(":", 1)[0] for _, reason, _ in rows.values()))
    for doc, _, sources in rows.values():
        span = _span(doc, sources)
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
