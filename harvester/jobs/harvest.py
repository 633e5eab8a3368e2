"""The harvest: plan once, fetch every shard, commit each by its marker, check, finish.

Order matters for "a bad start leaves the lake untouched": settings are validated, the lake
is only read, and one count query must succeed (proving the URL and the key) before
anything is written. A run that finds a plan under ``_harvest/`` resumes it: shards with a
``done`` marker are never fetched again.

Before planning, the service is probed once (``session.learn_service``: page size, date
form, sort; about a dozen requests) unless the lake already holds what it was found to do;
what the run learns on the way (a paging window, a smaller page) is kept in the lake.

The closing check counts every month once and compares it with what the month's shards
committed; only in a month that moved is each shard counted, and those whose count moved
are fetched again. So the lake ends equal to the source as of the end of the run, for
about one request per month. Counts that never add up (a month against its shards, each
of which agrees with itself) stop the run with ``CountsDisagree``: never a silent loss.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import defaultdict

from harvester.config import Settings
from harvester.errors import ConfigError, CountsDisagree, QueryError, RetriesExhausted
from harvester.jobs.planner import Planner
from harvester.jobs.report import RunOutcome, RunReport
from harvester.jobs.session import RunSession, Service, ShardRunner, committed_rows
from harvester.progress import Progress
from harvester.service.client import ApiClient
from harvester.service.stamps import newest_stamp
from harvester.storage.commit import committed_files, sweep
from harvester.storage.shard import UNDATED_KEY, Shard, month_spans
from harvester.storage.state import (
    CompleteRecord,
    Coverage,
    ShardMarker,
    StoredPlan,
    utc_now,
)

log = logging.getLogger("harvester.jobs.harvest")

# The service holds mail dates up to about this many days before today: its catalog says
# "Office Actions mailed from June 1, 2018 to 180 days prior to the current date" (what is
# known of the API: docs/api.md, "Size and coverage"; another catalog page says 30, and
# real rows reach back to 2011). Only a warning rides on it (``range_warning``), never a refusal.
SERVICE_LAG_DAYS = 180

# The closing check's rounds: each fetches again what moved since it was committed. Its own
# bound, not ``shard_attempts`` (which is how often one shard's fetch is tried).
CLOSING_ROUNDS = 3


def range_warning(first: dt.date, last: dt.date, today: dt.date) -> str | None:
    """What to tell a user whose range asks for mail dates the service holds none of yet,
    or None. Said, not refused: the lag is the catalog's word, and the user may know better."""
    if first > today:
        return f"the range {first}..{last} lies entirely in the future: it will find no rows"
    newest = today - dt.timedelta(days=SERVICE_LAG_DAYS)
    if first > newest:
        return (
            f"the range {first}..{last} starts after {newest}: the service holds mail dates"
            f" up to about {SERVICE_LAG_DAYS} days before today, so it may find few or no rows"
        )
    return None


async def make_plan(
    settings: Settings,
    planner: Planner,
    client: ApiClient,
    known: Service,
    progress: Progress | None = None,
) -> StoredPlan:
    """The shards of a new harvest of ``settings``' range (the first day probed when not
    given), plus the shard for rows without a mail date, and the watermark the harvest will
    leave: the newest createDateTime the service holds now, before anything is fetched
    (``stamps``). ``plan`` shows exactly this. ``progress`` is told how many months are
    counted, so planning shows its own progress rather than nothing."""
    today = dt.datetime.now(dt.UTC).date()
    last = settings.date_to or today
    first = settings.date_from or await planner.probe_first_day(last)
    if first is None:
        raise ConfigError(f"the service holds no rows with a mail date up to {last}")
    if (warning := range_warning(first, last, today)) is not None:
        log.warning("%s", warning)
    log.info("planning %s .. %s", first, last)
    if progress is not None:
        progress.planning(len(month_spans(first, last)))
    shards = await planner.plan(first, last)
    undated = Shard(first, last, undated=True)
    # Rows without a mail date match no date query; one extra shard catches them (they are
    # quarantined, never silently missed). A service that refuses the query costs us only
    # that safety net, not the harvest.
    try:
        shards.append(
            undated.with_expected(await client.count(undated.criteria(known.date_template)))
        )
    except QueryError as exc:
        log.warning("the service refused the query for rows without a mail date: %s", exc)
    newest = await newest_stamp(
        client,
        known.profile.stamp_form,
        low=None,
        tolerance=dt.timedelta(days=settings.stamp_tolerance_days),
    )
    if newest.beyond:
        log.warning("%d rows are stamped after %s: never taken as the watermark", newest.beyond,
                    newest.ceiling)  # fmt: skip
    return StoredPlan(
        first, last, known.date_template, settings.shard_size, shards, watermark=newest.stamp
    )


