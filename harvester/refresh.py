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

A staging area is a small lake of its own under ``_harvest/refresh/`` (plan, shard markers,
Parquet files), so it reuses the harvest's pipeline, checkpoints and resume unchanged.
``_harvest/refresh/run.json`` records the phase; a killed refresh run again picks up
where it stopped, and every step is idempotent.

``harvester verify --repair`` reuses steps 3 and 4 through ``Refresher.run(repair_days=...)``:
a run of kind ``repair`` fetches the given days again and replaces their rows, and never
moves the watermark (it has not looked at changed rows elsewhere). Both kinds share the
staging area, so a command that finds an interrupted run of the other kind finishes it first.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow.compute as pc

from harvester.checkpoint import sweep_page_stores
from harvester.client import ApiClient
from harvester.commit import committed_files, read_files, replace_partition, sweep
from harvester.config import Settings
from harvester.errors import LakeError
from harvester.harvest import make_client, open_lake, pending_shards, preflight
from harvester.lake import Lake
from harvester.lock import holding
from harvester.merge import MergeStats, merge_partition
from harvester.pipeline import LakeSink, PipelineConfig, PipelineTotals, ShardPipeline
from harvester.plan import EARLIEST_PROBE, Planner, Shard, month_spans
from harvester.progress import Progress
from harvester.report import RunReport
from harvester.schema import ARROW_SCHEMA
from harvester.state import ROOT, HarvestState, StoredPlan, utc_now
from harvester.writer import parse_partition, partition_of

log = logging.getLogger("harvester.refresh")
REFRESH = f"{ROOT}/refresh"
WATERMARK = f"{ROOT}/watermark.json"


@dataclass
class RefreshRun:
    """The checkpoint of one refresh: survives a crash, deleted when the refresh ends."""

    run_id: str
    since: str
    phase: str = "fetch-changed"
    repair_days: dict[str, str] | None = None
    stats: dict[str, int] = field(default_factory=dict)
    partitions_rewritten: list[str] = field(default_factory=list)
    kind: str = "refresh"  # or "repair": verify --repair, given days only, watermark untouched

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class RefreshOutcome:
    report: RunReport
    complete: bool

    def astuple(self) -> tuple[RunReport, bool]:
        return self.report, self.complete


