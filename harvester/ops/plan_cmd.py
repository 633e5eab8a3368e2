"""``harvester plan``: the shards a harvest or refresh would fetch, the requests they take
and the time that means at the configured rate. Writes nothing.

The plan is made the way the job makes it, with the same count queries (they are cheap:
one row each), so its shards are the job's shards as long as the source does not change:

- a new harvest: the planner over ``--from``..``--to`` (the first day probed when not
  given), plus the shard for rows without a mail date;
- a harvest already under way: the stored plan's shards not done yet (no count query);
- a refresh (the lake holds a completed harvest): the rows changed since the watermark
  minus the lookback, sharded, and the recent days whose counts differ (reconciliation).

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

from harvester import reconcile
from harvester.client import ApiClient
from harvester.commit import committed_files
from harvester.config import Settings
from harvester.errors import ConfigError
from harvester.harvest import make_plan
from harvester.ops.lakeinfo import service_lines
from harvester.refresh import changed_rows_shard, changed_since, coverage_span, require_completed
from harvester.runner import Service, learn_service, make_client, make_planner, open_lake, preflight
from harvester.service import limits_from
from harvester.shard import UNDATED_KEY, Shard
from harvester.stamps import newest_stamp
from harvester.state import HarvestState

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
    service: dict[str, Any] | None = None  # what the service was found to do (runner.Service)

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
        check = f" + {self.check_requests:,} closing-check counts" if self.check_requests else ""
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
        out.extend(f"note: {note}" for note in self.notes)
        return out


def duration_text(seconds: float) -> str:
    """``2 d 3 h``, ``1 h 12 min``, ``4 min 5 s``, ``12 s``: two units are enough."""
    total = round(seconds)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def closing_check_requests(shards: list[Shard]) -> int:
    """The closing check's counts on a calm service: one per month (and the undated shard)."""
    return len({(s.first.year, s.first.month) if not s.undated else None for s in shards})


async def _plan_new_harvest(
    settings: Settings, client: ApiClient, known: Service, plan: JobPlan
) -> None:
    """What the harvest plans (``harvest.make_plan``), without saving it."""
    planner = make_planner(settings, client, known.limits)
    stored = await make_plan(settings, planner, client, known.profile.stamp_form)
    plan.what = f"new harvest of {stored.first}..{stored.last}"
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


async def _plan_refresh(
    settings: Settings, state: HarvestState, client: ApiClient, known: Service, plan: JobPlan
) -> None:
    """What ``Refresher`` would fetch: changed rows, then the days reconciliation repairs."""
    _, stored = require_completed(state)
    planner = make_planner(settings, client, known.limits)
    # As the refresh does: the service's newest stamp first (its counts are planning
    # requests too), then the changed rows of the coverage, then the differing days.
    current = state.watermark()
    newest = await newest_stamp(
        client,
        known.profile.stamp_form,
        low=current,
        tolerance=dt.timedelta(days=settings.stamp_tolerance_days),
    )
    since = changed_since(state, settings.lookback_days, newest.ceiling)
    covered = coverage_span(state)
    root = changed_rows_shard(since, covered, known.profile.stamp_form)
    root = root.with_expected(await client.count(root.criteria(settings.date_template)))
    changed = await planner.refine(root)
    committed = committed_files(state, stored, state.load_markers())
    first, last = reconcile.window(state, committed, *covered, settings.reconcile_days)
    found = await reconcile.differing_in_window(
        state, committed, client, settings.date_template, first, last
    )
    verdict = reconcile.hold_drops(
        found.differing, state.load_pending_drops(), settings.drop_share, "plan", ""
    )
    repair = verdict.repair
    plan.notes.extend(f"kept for now {day}: {why}" for day, why in verdict.held.items())
    days = []
    for day in sorted(repair):
        shard = Shard(dt.date.fromisoformat(day), dt.date.fromisoformat(day))
        counted = shard.with_expected(await client.count(shard.criteria(settings.date_template)))
        days.extend(await planner.refine(counted))
    plan.job = "refresh"
    plan.shards = changed + days
    plan.what = (
        f"refresh of rows changed since {since} ({len(changed)} shards) and"
        f" {len(repair)} mail days whose counts differ ({len(days)} shards)"
    )
    if repair:
        plan.notes.append(
            "the days are those that differ now; the refresh checks again after merging the"
            " changed rows, which often fixes some of them, so it may fetch fewer"
        )
    if state.refresh_interrupted():
        plan.notes.append("an interrupted refresh is resumed first; this plan is for the next one")


async def plan_job(settings: Settings, job: str = "auto") -> JobPlan:
    """The plan of the job ``job`` ("auto": refresh if the lake holds a completed harvest,
    else harvest) for the lake at ``settings.out``. Reads the lake, writes nothing."""
    if job not in JOBS:
        raise ConfigError(f"invalid job {job!r}: one of {', '.join(JOBS)}")
    state = HarvestState(open_lake(settings))
    state.check_compatible()
    complete = state.load_complete() is not None
    if job == "auto":
        job = "refresh" if complete else "harvest"
    plan = JobPlan("harvest", "", settings.rows, settings.rate)
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
    async with make_client(settings) as client:
        await preflight(client)
        known = await learn_service(settings, state, client)
        settings = known.settings(settings)
        plan.rows_per_request = known.limits.page_size
        if job == "harvest":
            await _plan_new_harvest(settings, client, known, plan)
        else:
            await _plan_refresh(settings, state, client, known, plan)
        plan.planning_requests = client.stats.requests
        plan.service = known.summary()
    return plan
