"""``harvester verify``: is the lake equal to the service? Name every difference; optionally
fetch the days that differ again.

Checks, in one read of the lake's ``id``, ``submissionDate`` and ``createDateTime`` columns
(``ops.scan``) plus count queries (about two per month of the range, and two per day of a
month that differs):

- rows per mail date (committed files plus quarantined rows) against the service's
  ``numFound`` for that date, over ``--from``..``--to`` (default: the harvest's range,
  extended to the newest mail date in the lake);
- the same, counting only rows created or changed at or after the lake's watermark. Totals
  alone miss a day where one row was deleted and one arrived late (or one was modified):
  the count stays, the rows do not. Such rows carry a new ``createDateTime``, so they show
  here. (Rows changed with an older stamp than the watermark stay invisible to counts.)
- ids that readers see more than once; files readers see that the committed lake does not
  own; files the harvester did not write (foreign); committed files that are gone; files
  whose schema is not the lake's; rows stored under another month's partition; a harvest
  or refresh left unfinished.

``--repair`` hands the days whose counts differ (and days holding duplicate ids) to the
refresh machinery (``Refresher.run(repair_days=...)``): staged, resumable, partitions
replaced the careful way, watermark untouched. Its sweep also removes files the committed
lake does not own (of the harvester's naming only: foreign files, ``commit.is_own_file``,
are named and always left alone). Then the lake is verified again. Schema and partition
problems are named but not repaired: they mean someone else wrote into the lake. A committed
file that is missing is repaired by fetching again every day it held (its shard's days, from
the marker's key; every day of its month for a file a manifest names), and its partition is
rewritten without it.

``--deep [--sample N]`` adds ``ops.deep``: whole days fetched and compared row by row, field
by field, which sees what no count sees (a row changed without a new ``createDateTime``, a
day where a row went and another came with an old stamp). Its differing days join the
repair's days. After a repair, only the days the deep check found differing are compared
again (they were fetched again; the others were found equal).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harvester.config import Settings
from harvester.errors import LakeError
from harvester.humanize import plural
from harvester.jobs.reconcile import differing_days
from harvester.jobs.refresh import Refresher
from harvester.jobs.report import RunOutcome, RunReport
from harvester.jobs.session import RunSession
from harvester.ops.deep import (
    DeepCheck,
    DeepOptions,
    LakeDays,
    choose_days,
    deep_check,
    sample_population,
)
from harvester.ops.scan import Scan, duplicate_days, scan_lake
from harvester.progress import Progress
from harvester.storage import quarantine
from harvester.storage.info import is_visible, load_committed
from harvester.storage.partition import Partition
from harvester.storage.shard import EARLIEST_PROBE, Shard, changed_since_scope
from harvester.storage.state import HarvestState, ShardMarker

SHOWN_PER_KIND = 20  # lines per kind of problem on the terminal; the report has them all
# Kinds of one line per mail day whose counts differ: symptoms, often of a cause named by
# another kind (a missing file empties every day it held). Fewer of them are shown, last.
PER_DAY_KINDS = {"count": "whose counts differ", "changed": "whose changed rows differ"}
SHOWN_PER_DAY_KIND = 10
# The order problems are shown in: what the lake itself holds wrong (its causes) first,
# then unfinished runs, then the row-by-row findings, then the per-day counts.
KIND_ORDER = (
    "missing", "foreign", "uncommitted", "unexpected", "unreadable", "schema", "partition",
    "duplicate", "harvest", "refresh", "deep", *PER_DAY_KINDS,
)  # fmt: skip


@dataclass
class Check:
    """One verification pass over the lake and the service."""

    first: dt.date
    last: dt.date
    scan: Scan
    differing: dict[dt.date, tuple[int, int]]
    quarantined: int
    quarantined_per_day: dict[dt.date, int] = field(default_factory=dict)
    since: dt.datetime | None = None
    changed: dict[dt.date, tuple[int, int]] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (kind, text)
    repair_days: dict[str, str] = field(default_factory=dict)
    deep: DeepCheck | None = None  # with --deep: the days compared row by row

    def lines(self) -> list[str]:
        """The problems for a person: causes before symptoms (``KIND_ORDER``), each kind
        capped (the per-day counts harder, ending "... and N more days"); the report and
        ``--log-format json`` keep every one."""
        out: list[str] = []
        by_kind: dict[str, list[str]] = {}
        for kind, text in self.problems:
            by_kind.setdefault(kind, []).append(text)
        rank = {kind: i for i, kind in enumerate(KIND_ORDER)}
        for kind in sorted(by_kind, key=lambda k: rank.get(k, len(rank))):
            texts = by_kind[kind]
            cap = SHOWN_PER_DAY_KIND if kind in PER_DAY_KINDS else SHOWN_PER_KIND
            out.extend(f"problem: {text}" for text in texts[:cap])
            if len(texts) > cap:
                more = len(texts) - cap
                if kind in PER_DAY_KINDS:
                    what = f"{plural(more, 'more day')} {PER_DAY_KINDS[kind]}"
                else:
                    what = f"{more:,} more of kind '{kind}'"
                out.append(f"problem: ... and {what} (the report has them all)")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "range": [self.first.isoformat(), self.last.isoformat()],
            "rows": self.scan.rows,
            "files_read": self.scan.files_read,
            "quarantined": self.quarantined,
            "quarantined_per_day": {
                d.isoformat(): n for d, n in sorted(self.quarantined_per_day.items())
            },
            "problems": [{"kind": k, "text": t} for k, t in self.problems],
            "days_differing": {d.isoformat(): list(v) for d, v in sorted(self.differing.items())},
            "changed_since": None if self.since is None else self.since.isoformat(),
            "days_changed_differing": {
                d.isoformat(): list(v) for d, v in sorted(self.changed.items())
            },
            "duplicate_ids": len(self.scan.duplicates),
            "deep": None if self.deep is None else self.deep.to_json(),
        }

    def deep_line(self) -> str | None:
        deep = self.deep
        if deep is None:
            return None
        what = plural(len(deep.days), "day")
        if deep.sample is not None and deep.population is not None:
            # Drawn among the days holding rows; all of them when the sample is not smaller.
            held = f"the {plural(deep.population, 'day')} holding rows"
            what = (
                f"a sample of {what} (seed {deep.seed}) of {held}"
                if deep.seed is not None
                else f"{what}, all {held}"
            )
        return (
            f"deep: {what} compared row by row, {plural(deep.rows_compared, 'row')} served,"
            f" {plural(len(deep.differing), 'day')} differing"
        )


@dataclass
class VerifyOutcome:
    report: RunReport
    before: Check
    after: Check | None = None
    repair: RunOutcome | None = None

    @property
    def final(self) -> Check:
        return self.after or self.before

    @property
    def repair_failed(self) -> bool:
        return self.repair is not None and not self.repair.complete

    def lines(self) -> list[str]:
        b = self.before
        # An open start (``Coverage.open_start``) is counted from the earliest date a query
        # names: said as what it is, not as the year 1900.
        span = (
            f"every mail date to {b.last}" if b.first == EARLIEST_PROBE else f"{b.first}..{b.last}"
        )
        out = [
            f"verify {span}: {b.scan.rows:,} rows in {b.scan.files_read} files,"
            f" {b.quarantined} quarantined, {self.report.requests} requests"
        ]
        out.extend(line for line in [b.deep_line()] if line)
        out.extend(b.lines())
        out.append(f"verify: {len(b.problems)} problems" if b.problems else "verify: ok")
        if self.repair is not None:
            repair = self.repair.report
            out.append(
                f"repair {repair.status}: {len(b.repair_days)} days fetched again,"
                f" {repair.swept_files} stray files removed, {repair.requests} requests"
                f" (report {repair.saved_to})"
            )
            out.extend(f"failed shard {k}: {c}" for k, c in sorted(repair.failures.items()))
        if self.after is not None:
            out.extend(line for line in [self.after.deep_line()] if line)
            out.extend(self.after.lines())
            problems = len(self.after.problems)
            out.append(f"after repair: {problems} problems" if problems else "after repair: ok")
        if self.report.saved_to:
            out.append(f"report: {self.report.saved_to}")
        return out


def _copy_label(path: str, committed: bool, foreign: set[str]) -> str:
    if committed:
        return ""
    return " (foreign)" if path in foreign else " (uncommitted)"


def _who_reads(path: str) -> str:
    """What readers make of a foreign file: it is never removed, so say who still sees it."""
    if not is_visible(path) or not path.endswith(".parquet"):
        return "readers skip it"
    try:
        Partition.parse(path.rpartition("/")[0])
    except ValueError:
        return "a reader globbing the lake for *.parquet reads it"
    return "DuckDB and Spark read its rows as the lake's"


def _problems(check: Check, state: HarvestState) -> None:
    """Fill ``check.problems`` and the days a repair would fetch again."""
    scan, add = check.scan, check.problems.append
    plan = state.load_plan()
    markers = state.load_markers()
    if plan is not None:
        leaves = state.leaves(plan, markers)
        unfinished = [
            s.key for s in leaves if (m := markers.get(s.key)) is None or m.status != "done"
        ]
        if unfinished:
            text = f"harvest unfinished: {len(unfinished)} shards not done, e.g. {unfinished[:3]}"
            add(("harvest", text + " (`harvester harvest` finishes it)"))
    if state.refresh_interrupted():
        add(("refresh", "a refresh was interrupted (`harvester refresh` finishes it)"))
    for day, (lake, service) in sorted(check.differing.items()):
        add(("count", f"day {day}: lake has {lake} rows, service has {service}"))
        check.repair_days[day.isoformat()] = f"lake has {lake} rows, service {service}"
    for day, (lake, service) in sorted(check.changed.items()):
        since = f"created or changed since {check.since.isoformat() if check.since else '?'}"
        add(("changed", f"day {day}: lake has {lake} rows {since}, service has {service}"))
        check.repair_days.setdefault(day.isoformat(), f"{lake} rows {since}, service {service}")
    # One problem per set of files sharing ids: a copied file is one problem, not 10,000.
    foreign = set(scan.foreign)
    groups: dict[tuple[str, ...], list[str]] = {}
    for id_, copies in scan.duplicates.items():
        places = Counter(c.path + _copy_label(c.path, c.committed, foreign) for c in copies)
        where = tuple(f"{p} x{n}" if n > 1 else p for p, n in sorted(places.items()))
        groups.setdefault(where, []).append(id_)
    for where, ids in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        examples = ", ".join(ids[:3])
        text = f"{len(ids)} ids appear more than once, in {', '.join(where)} (e.g. {examples})"
        add(("duplicate", text))
    for day, n in sorted(duplicate_days(scan).items()):
        check.repair_days.setdefault(day.isoformat(), f"{n} copies of duplicated ids")
    for path in scan.uncommitted:
        add(("uncommitted", f"file not part of the committed lake (readers see it): {path}"))
    for path in scan.foreign:
        note = _who_reads(path)
        add(("foreign", f"file not written by the harvester (left alone; {note}): {path}"))
    manifests = state.load_manifests() if scan.missing else {}
    for path in scan.missing:
        add(("missing", f"committed file is missing: {path}"))
        for day in _days_of_missing(path, markers, manifests):
            check.repair_days.setdefault(day.isoformat(), f"committed file {path} is missing")
    for path in scan.unexpected:
        add(("unexpected", f"file readers would try to read that is not Parquet: {path}"))
    for path, reason in sorted(scan.unreadable.items()):
        add(("unreadable", f"unreadable Parquet file {path}: {reason}"))
    for path, difference in sorted(scan.schema.items()):
        add(("schema", f"schema differs in {path}: {difference}"))
    for path, rows in sorted(scan.misplaced.items()):
        add(("partition", f"{rows} rows of {path} belong to another month's partition"))


def _days_of_missing(
    path: str, markers: dict[str, ShardMarker], manifests: dict[str, list[str]]
) -> list[dt.date]:
    """The mail days a missing committed file held: its shard's (the key of the marker that
    names it), or every day of its month for a file of a rewritten partition (a manifest
    names files, not days)."""
    try:
        partition = Partition.of_file(path)
    except ValueError:
        return []
    if partition.path not in manifests:
        owner = next((m for m in markers.values() if m.done and path in m.files), None)
        try:
            shard = Shard.parse_key(owner.key) if owner is not None else None
        except ValueError:
            shard = None
        if shard is not None and not shard.undated:
            return [d for d in shard.days if partition.contains(d)]
    first = partition.first_day
    last = (first + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
    return Shard(first, last).days


def _deep_problems(check: Check) -> None:
    """Name every row the deep check found different; its days join the repair's."""
    if check.deep is None:
        return
    for day, result in sorted(check.deep.differing.items()):
        check.problems.extend(("deep", line) for line in result.lines())
        check.repair_days.setdefault(day.isoformat(), result.reason())


