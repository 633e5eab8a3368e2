"""``harvester plan``: the shards a harvest or refresh would fetch, the requests they take
and the time that means at the configured rate. Writes nothing.

The plan is made the way the job makes it, with the same count queries (they are cheap:
one row each), so its shards are the job's shards as long as the source does not change:

- a new harvest: the planner over ``--from``..``--to`` (the first day probed when not
  given), plus the shard for rows without a mail date;
- a harvest already under way: the stored plan's shards not done yet (no count query);
- a refresh (the lake holds a completed harvest): the rows changed since the watermark
  minus the lookback, sharded, and the recent days whose counts differ (reconciliation);
  or, when the changed rows are most of the lake (``reload_share``), a reload: every month
  of the coverage fetched again, its cost estimated from the one count, not planned.

Requests are counted as the job spends them: the count queries of planning (the job makes
them again), one request per page of ``rows`` rows of every shard that holds rows, and for
a harvest its closing check (one count per shard). The time is requests / rate, a lower
bound: 429 pauses and retries come on top.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

from harvester.config import Settings
from harvester.errors import ConfigError, LakeError
from harvester.humanize import duration_text, plural
from harvester.jobs import decision, reconcile
from harvester.jobs.harvest import make_plan, range_warning
from harvester.jobs.refresh import require_completed, start
from harvester.jobs.session import RunSession, Service
from harvester.service.profile import limits_from
from harvester.storage import quota
from harvester.storage.commit import committed_files
from harvester.storage.info import service_lines
from harvester.storage.shard import UNDATED_KEY, Shard
from harvester.storage.source import REBIND_FLAG
from harvester.storage.state import HarvestState
from harvester.storage.store import open_lake

JOBS = ("auto", "harvest", "refresh")


@dataclass
class JobPlan:
    job: str  # "harvest" or "refresh"
    what: str  # one line: which harvest or refresh this is
    rows_per_request: int
    rate: float
    shards: list[Shard] = field(default_factory=list)
    planning_requests: int = 0
    check_requests: int = 0
    notes: list[str] = field(default_factory=list)
    check_label: str = ""  # what ``check_requests`` are, when not a harvest's closing check
    service: dict[str, Any] | None = None  # what the service was found to do (session.Service)
    weekly_quota: int = 0  # requests per key per week (0: none)
    quota_spent: int = 0  # this week, by runs on this lake with the key set now

    def pages(self, shard: Shard) -> int:
        """Requests to fetch one shard: a page per ``rows`` rows. Shards counted empty cost
        nothing (committed at once), except the undated one, which is always fetched."""
        if shard.expected <= 0:
            return 1 if shard.key == UNDATED_KEY else 0
        return math.ceil(shard.expected / self.rows_per_request)

    @property
    def fetch_requests(self) -> int:
        return sum(self.pages(s) for s in self.shards)

    @property
    def requests(self) -> int:
        return self.planning_requests + self.fetch_requests + self.check_requests

    @property
    def rows(self) -> int:
        return sum(max(0, s.expected) for s in self.shards)

    @property
    def seconds(self) -> float | None:
        return self.requests / self.rate if self.rate > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "what": self.what,
            "shards": len(self.shards),
            "rows": self.rows,
            "requests": self.requests,
            "planning_requests": self.planning_requests,
            "fetch_requests": self.fetch_requests,
            "check_requests": self.check_requests,
            "rows_per_request": self.rows_per_request,
            "rate": self.rate,
            "seconds": None if self.seconds is None else round(self.seconds, 1),
            "notes": self.notes,
            "service": self.service,
            "quota": self.quota_view(dt.datetime.now(dt.UTC)),
            "shard_list": [
                {"key": s.key, "rows": s.expected, "requests": self.pages(s)} for s in self.shards
            ],
        }

    def lines(self, every_shard: bool = False) -> list[str]:
        out = [f"plan: {self.what}"]
        if every_shard:
            out.extend(
                f"  {s.key}: {s.expected:,} rows, {self.pages(s)} requests" for s in self.shards
            )
        else:
            by_year: dict[str, list[Shard]] = {}
            for shard in self.shards:
                label = str(shard.first.year)
                if shard.key == UNDATED_KEY:
                    label = "undated"
                elif shard.scope:
                    label = "changed rows"  # its dates span everything: a year means nothing
                by_year.setdefault(label, []).append(shard)
            for label, shards in by_year.items():
                rows = sum(max(0, s.expected) for s in shards)
                out.append(
                    f"  {label}: {len(shards)} shards, {rows:,} rows,"
                    f" {sum(self.pages(s) for s in shards):,} requests"
                )
        out.append(f"shards: {len(self.shards):,}, {self.rows:,} rows")
        what = self.check_label or "closing-check counts"
        check = f" + {self.check_requests:,} {what}" if self.check_requests else ""
        out.append(
            f"requests: {self.requests:,} = {self.planning_requests:,} probes and counts to"
            f" plan + {self.fetch_requests:,} pages of up to {self.rows_per_request} rows{check}"
        )
        out.extend(service_lines(self.service))
        if self.seconds is None:
            out.append("time: no rate limit configured (--rate 0); it depends on the service")
        else:
            out.append(
                f"time at {self.rate:g} requests/s: {duration_text(self.seconds)}"
                " (at least: 429 pauses and retries come on top)"
            )
        view = self.quota_view(dt.datetime.now(dt.UTC))
        if view is not None:
            spent = f", {self.quota_spent:,} spent this week by runs on this lake"
            head = f"quota: {self.weekly_quota:,} requests a week per key{spent}"
            if view["resets"] == 0:
                out.append(f"{head}: it never stops this job")
            else:
                out.append(
                    f"{head}: this job spends it {view['resets']} times and ends"
                    f" {view['ends_at']} at the earliest (it resets Sunday 00:00 UTC); each"
                    " time, the run stops cleanly (exit 7), or waits with --wait-for-quota"
                )
        out.extend(f"note: {note}" for note in self.notes)
        return out

    def quota_view(self, now: dt.datetime) -> dict[str, Any] | None:
        """The calendar the weekly quota imposes on this job's requests (None: no quota)."""
        if not self.weekly_quota:
            return None
        ends, resets = quota.calendar_finish(
            self.requests,
            rate=self.rate or None,
            quota=self.weekly_quota,
            spent_this_week=self.quota_spent,
            now=now,
        )
        return {
            "weekly_quota": self.weekly_quota,
            "spent_this_week": self.quota_spent,
            "resets": resets,
            "ends_at": f"{ends:%Y-%m-%d %H:%M} UTC",
        }