def _check_plan_matches(plan: StoredPlan, settings: Settings) -> None:
    if settings.date_from and settings.date_from != plan.first:
        raise ConfigError(
            f"this lake's harvest covers {plan.first}..{plan.last}; --from {settings.date_from}"
            " differs (resume with the same range, or harvest into a new --out)"
        )
    if settings.date_to and settings.date_to != plan.last:
        raise ConfigError(
            f"this lake's harvest covers {plan.first}..{plan.last}; --to {settings.date_to}"
            " differs (resume with the same range, or harvest into a new --out)"
        )


async def run_harvest(settings: Settings, progress: Progress) -> RunOutcome:
    session = RunSession(settings, "harvest", progress)  # checks the lake: no request yet
    state, report = session.state, session.report
    async with session:  # the lock, then the client, the preflight and the profile
        client, known = session.client, session.known
        plan = state.load_plan()
        if plan is None:
            plan = await make_plan(settings, session.planner, client, known, progress)
            # Everything before this only read; from here on the lake is written.
            session.begin_writing()
            state.write_meta()
            known.remember(state)  # before the plan: a resume finds both, or neither
            end = settings.date_to.isoformat() if settings.date_to else None
            # Without --from every mail date is kept, also those before the first day found.
            open_start = settings.date_from is None
            state.save_coverage(Coverage(plan.first.isoformat(), end, open_start=open_start))
            state.save_plan(plan)
        else:
            _check_plan_matches(plan, settings)
            if state.load_complete() is not None:
                # Re-harvesting a finished lake would fight refresh's partition rewrites.
                # Said once the key is proven (a wrong one is still exit 3); nothing written.
                session.keep_report = False
                report.status = "complete"
                report.events.append("the harvest of this lake is already complete: use refresh")
                markers = state.load_markers()
                _tally(report, state.leaves(plan, markers), markers)
                return RunOutcome(report, True)
            session.begin_writing()
            known.remember(state)
        runner = session.runner(state, plan)
        try:
            complete = await _harvest_plan(runner, client, report, CLOSING_ROUNDS, progress)
        finally:
            # However the run ended (stopped early too: ``report.kept`` saves it), the
            # report says what it did and what the lake holds now.
            report.absorb_totals(runner.pipeline.totals)
            _tally(report, *runner.leaves())
        report.finish("complete" if complete else "incomplete", client.stats)
    return RunOutcome(report, complete)


async def _harvest_plan(
    runner: ShardRunner, client: ApiClient, report: RunReport, rounds: int, progress: Progress
) -> bool:
    """Fetch every pending shard, run the closing check, record completion."""
    state, plan = runner.state, runner.plan
    report.plan_range = (plan.first.isoformat(), plan.last.isoformat())
    leaves, markers = runner.leaves()
    report.swept_files = sweep(state.lake, committed_files(state, plan, markers))
    progress.planned_empty(planned_empty(leaves, markers))
    report.swept_files += await runner.run_pending()

    # Closing check: recount and fetch again whatever moved, a bounded number of rounds.
    seen: dict[str, tuple[int, int]] = {}
    for _ in range(rounds):
        leaves, markers = runner.leaves()
        moved = await _moved_shards(client, plan, leaves, markers, report, seen)
        if not moved:
            break
        report.events.append(f"closing check: {len(moved)} shards changed; fetched again")
        await runner.run(moved)

    leaves, markers = runner.leaves()
    report.failures = runner.failures()
    complete = all((m := markers.get(s.key)) is not None and m.done for s in leaves)
    if complete:
        # The service's newest stamp when the harvest started, not the newest fetched: a row
        # changed while the harvest ran is newer than it, so the first refresh finds it.
        # (A plan made before it was kept falls back to the newest fetched.)
        watermark = plan.watermark or max(
            (m.max_create for m in markers.values() if m.max_create), default=None
        )
        rows = committed_rows(leaves, markers)
        state.save_complete(CompleteRecord(utc_now(), rows, len(leaves), watermark))
    return complete


