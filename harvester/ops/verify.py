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
  own; committed files that are gone; files whose schema is not the lake's; rows stored
  under another month's partition; a harvest or refresh left unfinished.

``--repair`` hands the days whose counts differ (and days holding duplicate ids) to the
refresh machinery (``Refresher.run(repair_days=...)``): staged, resumable, partitions
replaced the careful way, watermark untouched. Its sweep also removes files the committed
lake does not own. Then the lake is verified again. Schema and partition problems and
missing files are named but not repaired: they mean someone else wrote into the lake.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harvester import quarantine
from harvester.client import ApiClient
from harvester.config import Settings
from harvester.errors import LakeError
from harvester.ops.lakeinfo import load_committed, open_state
from harvester.ops.scan import Scan, duplicate_days, scan_lake
from harvester.progress import Progress
from harvester.reconcile import differing_days
from harvester.refresh import Refresher
from harvester.report import RunOutcome, RunReport
from harvester.runner import Service, learn_service, make_client, preflight
from harvester.shard import changed_since_scope
from harvester.state import HarvestState

SHOWN_PER_KIND = 20  # lines per kind of problem on the terminal; the report has them all


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

    def lines(self) -> list[str]:
        out: list[str] = []
        shown: dict[str, int] = {}
        for kind, text in self.problems:
            shown[kind] = shown.get(kind, 0) + 1
            if shown[kind] <= SHOWN_PER_KIND:
                out.append(f"problem: {text}")
        for kind, n in shown.items():
            if n > SHOWN_PER_KIND:
                out.append(f"problem: ... and {n - SHOWN_PER_KIND} more of kind '{kind}'")
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
        }


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
        out = [
            f"verify {b.first}..{b.last}: {b.scan.rows:,} rows in {b.scan.files_read} files,"
            f" {b.quarantined} quarantined, {self.report.requests} requests"
        ]
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
            out.extend(self.after.lines())
            problems = len(self.after.problems)
            out.append(f"after repair: {problems} problems" if problems else "after repair: ok")
        if self.report.saved_to:
            out.append(f"report: {self.report.saved_to}")
        return out


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
    groups: dict[tuple[str, ...], list[str]] = {}
    for id_, copies in scan.duplicates.items():
        places = Counter(c.path + ("" if c.committed else " (uncommitted)") for c in copies)
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
    for path in scan.missing:
        add(("missing", f"committed file is missing: {path}"))
    for path in scan.unexpected:
        add(("unexpected", f"file readers would try to read that is not Parquet: {path}"))
    for path, reason in sorted(scan.unreadable.items()):
        add(("unreadable", f"unreadable Parquet file {path}: {reason}"))
    for path, difference in sorted(scan.schema.items()):
        add(("schema", f"schema differs in {path}: {difference}"))
    for path, rows in sorted(scan.misplaced.items()):
        add(("partition", f"{rows} rows of {path} belong to another month's partition"))


async def _check(
    state: HarvestState, settings: Settings, client: ApiClient, known: Service
) -> Check:
    view = load_committed(state)  # again after a repair: it rewrites partitions
    mark = state.watermark()
    # Whole seconds on both sides: the query cannot say more, and both must count the same.
    since = dt.datetime.fromisoformat(mark).replace(microsecond=0) if mark else None
    scan = await asyncio.to_thread(scan_lake, state.lake, view.files, since)
    quarantined = await asyncio.to_thread(quarantine.count, state, since)
    first = settings.date_from or view.plan.first
    newest = max(scan.day_counts, default=view.plan.last)
    last = settings.date_to or max(view.plan.last, newest)
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
    _problems(check, state)
    return check


async def verify_lake(settings: Settings, repair: bool, progress: Progress) -> VerifyOutcome:
    """Verify (and with ``repair``, repair) the lake at ``settings.out``; writes a run report."""
    state = open_state(settings)
    if repair and state.load_complete() is None:
        raise LakeError(
            f"{state.lake.uri}: the harvest is not complete; `harvester harvest` finishes it"
            " (verify --repair works on a completed harvest)"
        )
    report = RunReport.begin("verify", settings)
    async with make_client(settings) as client:
        await preflight(client)
        known = await learn_service(settings, state, client)
        known.remember(state)
        outcome = VerifyOutcome(report, await _check(state, settings, client, known))
        if repair and outcome.before.problems:
            if outcome.before.scan.missing:
                raise LakeError(
                    f"{state.lake.uri}: committed files are missing"
                    f" ({outcome.before.scan.missing[:3]}); --repair cannot rebuild"
                    " partitions from missing files"
                )
            refresher = Refresher(settings, progress, command="repair")
            outcome.repair = await refresher.run(repair_days=outcome.before.repair_days)
            outcome.after = await _check(state, settings, client, known)
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
    report.save(state)
    return outcome
