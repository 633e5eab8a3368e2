"""Incremental refresh: bring a harvested lake back to equal the source, cheaply.

1. **Changed rows.** Rows with ``createDateTime`` at or above the watermark minus
   ``lookback_days`` are fetched, sharded like the harvest, into a staging area.
2. **Upsert.** They are merged into the partitions of their own mail date by ``id``, the
   newest ``createDateTime`` winning; only partitions that really change are rewritten.
3. **Reconcile.** For the last ``reconcile_days`` of mail dates (counted back from the
   newest mail date in the lake) the lake's rows per month, then per day, are compared with
   the service's ``numFound``; a day that differs is fetched again whole and replaces the
   lake's rows of that day. This is how deletions, which no watermark can see, leave the lake.
4. The watermark moves last, only after the data it covers is committed.

A staging area is a small lake of its own (``HarvestState.stage``: plan, shard markers,
Parquet files), so it reuses the harvest's pipeline, checkpoints and resume unchanged.
``state.RefreshRun`` records the phase; a killed refresh run again picks up where it
stopped, and every step is idempotent. Reconciliation itself is ``reconcile``'s.

**Reloads.** The source sometimes reloads: every row gets a new ``createDateTime`` at
once (reference: "createDateTime is a batch stamp"), and the changed rows are the whole
dataset. Before fetching, the changed-rows shard is counted (one request) and compared with
the rows the lake holds (from markers and footers, no request). When they are at least
``reload_share`` of them, the run is a *reload*: said in a warning and the report with its
estimated cost, then the coverage is fetched again one month at a time, each month
replacing its partition before the next is fetched (``Refresher._reload``). Memory is one
month's partition, the lake stays readable, and a killed reload resumes at the month it
was in. A month whose counts (all rows, and rows stamped since) already equal the lake's
is skipped: so the refresh after a reload, whose lookback re-reads the reload's stamp,
costs two counts a month, not a second reload. A day that would lose all or most of its
rows keeps them until a later count agrees, as in reconciliation (``reconcile.hold_drops``).
Steps 1 to 3 are skipped: everything was fetched whole.

``harvester verify --repair`` reuses steps 3 and 4 through ``Refresher.run(repair_days=...)``:
a run of kind ``repair`` fetches the given days again and replaces their rows, and never
moves the watermark (it has not looked at changed rows elsewhere). Both kinds share the
staging area, so a command that finds an interrupted run of the other kind finishes it first.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from dataclasses import dataclass
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from harvester import quarantine, reconcile
from harvester.client import ApiClient
from harvester.commit import committed_files, read_files, replace_partition, sweep
from harvester.config import Settings
from harvester.errors import LakeError
from harvester.humanize import duration_text
from harvester.lake import Lake
from harvester.lock import holding
from harvester.merge import MergeStats, merge_partition
from harvester.ops.lakeinfo import parallel_map, parquet_file
from harvester.partition import Partition
from harvester.pipeline import PipelineTotals
from harvester.plan import Planner
from harvester.progress import Progress
from harvester.report import RunOutcome, RunReport
from harvester.runner import (
    Service,
    ShardRunner,
    check_lake,
    learn_service,
    make_client,
    make_planner,
    open_lake,
    preflight,
)
from harvester.schema import ARROW_SCHEMA
from harvester.shard import EARLIEST_PROBE, Shard, changed_since_scope, month_spans
from harvester.signals import to_thread_to_the_end
from harvester.stamps import newest_stamp
from harvester.state import (
    CompleteRecord,
    HarvestState,
    RefreshRun,
    StageName,
    StoredPlan,
    WatermarkRecord,
    utc_now,
)

log = logging.getLogger("harvester.refresh")
T = TypeVar("T")
R = TypeVar("R")


def changed_since(state: HarvestState, lookback_days: int, ceiling: str | None = None) -> str:
    """The createDateTime from which changed rows are fetched (watermark - lookback). A
    watermark past ``ceiling`` (the future beyond the tolerance: written by an older
    version from a row stamped 9999-12-31) is not trusted: everything is fetched again."""
    mark = state.watermark()
    if mark is None or (ceiling is not None and mark > ceiling):
        return EARLIEST_PROBE.isoformat() + "T00:00:00"
    since = dt.datetime.fromisoformat(mark) - dt.timedelta(days=lookback_days)
    return since.replace(microsecond=0).isoformat()


def changed_rows_shard(since: str, coverage: tuple[dt.date, dt.date], stamp_form: str) -> Shard:
    """The one root shard of every row of the coverage created or changed since ``since``:
    refresh fetches it (split by the planner), ``plan`` counts it. Rows outside the
    coverage are never asked for, so never written."""
    first, last = coverage
    return Shard(first, last, scope=changed_since_scope(since, stamp_form))


def coverage_span(state: HarvestState) -> tuple[dt.date, dt.date]:
    """The days the lake covers now: an open end reaches today."""
    coverage = state.coverage()
    today = dt.datetime.now(dt.UTC).date()
    return coverage.first_day, coverage.last_day(today)


# -- reloads: detecting them, and what the lake holds per month --------------------------
def month_key(day: dt.date) -> str:
    """``YYYY-MM``: how a reload names the month of ``day``."""
    return f"{day.year:04d}-{day.month:02d}"


def _footer_rows(lake: Lake, path: str) -> int:
    """The rows of one data file, from its footer (a ranged read, not the whole file)."""
    with parquet_file(lake, path) as parquet:
        return int(parquet.metadata.num_rows)


def lake_row_count(state: HarvestState, plan: StoredPlan) -> int:
    """The rows in the lake's committed files, without a request: a done marker counted its
    files' rows, and only files of rewritten partitions (manifests) have their footers read.
    Quarantined rows are not in it (a few at most)."""
    markers = state.load_markers()
    manifests = state.load_manifests()
    rows = 0
    footers = [path for files in manifests.values() for path in files]
    for leaf in state.leaves(plan, markers):
        marker = markers.get(leaf.key)
        if marker is None or not marker.done:
            continue
        kept = [f for f in marker.files if Partition.of_file(f).path not in manifests]
        if len(kept) == len(marker.files):
            rows += marker.rows  # the marker counted exactly these files' rows
        else:
            footers.extend(kept)  # part of its rows were rewritten elsewhere
    return rows + sum(
        parallel_map(state.lake, lambda path: _footer_rows(state.lake, path), footers)
    )


def _stamps_of(lake: Lake, path: str) -> pa.ChunkedArray:
    """One file's ``createDateTime`` column (ranged reads of that column only)."""
    with parquet_file(lake, path) as parquet:
        return parquet.read(columns=["createDateTime"]).column("createDateTime")


