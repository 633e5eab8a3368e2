"""The harvest: plan once, fetch every shard, commit each by its marker, check, finish.

Order matters for "a bad start leaves the lake untouched": settings are validated, the lake
is only read, and one count query must succeed (proving the URL and the key) before
anything is written. A run that finds a plan under ``_harvest/`` resumes it: shards with a
``done`` marker are never fetched again.

The closing check recounts every shard (one cheap request each, ~1% of a harvest's
requests) and fetches again any whose count moved while the harvest ran, so the lake ends
equal to the source as of the end of the run, not as of its start.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass

from harvester.checkpoint import sweep_page_stores
from harvester.client import ApiClient
from harvester.commit import committed_files, sweep
from harvester.config import Settings
from harvester.errors import ConfigError, QueryError, RetriesExhausted
from harvester.lake import Lake
from harvester.lock import holding
from harvester.pipeline import LakeSink, PipelineConfig, ShardPipeline
from harvester.plan import UNDATED_KEY, Planner, Shard
from harvester.progress import Progress
from harvester.report import RunReport
from harvester.state import HarvestState, ShardMarker, StoredPlan, utc_now

log = logging.getLogger("harvester.harvest")


def make_client(settings: Settings) -> ApiClient:
    return ApiClient(
        settings.api_url,
        settings.api_key.reveal() if settings.api_key else None,
        rate=settings.rate,
        concurrency=settings.concurrency,
        timeout=settings.timeout,
        max_attempts=settings.max_attempts,
        min_429_wait=settings.min_429_wait,
        backoff_base=settings.backoff_base,
        backoff_max=settings.backoff_max,
    )


async def preflight(client: ApiClient) -> None:
    """Prove the URL, the path and the key before the lake is touched. The field list must
    exist, so its 404 means a wrong --api-url (a search's 404 would look like "no rows")."""
    await client.fields()


def open_lake(settings: Settings) -> Lake:
    return Lake.open(settings.out, settings.storage_options())


@dataclass
class HarvestOutcome:
    report: RunReport
    complete: bool

    def astuple(self) -> tuple[RunReport, bool]:
        return self.report, self.complete


async def _make_plan(settings: Settings, planner: Planner, client: ApiClient) -> StoredPlan:
    last = settings.date_to or dt.datetime.now(dt.UTC).date()
    first = settings.date_from or await planner.probe_first_day(last)
    if first is None:
        raise ConfigError(f"the service holds no rows with a mail date up to {last}")
    log.info("planning %s .. %s", first, last)
    shards = await planner.plan(first, last)
    undated = Shard(first, last, undated=True)
    # Rows without a mail date match no date query; one extra shard catches them (they are
    # quarantined, never silently missed). A service that refuses the query costs us only
    # that safety net, not the harvest.
    try:
        shards.append(
            undated.with_expected(await client.count(undated.criteria(settings.date_template)))
        )
    except QueryError as exc:
        log.warning("the service refused the query for rows without a mail date: %s", exc)
    return StoredPlan(first, last, settings.date_template, settings.shard_size, shards)


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


async def run_harvest(settings: Settings, progress: Progress) -> HarvestOutcome:
    lake = open_lake(settings)
    state = HarvestState(lake)
    state.check_compatible()
    report = RunReport.begin("harvest", settings)
    started = time.monotonic()
    async with make_client(settings) as client:
        progress.bind_stats(client.progress_counters)
        planner = Planner(client, settings.date_template, settings.shard_size)
        await preflight(client)
        plan = state.load_plan()
        new_plan = plan is None
        if plan is None:
            plan = await _make_plan(settings, planner, client)
        else:
            _check_plan_matches(plan, settings)
            if state.load_complete() is not None:
                # Re-harvesting a finished lake would fight refresh's partition rewrites.
                report.status = "complete"
                report.events.append("the harvest of this lake is already complete: use refresh")
                return HarvestOutcome(report, True)
        # Everything before this line only read; from here on the lake is written.
        async with holding(lake, "harvest"):
            if new_plan:
                state.write_meta()
                state.save_plan(plan)
            complete = await _harvest_plan(settings, state, plan, planner, client, progress, report)
        report.absorb_client(client.stats, time.monotonic() - started)
    report.status = "complete" if complete else "incomplete"
    report.saved_to = state.save_report(report.run_id, report.to_json())
    return HarvestOutcome(report, complete)


async def _harvest_plan(
    settings: Settings,
    state: HarvestState,
    plan: StoredPlan,
    planner: Planner,
    client: ApiClient,
    progress: Progress,
    report: RunReport,
) -> bool:
    """Fetch every pending shard, run the closing check, record completion."""
    report.plan_range = (plan.first.isoformat(), plan.last.isoformat())
    markers = state.load_markers()
    leaves = state.leaves(plan, markers)
    report.swept_files = sweep(state.lake, committed_files(state, plan, markers))
    todo = pending_shards(state, leaves, markers)
    # Pages kept for shards no longer pending (committed or split by a killed run) go.
    report.swept_files += sweep_page_stores(state.lake, {s.slug for s in todo})
    pipeline_config = PipelineConfig(
        settings.concurrency,
        settings.rows,
        settings.max_window,
        settings.shard_attempts,
        plan.date_template,
    )
    pipeline = ShardPipeline(
        client,
        planner,
        LakeSink(state, page_checkpoints=settings.page_checkpoints),
        pipeline_config,
        progress,
    )
    progress.start(len(leaves), len(leaves) - len(todo), _committed_rows(leaves, markers))
    await pipeline.run(todo)

    # Closing check: recount and fetch again whatever moved, a bounded number of rounds.
    for _ in range(settings.shard_attempts):
        markers = state.load_markers()
        leaves = state.leaves(plan, markers)
        moved = await _moved_shards(client, plan, leaves, markers)
        report.closing_check_requests += len(leaves)
        if not moved:
            break
        report.events.append(f"closing check: {len(moved)} shards changed; fetched again")
        progress.add_shards(len(moved))
        await pipeline.run(moved)

    markers = state.load_markers()
    leaves = state.leaves(plan, markers)
    report.absorb_totals(pipeline.totals)
    report.failures = {
        s.key: m.cause or ""
        for s in leaves
        if (m := markers.get(s.key)) is not None and m.status == "failed"
    }
    report.rows_in_lake = _committed_rows(leaves, markers)
    complete = all((m := markers.get(s.key)) is not None and m.status == "done" for s in leaves)
    if complete:
        watermark = max((m.max_create for m in markers.values() if m.max_create), default=None)
        state.save_complete(
            {
                "completed_at": utc_now(),
                "rows": report.rows_in_lake,
                "shards": len(leaves),
                "watermark": watermark,
            }
        )
    return complete


def pending_shards(
    state: HarvestState, leaves: list[Shard], markers: dict[str, ShardMarker]
) -> list[Shard]:
    """Shards not yet done. Shards planned empty are committed at once (no request): the
    closing check recounts them, so rows that appear there later are still fetched."""
    todo = []
    for shard in leaves:
        marker = markers.get(shard.key)
        if marker is not None and marker.status == "done":
            continue
        if shard.expected == 0 and marker is None and shard.key != UNDATED_KEY:
            state.save_marker(shard, ShardMarker(shard.key, "done"))
            continue
        todo.append(shard)
    return todo


def _committed_rows(leaves: list[Shard], markers: dict[str, ShardMarker]) -> int:
    return sum(m.rows for s in leaves if (m := markers.get(s.key)) and m.status == "done")


async def _moved_shards(
    client: ApiClient, plan: StoredPlan, leaves: list[Shard], markers: dict[str, ShardMarker]
) -> list[Shard]:
    """Shards whose count differs from what was committed (or that are not done)."""

    async def count(shard: Shard) -> int | None:
        try:
            return await client.count(shard.criteria(plan.date_template))
        except RetriesExhausted as exc:
            log.warning("closing check could not count %s: %s", shard.key, exc)
            return None

    counts = await asyncio.gather(*(count(s) for s in leaves))
    moved = []
    for shard, counted in zip(leaves, counts, strict=True):
        marker = markers.get(shard.key)
        if marker is None or marker.status != "done":
            moved.append(shard if counted is None else shard.with_expected(counted))
        elif counted is not None and marker.num_found != counted:
            moved.append(shard.with_expected(counted))
    return moved