async def _check(
    session: RunSession,
    deep: DeepOptions | None = None,
    deep_days: list[dt.date] | None = None,
) -> Check:
    """One pass; with ``deep``, the range's days (or a sample, or ``deep_days``) are also
    compared row by row."""
    state, settings, client, known = session.state, session.settings, session.client, session.known
    view = load_committed(state)  # again after a repair: it rewrites partitions
    mark = state.watermark()
    # Whole seconds on both sides: the query cannot say more, and both must count the same.
    since = dt.datetime.fromisoformat(mark).replace(microsecond=0) if mark else None
    scan = await asyncio.to_thread(scan_lake, state.lake, view.files, since)
    quarantined = await asyncio.to_thread(quarantine.count, state, since)
    # The lake's coverage (what refresh keeps equal), unless --from/--to narrow it; an open
    # end reaches the newest day the lake holds, or the harvest's last day.
    coverage = state.coverage()
    newest = max(scan.day_counts, default=view.plan.last)
    first = settings.date_from or coverage.first_covered
    last = settings.date_to or coverage.last_day(max(view.plan.last, newest))
    template = known.profile.date_template  # proven on the service (``service``)

    async def compare(
        files: dict[dt.date, int], recent: bool, scope: str | None
    ) -> dict[dt.date, tuple[int, int]]:
        # The service counts quarantined rows too: without them their days always differ.
        on_days, floating = quarantined.days(recent)
        days = {d: files.get(d, 0) + on_days.get(d, 0) for d in files.keys() | on_days}
        in_range = {d: n for d, n in days.items() if first <= d <= last}
        return quarantine.settle(
            await differing_days(client, template, in_range, first, last, scope), floating
        )

    differing = await compare(scan.day_counts, False, None)
    per_day = {d: n for d, n in quarantined.days()[0].items() if first <= d <= last}
    check = Check(first, last, scan, differing, quarantined.rows, per_day, since)
    if since is not None:
        scope = changed_since_scope(since.isoformat(), known.profile.stamp_form)
        check.changed = await compare(scan.changed_day_counts, True, scope)
    if deep is not None:
        # A sample is drawn among the days holding rows on either side: the lake's (files
        # and quarantine) and, where the counts differ, the service's; where they agree the
        # lake's count is the service's. Known from the checks above, without a request.
        on_days, _ = quarantined.days(False)
        holding = {d for d, n in scan.day_counts.items() if n}
        holding |= {d for d, n in on_days.items() if n}
        holding |= {d for d, (_, service) in differing.items() if service}
        # An open start's decades before the first day harvested hold no row on either
        # side but those just named: every day of them would be a request proving 0 = 0.
        deep_first = settings.date_from or min([coverage.first_day, *holding])
        population = len(sample_population(deep_first, last, holding))
        # Days given (after a repair): those days, not a draw.
        days, seed = (
            (deep_days, None) if deep_days else choose_days(deep_first, last, deep, holding)
        )
        sample = None if deep_days else deep.sample
        planner = session.planner
        lake_days = LakeDays(state.lake, view.files, scan.missing)
        check.deep = await deep_check(
            client, planner, template, known.limits, settings.shard_attempts, lake_days,
            days, sample, seed, population if sample is not None else None,
        )  # fmt: skip
    _problems(check, state)
    _deep_problems(check)
    return check