def lake_months(
    state: HarvestState, committed: dict[str, list[str]], since: str
) -> dict[str, list[int]]:
    """Per month (``YYYY-MM``): ``[rows, rows stamped at or after since]`` in the lake, its
    quarantined rows included as the service counts them. One column is read per file, one
    partition at a time, so memory is one month's stamps."""
    moment = dt.datetime.fromisoformat(since)
    counts = quarantine.count(state, since=moment)
    out: dict[str, list[int]] = {}
    for recent, per_day in enumerate((counts.days()[0], counts.days(recent=True)[0])):
        for day, n in per_day.items():
            out.setdefault(month_key(day), [0, 0])[recent] += n
    for partition, files in committed.items():
        part = Partition.parse(partition)
        entry = out.setdefault(month_key(dt.date(part.year, part.month, 1)), [0, 0])
        for stamps in parallel_map(state.lake, lambda path: _stamps_of(state.lake, path), files):
            bound = pa.scalar(moment, type=stamps.type)
            entry[0] += len(stamps)
            entry[1] += int(pc.sum(pc.greater_equal(stamps, bound).cast(pa.int64())).as_py() or 0)
    return out


@dataclass(frozen=True)
class ReloadCheck:
    """Whether a refresh is a reload, and roughly what one costs. ``requests``: a page per
    ``page_size`` rows of the larger of the two counts, plus two counts a month (a month's
    rows, then its changed rows); the planner's counts for months too big for one shard
    come on top. ``seconds``: those requests at ``rate`` (None: no rate limit set)."""

    changed: int  # the changed-rows shard's count: rows stamped at or after ``since``
    lake_rows: int  # rows the lake's committed files hold
    share: float  # the ``reload_share`` setting
    months: int  # months of the coverage: each is counted, and fetched unless current
    page_size: int
    rate: float

    @property
    def is_reload(self) -> bool:
        """Changed rows at least ``share`` of the lake's (a lake of no rows never reloads:
        its first refresh fetches everything either way)."""
        return self.lake_rows > 0 and self.changed >= self.share * self.lake_rows

    @property
    def requests(self) -> int:
        return math.ceil(max(self.changed, self.lake_rows) / self.page_size) + 2 * self.months

    @property
    def seconds(self) -> float | None:
        return self.requests / self.rate if self.rate > 0 else None

    def cost_text(self) -> str:
        time = (
            "no rate limit configured"
            if self.seconds is None
            else f"about {duration_text(self.seconds)} at {self.rate:g} requests/s"
        )
        return f"about {self.requests:,} requests ({self.months} months), {time}"