class Refresher:
    def __init__(self, settings: Settings, progress: Progress, command: str = "refresh") -> None:
        self.settings = settings
        self.progress = progress
        self.lake = open_lake(settings)
        self.state = HarvestState(self.lake)
        self.report = RunReport.begin(command, settings)
        self.merge_stats = MergeStats()
        self.totals = PipelineTotals()

    # -- staging areas: small lakes of their own under _harvest/refresh/ --------------
    def _stage(self, name: str) -> HarvestState:
        uri = f"{self.lake.uri.rstrip('/')}/{REFRESH}/{name}"
        return HarvestState(Lake.open(uri, self.settings.storage_options()))

    def _load_run(self) -> RefreshRun | None:
        if not self.lake.exists(f"{REFRESH}/run.json"):
            return None
        return RefreshRun(**orjson.loads(self.lake.read_bytes(f"{REFRESH}/run.json")))

    def _save_run(self, run: RefreshRun) -> None:
        self.lake.write_bytes(
            f"{REFRESH}/run.json", orjson.dumps(run.to_json(), option=orjson.OPT_INDENT_2)
        )

    def watermark(self, complete: dict[str, Any]) -> str | None:
        if self.lake.exists(WATERMARK):
            return str(orjson.loads(self.lake.read_bytes(WATERMARK))["watermark"])
        value = complete.get("watermark")
        return None if value is None else str(value)

    # -- the run -------------------------------------------------------------------------
    async def run(self, repair_days: dict[str, str] | None = None) -> RefreshOutcome:
        """A refresh; given ``repair_days`` (day -> reason), a repair of just those days."""
        self.state.check_compatible()
        complete = self.state.load_complete()
        plan = self.state.load_plan()
        if complete is None or plan is None:
            raise LakeError(
                f"{self.lake.uri} holds no completed harvest: run `harvester harvest` first"
            )
        started = time.monotonic()
        async with make_client(self.settings) as client:
            self.progress.bind_stats(client.progress_counters)
            planner = Planner(client, self.settings.date_template, self.settings.shard_size)
            await preflight(client)
            async with holding(self.lake, self.report.command):
                run, ok = await self._run_locked(plan, complete, planner, client, repair_days)
            self.report.absorb(self.totals, client.stats, time.monotonic() - started)
        self.progress.stop()
        self.report.status = "complete" if ok else "incomplete"
        self.report.extra.update(
            {
                "since": run.since,
                "rows_added": self.merge_stats.added,
                "rows_updated": self.merge_stats.updated,
                "rows_deleted": self.merge_stats.deleted,
                "partitions_rewritten": run.partitions_rewritten,
                "days_repaired": run.repair_days or {},
                "watermark": self.watermark(complete),
                "no_op": ok and not self.merge_stats.changed and not run.partitions_rewritten,
            }
        )
        self.report.saved_to = self.state.save_report(self.report.run_id, self.report.to_json())
        return RefreshOutcome(self.report, ok)

    async def _run_locked(
        self,
        plan: StoredPlan,
        complete: dict[str, Any],
        planner: Planner,
        client: ApiClient,
        repair_days: dict[str, str] | None,
    ) -> tuple[RefreshRun, bool]:
        """Everything that writes the lake; runs under the lake's lock."""
        self.report.swept_files = sweep(self.lake, self._committed(plan))
        run, ok = self._load_run(), True
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
                run = self._new_run(complete, repair_days)
                self._save_run(run)
            else:
                self.report.events.append(f"resumed refresh {run.run_id} at phase {run.phase}")
            self.report.run_id = run.run_id
            ok = await self._phases(run, plan, planner, client)
        assert run is not None
        return run, ok

    def _committed(self, plan: StoredPlan) -> dict[str, list[str]]:
        return committed_files(self.state, plan, self.state.load_markers())

    def _new_run(self, complete: dict[str, Any], repair_days: dict[str, str] | None) -> RefreshRun:
        if repair_days is None:
            return RefreshRun(self.report.run_id, self.since(complete))
        # Straight to the reconcile phase with the days already chosen: it fetches them.
        return RefreshRun(self.report.run_id, "", "reconcile", dict(repair_days), kind="repair")

    def since(self, complete: dict[str, Any]) -> str:
        """The createDateTime from which changed rows are fetched (watermark - lookback)."""
        mark = self.watermark(complete)
        if mark is None:
            return EARLIEST_PROBE.isoformat() + "T00:00:00"
        since = dt.datetime.fromisoformat(mark) - dt.timedelta(days=self.settings.lookback_days)
        return since.replace(microsecond=0).isoformat()

    async def _phases(
        self, run: RefreshRun, plan: StoredPlan, planner: Planner, client: ApiClient
    ) -> bool:
        today = dt.datetime.now(dt.UTC).date()
        if run.phase == "fetch-changed":
            scope = f"createDateTime:[{run.since}Z TO *]"
            root = Shard(EARLIEST_PROBE, today, scope=scope)
            ok = await self._fetch_stage("changed", [root], planner, client)
            if not ok:
                return False
            run.phase = "merge-changed"
            self._save_run(run)
        if run.phase == "merge-changed":
            await asyncio.to_thread(self._merge_stage, "changed", run, plan, set())
            run.phase = "reconcile"
            self._save_run(run)
        if run.phase == "reconcile":
            if run.repair_days is None:
                run.repair_days = await self.days_to_repair(plan, client)
                self._save_run(run)
            days = [dt.date.fromisoformat(d) for d in sorted(run.repair_days)]
            if days and not await self._fetch_stage(
                "days", [Shard(d, d) for d in days], planner, client
            ):
                return False
            run.phase = "merge-days"
            self._save_run(run)
        if run.phase == "merge-days":
            repair = {dt.date.fromisoformat(d) for d in run.repair_days or {}}
            await asyncio.to_thread(self._merge_stage, "days", run, plan, repair)
            run.phase = "finish"
            self._save_run(run)
        await asyncio.to_thread(self._finish, run)
        return True

    # -- fetching into a staging area -----------------------------------------------------
    async def _fetch_stage(
        self, name: str, roots: list[Shard], planner: Planner, client: ApiClient
    ) -> bool:
        stage = self._stage(name)
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
        markers = stage.load_markers()
        leaves = stage.leaves(stored, markers)
        todo = pending_shards(stage, leaves, markers)
        sweep_page_stores(stage.lake, {s.slug for s in todo})
        self.progress.start(len(leaves), len(leaves) - len(todo), 0)
        config = PipelineConfig(
            self.settings.concurrency,
            self.settings.rows,
            self.settings.max_window,
            self.settings.shard_attempts,
            self.settings.date_template,
        )
        pipeline = ShardPipeline(
            client,
            planner,
            LakeSink(stage, page_checkpoints=self.settings.page_checkpoints),
            config,
            self.progress,
        )
        self.totals.merge(await pipeline.run(todo))
        markers = stage.load_markers()
        failed = {
            s.key: m.cause or ""
            for s in stage.leaves(stored, markers)
            if (m := markers.get(s.key)) is not None and m.status == "failed"
        }
        self.report.failures.update(failed)
        return not failed

    # -- merging a staging area into the lake --------------------------------------------
    def _merge_stage(
        self, name: str, run: RefreshRun, plan: StoredPlan, repair_days: set[dt.date]
    ) -> None:
        stage = self._stage(name)
        stored = stage.load_plan()
        staged = committed_files(stage, stored, stage.load_markers()) if stored else {}
        committed = self._committed(plan)
        partitions = set(staged) | {partition_of(d) for d in repair_days}
        for partition in sorted(partitions):
            incoming = read_files(stage.lake, staged.get(partition, []))
            existing = read_files(self.lake, committed.get(partition, []))
            days = {d for d in repair_days if partition_of(d) == partition}
            if name == "days":
                merged, stats = merge_partition(
                    existing, ARROW_SCHEMA.empty_table(), days, incoming
                )
            else:
                merged, stats = merge_partition(existing, incoming, (), ARROW_SCHEMA.empty_table())
            self.merge_stats += stats
            # Row count too: duplicate copies of a replaced day's rows are dropped by the
            # merge without being counted as changes (they share their id with a kept row).
            if not stats.changed and merged.num_rows == existing.num_rows:
                continue
            prefix = f"part-{run.run_id}-{name}"
            replace_partition(self.lake, partition, committed.get(partition, []), merged, prefix)
            if partition not in run.partitions_rewritten:
                run.partitions_rewritten.append(partition)
            self._save_run(run)

    # -- reconciliation ------------------------------------------------------------------
    async def days_to_repair(self, plan: StoredPlan, client: ApiClient) -> dict[str, str]:
        """Days whose row count differs between lake and service, with the reason."""
        if self.settings.reconcile_days == 0:
            return {}
        committed = self._committed(plan)
        # Quarantined rows are counted by the service but not in the files; count them too,
        # or a day holding one would be "repaired" by every refresh.
        quarantined = await asyncio.to_thread(self.state.quarantined_per_day)
        in_files = await asyncio.to_thread(newest_day, self.lake, committed)
        newest = max([*quarantined, *([in_files] if in_files else [])], default=plan.last)
        first = newest - dt.timedelta(days=self.settings.reconcile_days - 1)
        # Only the partitions inside the window are read, not the whole lake.
        in_window = {
            p: files
            for p, files in committed.items()
            if parse_partition(p) >= (first.year, first.month)
        }
        lake_days = await asyncio.to_thread(day_counts, self.lake, in_window)
        for day, n in quarantined.items():
            lake_days[day] = lake_days.get(day, 0) + n
        last = max(newest, dt.datetime.now(dt.UTC).date())
        differing = await differing_days(
            client, self.settings.date_template, lake_days, first, last
        )
        repair = {
            day.isoformat(): f"lake has {lake} rows, service {service}"
            for day, (lake, service) in sorted(differing.items())
        }
        self.report.extra["reconcile_window"] = [first.isoformat(), last.isoformat()]
        return repair

    def _finish(self, run: RefreshRun) -> None:
        """Move the watermark (data is committed), keep quarantined rows, drop staging."""
        newest: str | None = None
        # Rows quarantined earlier on days fetched again whole are superseded by this fetch.
        repaired = {dt.date.fromisoformat(d) for d in run.repair_days or {}}
        self.state.drop_quarantined_days(repaired, keep_prefix=f"refresh-{run.run_id}-")
        for name in ("changed", "days"):
            stage = self._stage(name)
            for path in stage.lake.list_files(f"{ROOT}/quarantine", suffix=".jsonl"):
                target = f"{ROOT}/quarantine/refresh-{run.run_id}-{name}-{path.rsplit('/', 1)[-1]}"
                self.lake.write_bytes(target, stage.lake.read_bytes(path))
            for marker in stage.load_markers().values():
                if marker.max_create and (newest is None or marker.max_create > newest):
                    newest = marker.max_create
        current = (
            orjson.loads(self.lake.read_bytes(WATERMARK))["watermark"]
            if self.lake.exists(WATERMARK)
            else None
        )
        # A repair fetched some days only: changed rows elsewhere are not in the lake yet, so
        # moving the watermark past them would make the next refresh miss them.
        if run.kind == "refresh" and newest and (current is None or newest > current):
            record = {"watermark": newest, "updated_at": utc_now(), "run_id": run.run_id}
            self.lake.write_bytes(WATERMARK, orjson.dumps(record, option=orjson.OPT_INDENT_2))
        for path in self.lake.list_files(REFRESH):
            if path != f"{REFRESH}/run.json":
                self.lake.delete(path)
        self.lake.delete(f"{REFRESH}/run.json")  # last: the refresh is over
        self.lake.remove_empty_dirs(REFRESH)


