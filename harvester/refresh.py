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

``harvester verify --repair`` reuses steps 3 and 4 through ``Refresher.run(repair_days=...)``:
a run of kind ``repair`` fetches the given days again and replaces their rows, and never
moves the watermark (it has not looked at changed rows elsewhere). Both kinds share the
staging area, so a command that finds an interrupted run of the other kind finishes it first.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from harvester import quarantine, reconcile
from harvester.client import ApiClient
from harvester.commit import committed_files, read_files, replace_partition, sweep
from harvester.config import Settings
from harvester.errors import LakeError
from harvester.lock import holding
from harvester.merge import MergeStats, merge_partition
from harvester.partition import Partition
from harvester.pipeline import PipelineTotals
from harvester.plan import Planner
from harvester.progress import Progress
from harvester.report import RunOutcome, RunReport
from harvester.runner import (
    Service,
    ShardRunner,
    learn_service,
    make_client,
    make_planner,
    open_lake,
    preflight,
)
from harvester.schema import ARROW_SCHEMA
from harvester.shard import EARLIEST_PROBE, Shard, changed_since_scope
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
        self.lake = open_lake(settings)
        self.state = HarvestState(self.lake)
        self.report = RunReport.begin(command, settings)
        self.merge_stats = MergeStats()
        self.totals = PipelineTotals()
        self.known: Service  # what the service was found to do: set once the client is up

    # -- the run -------------------------------------------------------------------------
    async def run(self, repair_days: dict[str, str] | None = None) -> RunOutcome:
        """A refresh; given ``repair_days`` (day -> reason), a repair of just those days."""
        self.state.check_compatible()
        _, plan = require_completed(self.state)
        async with make_client(self.settings) as client:
            self.progress.bind_stats(client.progress_counters)
            await preflight(client)
            self.known = await learn_service(self.settings, self.state, client)
            self.settings = self.known.settings(self.settings)
            planner = make_planner(self.settings, client, self.known.limits)
            async with holding(self.state, self.report.command):
                self.known.remember(self.state)
                try:
                    run, ok = await self._run_locked(plan, planner, client, repair_days)
                finally:
                    self.known.remember(self.state)
                    self.report.extra["service"] = self.known.summary()
            self.report.absorb_totals(self.totals)
            self.report.finish("complete" if ok else "incomplete", client.stats)
        self.progress.stop()
        self.report.extra.update(
            {
                "since": run.since,
                "rows_added": self.merge_stats.added,
                "rows_updated": self.merge_stats.updated,
                "rows_deleted": self.merge_stats.deleted,
                "partitions_rewritten": run.partitions_rewritten,
                "days_repaired": run.repair_days or {},
                "watermark": self.state.watermark(),
                "no_op": ok and not self.merge_stats.changed and not run.partitions_rewritten,
            }
        )
        self.report.save(self.state)
        return RunOutcome(self.report, ok)

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
                run = await self._new_run(repair_days, client)
                self.state.save_refresh_run(run)
            else:
                self.report.events.append(f"resumed refresh {run.run_id} at phase {run.phase}")
            self.report.run_id = run.run_id
            ok = await self._phases(run, plan, planner, client)
        assert run is not None
        return run, ok

    def _committed(self, plan: StoredPlan) -> dict[str, list[str]]:
        return committed_files(self.state, plan, self.state.load_markers())

    async def _new_run(self, repair_days: dict[str, str] | None, client: ApiClient) -> RefreshRun:
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
        return RefreshRun(self.report.run_id, since, watermark=newest.stamp or current)

    def _ceiling(self) -> str:
        moment = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        return (moment + dt.timedelta(days=self.settings.stamp_tolerance_days)).isoformat()

    async def _phases(
        self, run: RefreshRun, plan: StoredPlan, planner: Planner, client: ApiClient
    ) -> bool:
        covered = coverage_span(self.state)
        if run.phase == "fetch-changed":
            root = changed_rows_shard(run.since, covered, self.known.profile.stamp_form)
            if not await self._fetch_stage("changed", [root], planner, client):
                return False
            run.phase = "merge-changed"
            self.state.save_refresh_run(run)
        if run.phase == "merge-changed":
            await asyncio.to_thread(self._merge_stage, "changed", run, plan, set())
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
            await asyncio.to_thread(self._merge_stage, "days", run, plan, repair)
            run.phase = "finish"
            self.state.save_refresh_run(run)
        await asyncio.to_thread(self._finish, run)
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

    # -- fetching into a staging area -----------------------------------------------------
    async def _fetch_stage(
        self, name: StageName, roots: list[Shard], planner: Planner, client: ApiClient
    ) -> bool:
        stage = self.state.stage(name)
        stored = stage.load_plan()
        if stored is None:
            counted = [
                s.with_expected(await client.count(s.criteria(self.settings.date_template)))
                for s in roots
            ]
            shards: list[Shard] = []
            for shard in counted:
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


async def run_refresh(settings: Settings, progress: Progress) -> RunOutcome:
    return await Refresher(settings, progress).run()