def closing_check_requests(shards: list[Shard]) -> int:
    """The closing check's counts on a calm service: one per month (and the undated shard)."""
    return len({(s.first.year, s.first.month) if not s.undated else None for s in shards})


async def _plan_new_harvest(session: RunSession, plan: JobPlan) -> None:
    """What the harvest plans (``harvest.make_plan``, which also logs the range warning),
    without saving it; the warning is one of the plan's notes too."""
    stored = await make_plan(session.settings, session.planner, session.client, session.known)
    plan.what = f"new harvest of {stored.first}..{stored.last}"
    today = dt.datetime.now(dt.UTC).date()
    if (warning := range_warning(stored.first, stored.last, today)) is not None:
        plan.notes.append(warning)
    plan.shards = stored.shards
    plan.check_requests = closing_check_requests(plan.shards)
    if any(s.has_id_range for s in plan.shards):
        plan.notes.append(
            "months larger than a shard are cut by id range without counting the pieces:"
            " their rows and pages are estimates (each piece's first page tells)"
        )


def _plan_resumed_harvest(state: HarvestState, plan: JobPlan) -> None:
    stored = state.load_plan()
    assert stored is not None
    markers = state.load_markers()
    leaves = state.leaves(stored, markers)
    plan.shards = [s for s in leaves if (m := markers.get(s.key)) is None or m.status != "done"]
    done = len(leaves) - len(plan.shards)
    plan.what = (
        f"harvest of {stored.first}..{stored.last} under way: {done} of {len(leaves)} shards"
        " done, the rest below"
    )
    plan.check_requests = closing_check_requests(leaves)
    plan.notes.append("shard sizes are the counts seen when the harvest was planned")