async def differing_days(
    client: ApiClient,
    date_template: str,
    lake_days: Mapping[dt.date, int],
    first: dt.date,
    last: dt.date,
) -> dict[dt.date, tuple[int, int]]:
    """Days of [first, last] whose lake row count differs from the service's, as (lake,
    service). Months are counted first and days only within months that differ, so a
    mostly-equal range costs about one request per month."""

    async def count(a: dt.date, b: dt.date) -> int:
        return await client.count(Shard(a, b).criteria(date_template))

    months = month_spans(first, last)
    month_counts = await asyncio.gather(*(count(a, b) for a, b in months))
    differing: dict[dt.date, tuple[int, int]] = {}
    for (a, b), service in zip(months, month_counts, strict=True):
        lake = sum(n for d, n in lake_days.items() if a <= d <= b)
        if lake == service:
            continue
        days = [a + dt.timedelta(days=i) for i in range((b - a).days + 1)]
        day_service = await asyncio.gather(*(count(d, d) for d in days))
        for day, n in zip(days, day_service, strict=True):
            if lake_days.get(day, 0) != n:
                differing[day] = (lake_days.get(day, 0), n)
    return differing


def newest_day(lake: Lake, committed: dict[str, list[str]]) -> dt.date | None:
    """The newest mail date in the lake, reading only the newest non-empty partition."""
    for partition in sorted(committed, key=parse_partition, reverse=True):
        days = day_counts(lake, {partition: committed[partition]})
        if days:
            return max(days)
    return None


def day_counts(lake: Lake, committed: dict[str, list[str]]) -> dict[dt.date, int]:
    """Rows per mail date in the committed lake (reads one column)."""
    counts: dict[dt.date, int] = {}
    for files in committed.values():
        table = read_files(lake, files, columns=["submissionDate"])
        if table.num_rows == 0:
            continue
        values = pc.value_counts(table.column("submissionDate"))
        for item in values.to_pylist():
            counts[item["values"]] = counts.get(item["values"], 0) + int(item["counts"])
    return counts


async def run_refresh(settings: Settings, progress: Progress) -> RefreshOutcome:
    return await Refresher(settings, progress).run()