def planned_empty(leaves: list[Shard], markers: dict[str, ShardMarker]) -> int:
    """How many ``leaves`` were planned empty and hold nothing: counted 0 when planned (not
    the shard of rows without a mail date, which is always fetched) and not committed with
    rows since. ``session.pending_shards`` commits them without a request; progress shows
    them apart from the work (``Progress.planned_empty``)."""
    return sum(
        1
        for s in leaves
        if s.expected == 0
        and s.key != UNDATED_KEY
        and ((m := markers.get(s.key)) is None or (m.done and m.rows == 0))
    )


def _tally(report: RunReport, leaves: list[Shard], markers: dict[str, ShardMarker]) -> None:
    """The plan's shards and the lake's rows as the markers tell them now."""
    report.rows_in_lake = committed_rows(leaves, markers)
    report.count_shards(leaves, markers)


def _month_of(plan: StoredPlan, shard: Shard) -> Shard:
    """The month (clipped to the plan's range) a dated shard lies in."""
    for first, last in month_spans(plan.first, plan.last):
        if first <= shard.first <= last:
            return Shard(first, last)
    return Shard(shard.first, shard.last)  # outside the plan: stands for itself


async def _moved_shards(
    client: ApiClient,
    plan: StoredPlan,
    leaves: list[Shard],
    markers: dict[str, ShardMarker],
    report: RunReport,
    seen: dict[str, tuple[int, int]],
) -> list[Shard]:
    """Shards not done, and shards whose count differs from what they committed: one count
    per month, and per shard only inside a month that moved. ``seen`` remembers, across
    rounds, each shard's (count, committed) when it was found moved: the same pair twice
    means fetching again changed nothing, so the counts themselves contradict the data."""

    async def count(shard: Shard) -> int | None:
        report.closing_check_requests += 1
        try:
            return await client.count(shard.criteria(plan.date_template))
        except RetriesExhausted as exc:
            log.warning("closing check could not count %s: %s", shard.key, exc)
            return None

    def done(shard: Shard) -> int | None:
        marker = markers.get(shard.key)
        return marker.num_found if marker is not None and marker.done else None

    def changed(shard: Shard, counted: int | None) -> bool:
        committed = done(shard)
        if counted is None or committed is None or counted == committed:
            return False
        if seen.get(shard.key) == (counted, committed):
            raise CountsDisagree(
                f"the service's counts do not add up for {shard.key}: it counts {counted}"
                f" rows, but fetching it (twice) gave {committed}; the lake holds what the"
                " pages served, but the counts cannot prove it complete"
            )
        seen[shard.key] = (counted, committed)
        return True

    moved = [s for s in leaves if done(s) is None]
    months: dict[Shard, list[Shard]] = defaultdict(list)
    unfinished: set[Shard] = set()  # months with a shard not done: it is fetched first
    for shard in leaves:
        month = shard if shard.undated else _month_of(plan, shard)
        if done(shard) is None:
            unfinished.add(month)
        else:
            months[month].append(shard)
    for month, shards in months.items():
        if month in unfinished:
            # Its count cannot equal its done shards' while one is missing: the missing one
            # is fetched again now, and the next round checks the month whole.
            continue
        held = sum(done(s) or 0 for s in shards)
        whole_month_is_one_shard = len(shards) == 1 and shards[0] == month
        if not whole_month_is_one_shard and await count(month) == held:
            continue
        counts = await asyncio.gather(*(count(s) for s in shards))
        here = [
            s.with_expected(c)
            for s, c in zip(shards, counts, strict=True)
            if c is not None and changed(s, c)
        ]
        if not here and len(shards) > 1 and None not in counts:
            again = await count(month)
            if again is not None and again != held:
                raise CountsDisagree(
                    f"the service's counts do not add up for {month.key}: the month counts"
                    f" {again}, its {len(shards)} shards {held}, and each shard agrees with"
                    " its own count"
                )
        moved.extend(here)
    return moved