async def _plan_refresh(session: RunSession, plan: JobPlan) -> None:
    """What ``Refresher`` would do, decided by the same code: ``refresh.start`` (the
    watermark, the loads left out, the changed rows, reload or not), the planner over the
    changed rows, then reconciliation's ``decision.decide_repairs`` on today's counts."""
    settings, state, client, known = session.settings, session.state, session.client, session.known
    planner = session.planner
    _, stored = require_completed(state)
    begun = await start(settings, state, stored, client, known)
    changed = begun.changed
    plan.job = "refresh"
    plan.notes.extend(changed.notes)
    if changed.scope.excluded:
        plan.notes.append(
            f"{plural(len(changed.scope.excluded), 'load')} the lake holds already"
            f" ({changed.excluded_rows:,} rows) left out of the changed rows, proven by counts"
        )
    if state.refresh_interrupted():
        plan.notes.append("an interrupted refresh is resumed first; this plan is for the next one")
    if changed.is_reload:
        # Planning it as changed rows would cost as many counts as a harvest's plan: the one
        # count says enough. Its pages, plus two counts a month (``Refresher._reload``).
        plan.shards = [begun.root]
        plan.check_requests = 2 * begun.months
        plan.check_label = "month counts (a reload)"
        plan.what = (
            f"refresh that is a reload: {changed.changed:,} rows changed since"
            f" {begun.since} and the lake holds {changed.lake_rows:,} (reload_share"
            f" {changed.reload_share:g}); every month of the coverage is fetched again, one at"
            f" a time ({begun.months} months)"
        )
        plan.notes.append(
            "a reload's requests are an upper bound: a month without changed rows whose count"
            " equals the lake's costs two counts and no page"
        )
        return
    shards = await planner.refine(begun.root)
    committed = committed_files(state, stored, state.load_markers())
    rows = reconcile.LakeRows.committed(state.lake, committed)
    first, last = reconcile.window(rows, *begun.covered, settings.reconcile_days)
    found = await reconcile.differing_in_window(
        state, rows, client, known.profile.date_template, first, last
    )
    repairs = decision.decide_repairs(
        found.differing, state.load_pending_drops(), settings.drop_share
    )
    # The refresh fetches each repair day with the count that chose it, and counts each
    # suspect once more first (a second count that agrees: it is fetched too).
    counts = {**repairs.counts, **{d: s for d, (_, s) in repairs.suspects.items()}}
    days = []
    for day in sorted(counts):
        shard = Shard(dt.date.fromisoformat(day), dt.date.fromisoformat(day))
        days.extend(await planner.refine(shard.with_expected(counts[day])))
    plan.check_requests = len(repairs.suspects)
    plan.check_label = "second counts of days losing most of their rows"
    plan.shards = shards + days
    plan.what = (
        f"refresh of rows changed since {begun.since} ({plural(len(shards), 'shard')}) and"
        f" {plural(len(repairs.repair) + len(repairs.suspects), 'mail day')} whose counts"
        f" differ ({plural(len(days), 'shard')})"
    )
    plan.notes.extend(
        f"counted again in the run {day}: lake has {lake} rows, service {service}; fetched"
        " if the second count agrees"
        for day, (lake, service) in sorted(repairs.suspects.items())
    )
    if (repairs.repair or repairs.suspects) and begun.root.expected > 0:
        plan.notes.append(
            "the days are those that differ now; the refresh counts them after merging the"
            " changed rows, which settles a day whose difference is rows added or changed"
            " since, so it may fetch fewer"
        )


async def plan_job(settings: Settings, job: str = "auto") -> JobPlan:
    """The plan of the job ``job`` ("auto": refresh if the lake holds a completed harvest,
    else harvest) for the lake at ``settings.out``. Reads the lake, writes nothing."""
    if job not in JOBS:
        raise ConfigError(f"invalid job {job!r}: one of {', '.join(JOBS)}")
    # Writable, though plan writes nothing: the job it plans would write there.
    state = HarvestState(open_lake(settings, for_write=True))
    state.check_compatible()
    complete = state.load_complete() is not None
    if job == "auto":
        job = "refresh" if complete else "harvest"
    # Refused where the job would be, in its words and with its exit code, before any
    # request: a plan of a job that cannot run would only mislead (docs/decisions.md).
    try:
        # Read-only: no lock, no report, nothing written; the lake checked by the job's rules.
        session = RunSession(settings, "plan", write=False, job=job, state=state)
    except LakeError as exc:
        raise LakeError(f"the {job} would be refused: {exc}") from None
    found = session.binding
    plan = JobPlan("harvest", "", settings.rows, settings.rate)
    plan.weekly_quota = settings.weekly_quota
    if found.action == "adopt" and found.bound is not None:
        plan.notes.append(
            f"the lake records no source (an older harvester's): the {job} would bind it to"
            f" {found.bound.describe()}"
        )
    if found.action == "rebind" and found.bound is not None:
        plan.notes.append(
            f"{REBIND_FLAG}: the lake, harvested from {found.bound.describe()}, would be bound"
            f" to {found.source.describe()}"
        )
    if state.is_lake():
        key = quota.key_id(settings.api_key.reveal() if settings.api_key else None)
        plan.quota_spent = quota.spent_this_week(state, key, dt.datetime.now(dt.UTC))[0]
    if job == "harvest" and complete:
        plan.what = "nothing: the harvest of this lake is complete (plan --job refresh)"
        return plan
    profile = state.load_service()
    if job == "harvest" and state.load_plan() is not None:
        _plan_resumed_harvest(state, plan)
        plan.planning_requests = 1  # the resumed harvest's preflight; it makes no count query
        if profile is not None:
            limits = limits_from(profile, settings.max_window, settings.shard_size, settings.rows)
            plan.rows_per_request = limits.page_size
            plan.service = Service(profile, limits, probed=False).summary()
        return plan
    async with session:
        plan.rows_per_request = session.limits.page_size
        if job == "harvest":
            await _plan_new_harvest(session, plan)
        else:
            await _plan_refresh(session, plan)
        plan.planning_requests = session.client.stats.requests
        plan.service = session.known.summary()
    return plan