async def verify_lake(
    settings: Settings, repair: bool, progress: Progress, deep: DeepOptions | None = None
) -> VerifyOutcome:
    """Verify (and with ``repair``, repair) the lake at ``settings.out``; writes a run report.
    With ``deep``, days are also compared row by row (``ops.deep``).

    Verify writes its lake (the service's profile, its report, the quota ledger), so its
    session takes the lock first: a lake a harvest or refresh is writing is refused (exit
    4) before any request and with no file changed, and a repair runs under the same lock.
    """
    # Only read until the lake is known to be one (a directory of other files is not, and
    # a harvest needs an empty one) and bound to this run's source: before any request.
    session = RunSession(settings, "verify", progress, existing=True)
    state, report = session.state, session.report
    if repair and state.load_complete() is None:
        raise LakeError(
            f"{state.lake.uri}: the harvest is not complete; `harvester harvest` finishes it"
            " (verify --repair works on a completed harvest)"
        )
    async with session:
        client, known = session.client, session.known
        session.begin_writing()  # the lake is written now (the profile, then the report)
        known.remember(state)
        outcome = VerifyOutcome(report, await _check(session, deep))
        if repair and outcome.before.problems:
            # Verify's own session: the same lock, client and proven profile (the service
            # is not probed again); the repair keeps a report of its own.
            refresher = Refresher(session, RunReport.begin("repair", settings))
            outcome.repair = await refresher.run(outcome.before.repair_days)
            # The repair's report puts its requests in the quota ledger: not twice.
            report.ledgered += outcome.repair.report.requests
            # The days the deep check found differing are compared again; the rest were equal.
            again = sorted(outcome.before.deep.differing) if outcome.before.deep else []
            outcome.after = await _check(session, deep if again else None, again)
        if outcome.repair_failed:
            status = "repair incomplete"
        elif outcome.final.problems:
            status = "problems"
        else:
            status = "repaired" if outcome.after is not None else "ok"
        report.finish(status, client.stats)
        progress.stop()
        report.rows_in_lake = outcome.final.scan.rows
        report.quarantined = outcome.final.quarantined
        report.plan_range = (outcome.before.first.isoformat(), outcome.before.last.isoformat())
        report.extra["check"] = outcome.before.to_json()
        if outcome.after is not None:
            report.extra["after_repair"] = outcome.after.to_json()
        if outcome.repair is not None:
            report.extra["repair_report"] = outcome.repair.report.saved_to
            report.extra["repair_days"] = outcome.before.repair_days
    return outcome