def reload_check(
    settings: Settings, changed: int, lake_rows: int, covered: tuple[dt.date, dt.date], page: int
) -> ReloadCheck:
    """The check refresh makes before fetching, and ``plan`` shows."""
    months = len(month_spans(*covered))
    return ReloadCheck(changed, lake_rows, settings.reload_share, months, page, settings.rate)


def require_completed(state: HarvestState) -> tuple[CompleteRecord, StoredPlan]:
    complete, plan = state.load_complete(), state.load_plan()
    if complete is None or plan is None:
        raise LakeError(
            f"{state.lake.uri} holds no completed harvest: run `harvester harvest` first"
        )
    return complete, plan


class Refresher:
    """The refresh's phase machine: each phase is saved in ``RefreshRun`` before the next
    starts, and every phase is idempotent, so a killed run resumes where it stopped."""

    def __init__(self, settings: Settings, progress: Progress, command: str = "refresh") -> None:
        self.settings = settings
        self.progress = progress
        self.lake = open_lake(settings, for_write=True)  # first: a bad --out costs no request
        self.state = HarvestState(self.lake)
        self.report = RunReport.begin(command, settings)
        self.merge_stats = MergeStats()
        self.totals = PipelineTotals()
        self.known: Service  # what the service was found to do: set once the client is up
        # The changed-rows shard as counted by ``_new_run``: its fetch needs no second count.
        self._changed_root: Shard | None = None

    # -- the run -------------------------------------------------------------------------
    async def run(self, repair_days: dict[str, str] | None = None) -> RunOutcome:
        """A refresh; given ``repair_days`` (day -> reason), a repair of just those days."""
        check_lake(self.state, self.settings, "refresh")  # other files, another source: refused
        self.state.check_compatible()
        _, plan = require_completed(self.state)
        async with make_client(self.settings) as client:
            with self.report.kept(self.state, client.stats):
                self.progress.bind_stats(client.progress_counters)
                await preflight(client)
                self.known = await learn_service(self.settings, self.state, client)
                self.settings = self.known.settings(self.settings)
                planner = make_planner(self.settings, client, self.known.limits)
                async with holding(self.state, self.report.command):
                    self.report.writing = True
                    self.known.remember(self.state)
                    try:
                        run, ok = await self._run_locked(plan, planner, client, repair_days)
                    except BaseException:
                        # Stopped early: the report still says what was done (``kept``).
                        self.report.absorb_totals(self.totals)
                        self._count_lake_rows(plan)
                        raise
                    finally:
                        self.known.remember(self.state)
                        self.report.extra["service"] = self.known.summary()
                self.report.absorb_totals(self.totals)
                self.report.finish("complete" if ok else "incomplete", client.stats)
        self.progress.stop()
        self._count_lake_rows(plan)
        self.report.extra.update(
            {
                "since": run.since,
                "rows_added": self.merge_stats.added,
                "rows_updated": self.merge_stats.updated,
                "rows_deleted": self.merge_stats.deleted,
                "partitions_rewritten": run.partitions_rewritten,
                "days_repaired": run.repair_days or {},
                "reload": _reload_summary(run),
                "watermark": self.state.watermark(),
                "no_op": ok and not self.merge_stats.changed and not run.partitions_rewritten,
            }
        )
        self.report.save(self.state)
        return RunOutcome(self.report, ok)

    def _count_lake_rows(self, plan: StoredPlan) -> None:
        """The report's ``rows_in_lake``: the lake's committed rows now (the merge done).
        Also on the way out of a stopped run, so a failure to count is only logged."""
        try:
            self.report.rows_in_lake = lake_row_count(self.state, plan)
        except Exception as exc:  # the lake failing: the run's own error is the one to show
            log.warning("could not count the lake's rows for the report: %s", exc)

    async def _run_locked(
        self,
        plan: StoredPlan,
        planner: Planner,
        client: ApiClient,
        repair_days: dict[str, str] | None,
    ) -> tuple[RefreshRun, bool]:
        """Everything that writes the lake; runs under the lake's lock."""
        self.report.swept_files = sweep(self.lake, self._committed(plan))
        run, ok = self.state.load_refresh_run(), True
        if run is not None and (run.kind != "refresh" or repair_days is not None):
            # Its staged rows may be half merged and the staging area is shared: finish it
            # before starting ours (a repair is never resumed in place of a new one).
            self.report.events.append(
                f"finished interrupted {run.kind} {run.run_id} first (phase {run.phase})"
            )
            ok = await self._phases(run, plan, planner, client)
            if ok:
                run = None
        if ok:
            if run is None:
                run = await self._new_run(repair_days, client, plan)
                self.state.save_refresh_run(run)
            else:
                self.report.events.append(f"resumed refresh {run.run_id} at phase {run.phase}")
                if run.reload_span is not None:
                    self.report.events.append(
                        f"resumed reload: {len(run.months_done)} months done before"
                    )
            self.report.run_id = run.run_id
            ok = await self._phases(run, plan, planner, client)
        assert run is not None
        return run, ok

    def _committed(self, plan: StoredPlan) -> dict[str, list[str]]:
        return committed_files(self.state, plan, self.state.load_markers())

    async def _new_run(
        self, repair_days: dict[str, str] | None, client: ApiClient, plan: StoredPlan
    ) -> RefreshRun:
        if repair_days is not None:
            # Straight to the reconcile phase with the days already chosen: it fetches them.
            return RefreshRun(self.report.run_id, "", "reconcile", dict(repair_days), kind="repair")
        # The watermark this run will leave: the service's newest stamp now, before fetching
        # (``stamps``); a resumed run keeps it. Stamps in the future are reported, not used.
        current = self.state.watermark()
        newest = await newest_stamp(
            client,
            self.known.profile.stamp_form,
            low=current if current and current <= self._ceiling() else None,
            tolerance=dt.timedelta(days=self.settings.stamp_tolerance_days),
        )
        if newest.beyond:
            self.report.events.append(
                f"{newest.beyond} rows are stamped after {newest.ceiling} (the future):"
                " never taken as the watermark"
            )
        since = changed_since(self.state, self.settings.lookback_days, newest.ceiling)
        run = RefreshRun(self.report.run_id, since, watermark=newest.stamp or current)
        await self._check_reload(run, plan, client)
        return run

    async def _check_reload(self, run: RefreshRun, plan: StoredPlan, client: ApiClient) -> None:
        """Count the changed rows (one request, reused by their fetch) and compare them with
        the lake's rows; when they are most of it, make ``run`` a reload and say so."""
        covered = coverage_span(self.state)
        root = changed_rows_shard(run.since, covered, self.known.profile.stamp_form)
        root = root.with_expected(await client.count(root.criteria(self.settings.date_template)))
        self._changed_root = root
        lake_rows = await asyncio.to_thread(lake_row_count, self.state, plan)
        check = reload_check(
            self.settings, root.expected, lake_rows, covered, self.known.limits.page_size
        )
        if not check.is_reload:
            return
        committed = self._committed(plan)
        months = await asyncio.to_thread(lake_months, self.state, committed, run.since)
        # Rows the lake holds already with a stamp this recent: a reload it fetched before,
        # re-read through the lookback. Those months will be found current and skipped.
        held = sum(recent for _, recent in months.values())
        run.phase = "reload"
        run.reload_span = [covered[0].isoformat(), covered[1].isoformat()]
        run.lake_months = months
        run.reload_counts = {
            "changed_rows": check.changed,
            "lake_rows": check.lake_rows,
            "held_rows": held,
            "months": check.months,
            "estimated_requests": check.requests,
            "months_fetched": 0,
            "months_current": 0,
        }
        if check.seconds is not None:  # at the configured rate; none set: no estimate
            run.reload_counts["estimated_seconds"] = round(check.seconds)
        what = (
            f"{check.changed:,} rows changed since {run.since}, and the lake holds"
            f" {check.lake_rows:,} (reload_share {check.share:g})"
        )
        if check.changed - held >= check.share * check.lake_rows:
            message = (
                f"the source reloaded: {what}. Fetching the coverage again month by month,"
                f" each month replacing its partition: {check.cost_text()}"
            )
            log.warning("%s", message)
        else:
            message = (
                f"{what}, {held:,} of them already in the lake with that stamp (a reload"
                " fetched before, re-read through the lookback): checking the coverage month"
                " by month; months whose counts match are not fetched"
            )
            log.info("%s", message)
        self.report.events.append(f"reload: {message}")

    def _ceiling(self) -> str:
        moment = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        return (moment + dt.timedelta(days=self.settings.stamp_tolerance_days)).isoformat()

    async def _phases(
        self, run: RefreshRun, plan: StoredPlan, planner: Planner, client: ApiClient
    ) -> bool:
        covered = coverage_span(self.state)
        if run.phase == "reload":
            if not await self._reload(run, plan, planner, client):
                return False
            run.phase = "finish"
            self.state.save_refresh_run(run)
        if run.phase == "fetch-changed":
            root = self._changed_root
            counted = root is not None and root.scope == changed_since_scope(
                run.since, self.known.profile.stamp_form
            )
            if root is None or not counted:
                root = changed_rows_shard(run.since, covered, self.known.profile.stamp_form)
            if not await self._fetch_stage("changed", [root], planner, client, counted=counted):
                return False
            run.phase = "merge-changed"
            self.state.save_refresh_run(run)
        if run.phase == "merge-changed":
            await to_thread_to_the_end(self._merge_stage, "changed", run, plan, set())
            run.phase = "reconcile"
            self.state.save_refresh_run(run)
        if run.phase == "reconcile":
            if run.repair_days is None:
                run.repair_days = await self._reconcile(plan, client, covered, run)
                self.state.save_refresh_run(run)
            days = [dt.date.fromisoformat(d) for d in sorted(run.repair_days)]
            if days and not await self._fetch_stage(
                "days", [Shard(d, d) for d in days], planner, client
            ):
                return False
            run.phase = "merge-days"
            self.state.save_refresh_run(run)
        if run.phase == "merge-days":
            repair = {dt.date.fromisoformat(d) for d in run.repair_days or {}}
            await to_thread_to_the_end(self._merge_stage, "days", run, plan, repair)
            run.phase = "finish"
            self.state.save_refresh_run(run)
        await to_thread_to_the_end(self._finish, run)
        return True

    async def _reconcile(
        self,
        plan: StoredPlan,
        client: ApiClient,
        covered: tuple[dt.date, dt.date],
        run: RefreshRun,
    ) -> dict[str, str]:
        """The days to fetch again whole: those of the coverage whose counts differ, but a day
        that would lose all or most of its rows only once a later refresh agrees."""
        committed = self._committed(plan)
        first, last = await asyncio.to_thread(
            reconcile.window, self.state, committed, *covered, self.settings.reconcile_days
        )
        found = await reconcile.differing_in_window(
            self.state, committed, client, self.settings.date_template, first, last
        )
        verdict = reconcile.hold_drops(
            found.differing,
            self.state.load_pending_drops(),
            self.settings.drop_share,
            run.run_id,
            utc_now(),
        )
        self.state.save_pending_drops(verdict.pending)
        self.report.extra["reconcile_window"] = [first.isoformat(), last.isoformat()]
        self.report.extra["quarantined_per_day"] = found.quarantined
        self.report.extra["days_held"] = verdict.held
        self.report.events.extend(f"kept {day}: {why}" for day, why in verdict.held.items())
        return verdict.repair

    # -- a reload: month by month ---------------------------------------------------------
    async def _reload(
        self, run: RefreshRun, plan: StoredPlan, planner: Planner, client: ApiClient
    ) -> bool:
        """Every month of the reload's span not done yet: skipped when its counts equal the
        lake's, else fetched whole into the ``reload`` stage and replacing its partition.
        Each month is recorded done only once committed, and the stage is emptied before
        the next, so a killed run resumes at its month (the stage's shards and pages kept)."""
        assert run.reload_span is not None
        first, last = (dt.date.fromisoformat(d) for d in run.reload_span)
        await self._skip_empty_months(run, month_spans(first, last), client)
        for start, end in month_spans(first, last):
            key = month_key(start)
            if key in run.months_done:
                continue
            stage = self.state.stage("reload")
            stored = stage.load_plan()
            if stored is not None and (stored.first, stored.last) != (start, end):
                # A month committed before the kill whose stage was not emptied yet.
                await to_thread_to_the_end(self.state.clear_stage, "reload")
                stored = None
            roots: list[Shard] = []
            if stored is None:
                whole = Shard(start, end)
                total = await client.count(whole.criteria(self.settings.date_template))
                if await self._month_current(run, whole, total, client):
                    self._month_done(run, key, "months_current")
                    continue
                roots = [whole.with_expected(total)]
            if not await self._fetch_stage("reload", roots, planner, client, counted=True):
                return False
            await to_thread_to_the_end(self._replace_month, run, plan, start, end)
            self._month_done(run, key, "months_fetched")
            await to_thread_to_the_end(self.state.clear_stage, "reload")
        return True

    async def _skip_empty_months(
        self, run: RefreshRun, months: list[tuple[dt.date, dt.date]], client: ApiClient
    ) -> None:
        """Runs of months the lake holds nothing of are counted in one request each, and
        done when the service holds nothing there either: a coverage with an open end
        reaches today, and must not cost a count for every empty month up to it."""
        runs: list[list[tuple[dt.date, dt.date]]] = [[]]
        for span in months:
            key = month_key(span[0])
            if key in run.months_done or run.lake_months.get(key, [0, 0])[0]:
                runs.append([])
            else:
                runs[-1].append(span)
        for empty in (r for r in runs if len(r) > 1):
            whole = Shard(empty[0][0], empty[-1][1])
            if await client.count(whole.criteria(self.settings.date_template)) == 0:
                run.months_done.extend(month_key(start) for start, _ in empty)
                current = run.reload_counts.get("months_current", 0)
                run.reload_counts["months_current"] = current + len(empty)
                self.state.save_refresh_run(run)

    async def _month_current(
        self, run: RefreshRun, whole: Shard, total: int, client: ApiClient
    ) -> bool:
        """Does the lake hold this month as the service does: as many rows, and as many
        stamped since the run's ``since`` (the second count only when the first agrees)?"""
        rows, recent = run.lake_months.get(month_key(whole.first), [0, 0])
        if total != rows:
            return False
        if total == 0:
            return True
        changed = Shard(
            whole.first,
            whole.last,
            scope=changed_since_scope(run.since, self.known.profile.stamp_form),
        )
        return await client.count(changed.criteria(self.settings.date_template)) == recent

    def _month_done(self, run: RefreshRun, key: str, outcome: str) -> None:
        run.months_done.append(key)
        run.reload_counts[outcome] = run.reload_counts.get(outcome, 0) + 1
        self.state.save_refresh_run(run)

    def _replace_month(
        self, run: RefreshRun, plan: StoredPlan, first: dt.date, last: dt.date
    ) -> None:
        """Replace the month's days with the staged rows, but keep the lake's rows of a day
        that would lose all or most of them until a later count agrees (``hold_drops``, as
        reconciliation does; the staged rows of such a day are upserted). Idempotent: run
        again on the same stage it finds nothing to change."""
        stage = self.state.stage("reload")
        stored = stage.load_plan()
        staged = committed_files(stage, stored, stage.load_markers()) if stored else {}
        partition = Partition.of(first).path
        committed = self._committed(plan)
        owned = committed.get(partition, [])
        existing = read_files(self.lake, owned)
        incoming = read_files(stage.lake, staged.get(partition, []))
        for other in sorted(set(staged) - {partition}):
            # A month's query returns rows of that month only; should a row be written
            # elsewhere all the same, it is upserted there, never dropped.
            theirs = committed.get(other, [])
            before = read_files(self.lake, theirs)
            rows = read_files(stage.lake, staged[other])
            merged, stats = merge_partition(before, rows, (), ARROW_SCHEMA.empty_table())
            self._commit_partition(run, other, theirs, merged, stats, before)
        days = Shard(first, last).days
        lake_days = _per_day(existing, quarantine.count(self.state).days()[0], days)
        service_days = _per_day(incoming, quarantine.count(stage).days()[0], days)
        differing = {
            d: (lake_days[d], service_days[d]) for d in days if lake_days[d] != service_days[d]
        }
        pending = self.state.load_pending_drops()
        verdict = reconcile.hold_drops(
            differing, pending, self.settings.drop_share, run.run_id, utc_now()
        )
        held = pa.array(sorted(dt.date.fromisoformat(d) for d in verdict.held), pa.date32())
        is_held = pc.is_in(incoming.column("submissionDate"), value_set=held)
        replaced = set(days) - set(held.to_pylist())
        merged, stats = merge_partition(
            existing, incoming.filter(is_held), replaced, incoming.filter(pc.invert(is_held))
        )
        self._commit_partition(run, partition, owned, merged, stats, existing)
        # This month's days are settled now: what is held stays pending, the rest is not.
        month = {d.isoformat() for d in days}
        kept = {d: drop for d, drop in pending.items() if d not in month}
        self.state.save_pending_drops({**kept, **verdict.pending})
        self.report.extra.setdefault("days_held", {}).update(verdict.held)
        self.report.events.extend(f"kept {day}: {why}" for day, why in verdict.held.items())
        # Rows quarantined before for the replaced days were fetched again: the stage's
        # quarantine stands for them now.
        quarantine.supersede_days(self.state, replaced, run.run_id)
        quarantine.promote(self.state, stage, run.run_id, "reload")

    def _commit_partition(
        self,
        run: RefreshRun,
        partition: str,
        owned: list[str],
        merged: pa.Table,
        stats: MergeStats,
        existing: pa.Table,
    ) -> None:
        """Count a reload's merge and replace the partition, unless nothing changed (the
        row count too: duplicate copies of a replaced day's rows go uncounted)."""
        self.merge_stats += stats
        if not stats.changed and merged.num_rows == existing.num_rows:
            return
        replace_partition(self.state, partition, owned, merged, f"part-{run.run_id}-reload")
        if partition not in run.partitions_rewritten:
            run.partitions_rewritten.append(partition)
        self.state.save_refresh_run(run)

    # -- fetching into a staging area -----------------------------------------------------
    async def _fetch_stage(
        self,
        name: StageName,
        roots: list[Shard],
        planner: Planner,
        client: ApiClient,
        *,
        counted: bool = False,
    ) -> bool:
        """Fetch ``roots`` (``counted``: their ``expected`` is a count just made) into the
        stage ``name``, planned once and resumed from its markers."""
        stage = self.state.stage(name)
        stored = stage.load_plan()
        if stored is None:
            if not counted:
                roots = [
                    s.with_expected(await client.count(s.criteria(self.settings.date_template)))
                    for s in roots
                ]
            shards: list[Shard] = []
            for shard in roots:
                shards.extend(await planner.refine(shard))
            stored = StoredPlan(
                roots[0].first,
                roots[-1].last,
                self.settings.date_template,
                self.settings.shard_size,
                shards,
            )
            stage.save_plan(stored)
        runner = ShardRunner(
            self.settings, client, planner, stage, stored, self.progress, self.known.limits
        )
        await runner.run_pending()
        self.totals.merge(runner.pipeline.totals)
        self.report.count_shards(*runner.leaves())
        failed = runner.failures()
        self.report.failures.update(failed)
        return not failed

    # -- merging a staging area into the lake --------------------------------------------
    def _merge_stage(
        self, name: StageName, run: RefreshRun, plan: StoredPlan, repair_days: set[dt.date]
    ) -> None:
        stage = self.state.stage(name)
        stored = stage.load_plan()
        staged = committed_files(stage, stored, stage.load_markers()) if stored else {}
        committed = self._committed(plan)
        partitions = set(staged) | {Partition.of(d).path for d in repair_days}
        for partition in sorted(partitions):
            incoming = read_files(stage.lake, staged.get(partition, []))
            owned = committed.get(partition, [])
            if run.kind == "repair":
                # verify --repair names every day a missing committed file held among the
                # days to fetch again: the partition is rebuilt without it.
                listed = set(self.lake.list_files(partition, suffix=".parquet"))
                owned = [f for f in owned if f in listed]
            existing = read_files(self.lake, owned)
            days = {d for d in repair_days if Partition.of(d).path == partition}
            if name == "days":
                merged, stats = merge_partition(
                    existing, ARROW_SCHEMA.empty_table(), days, incoming
                )
            else:
                merged, stats = merge_partition(existing, incoming, (), ARROW_SCHEMA.empty_table())
            self.merge_stats += stats
            # Row count too: duplicate copies of a replaced day's rows are dropped by the
            # merge without being counted as changes (they share their id with a kept row).
            # A missing file dropped: rewritten even if its rows all went from the service.
            unchanged = not stats.changed and merged.num_rows == existing.num_rows
            if unchanged and len(owned) == len(committed.get(partition, [])):
                continue
            prefix = f"part-{run.run_id}-{name}"
            replace_partition(self.state, partition, committed.get(partition, []), merged, prefix)
            if partition not in run.partitions_rewritten:
                run.partitions_rewritten.append(partition)
            self.state.save_refresh_run(run)

    def _finish(self, run: RefreshRun) -> None:
        """Move the watermark (data is committed), keep quarantined rows, drop staging."""
        # Rows quarantined earlier on days fetched again whole are superseded by this fetch.
        repaired = {dt.date.fromisoformat(d) for d in run.repair_days or {}}
        quarantine.supersede_days(self.state, repaired, run.run_id)
        stages: tuple[StageName, ...] = ("changed", "days")
        for name in stages:
            quarantine.promote(self.state, self.state.stage(name), run.run_id, name)
        # The watermark is the service's newest stamp when the run started (``_new_run``),
        # not the newest fetched: it cannot run ahead of rows changed while the run went on.
        # A repair fetched some days only and moves no watermark.
        record = self.state.load_watermark()
        current = None if record is None else record.watermark
        newest = run.watermark
        if run.kind == "refresh" and newest and (current is None or newest != current):
            self.state.save_watermark(WatermarkRecord(newest, utc_now(), run.run_id))
        self.state.clear_refresh()


def _per_day(
    table: pa.Table, quarantined: dict[dt.date, int], days: list[dt.date]
) -> dict[dt.date, int]:
    """Rows per day of ``days`` in ``table`` plus the quarantined ones (the service counts
    them in their day)."""
    counts = {d: quarantined.get(d, 0) for d in days}
    if table.num_rows:
        for item in pc.value_counts(table.column("submissionDate")).to_pylist():
            if item["values"] in counts:
                counts[item["values"]] += int(item["counts"])
    return counts


def _reload_summary(run: RefreshRun) -> dict[str, object] | None:
    """What the report says of a reload (None: the run was an ordinary refresh)."""
    if run.reload_span is None:
        return None
    return {"span": run.reload_span, **run.reload_counts, "months_done": len(run.months_done)}


async def run_refresh(settings: Settings, progress: Progress) -> RunOutcome:
    return await Refresher(settings, progress).run()
