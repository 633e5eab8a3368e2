"""Incremental refresh: bring a harvested lake back to equal the source, cheaply.

What it fetches is decided by ``decision``'s pure functions over the lake's facts and the
service's counts (``plan`` prints the same decisions); this module gathers those facts and
counts (``start``) and carries the decisions out, phase by phase:

1. **Changed rows.** Rows stamped (``createDateTime``) at or after the watermark minus
   ``lookback_days``, less the loads the lake provably holds already
   (``decision.ChangedScope``), are fetched, sharded like the harvest, into a staging area.
2. **Reconcile.** For the last ``reconcile_days`` of mail dates (0: the whole coverage) the
   lake's rows per month, then per day, are compared with the service's ``numFound``; the
   lake's side is counted as it will be once the staged changed rows are upserted
   (``Refresher._lake_rows``). A day that differs is fetched again whole into a second
   staging area (a day of more than ``NARROW_PAGES`` pages: only its id ranges whose
   counts differ, ``_narrow``). This is how deletions, which no stamp can show, leave the
   lake. A day that would lose all or most of its rows is counted again after the others
   are fetched, and goes in this run when both counts agree (``decision.confirm_drops``).
3. **Merge.** Partition by partition, the changed rows are upserted by ``id`` (the newest
   ``createDateTime`` among them winning) and then the fetched days replace the lake's rows
   of those days, in one pass that writes each touched file once
   (``storage.rewrite.merge_files``, ``merge.upsert_then_replace``); files holding no
   affected row stay as they are.
4. The watermark moves last, only after the data it covers is committed.

A staging area is a small lake of its own (``HarvestState.stage``: plan, shard markers,
data files named ``.parquet.staged``, so no reader sees them), and reuses the harvest's
pipeline, checkpoints and resume unchanged. ``state.RefreshRun`` records the phase; a
killed refresh run again picks up where it stopped, and every step is idempotent.

**Reloads.** When what changed is at least ``reload_share`` of the lake's rows, the source
has re-stamped most of it at once (reference: "createDateTime is a batch stamp"), and the
coverage is fetched again one month at a time instead, each month replacing its partition
before the next is fetched (``Refresher._reload``): memory is one month's partition, the
lake stays readable, and a killed reload resumes at its month. A month without changed rows
and with the lake's row count is skipped. The refresh after a reload re-reads the reload's
stamp through its lookback: the lake holds those rows, the stamp is excluded by one count,
and only what changed since is fetched.

**The change feed and the report.** Every merge writes the ids it added, updated and
deleted (``changes``) before its commit, so the feed of a run is exact however often it was
killed and resumed; the run's report counts its rows from the feed, and its requests over
every process that worked on the run (``RefreshRun.stats``).

``harvester verify --repair`` reuses steps 2 to 4 through ``Refresher.run(repair_days=...)``
with verify's own client and service profile (no second probe): a run of kind ``repair``
fetches the given days again and replaces their rows, and never moves the watermark. Both
kinds share the staging area, so a command that finds an interrupted run of the other kind
finishes it first.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from harvester.config import Settings
from harvester.errors import LakeError
from harvester.humanize import duration_text
from harvester.jobs import decision, reconcile
from harvester.jobs.decision import ChangedDecision, ChangedScope, StampFacts
from harvester.jobs.pipeline import PipelineTotals
from harvester.jobs.planner import Planner
from harvester.jobs.report import RunOutcome, RunReport
from harvester.jobs.session import RunSession, Service
from harvester.progress import Progress
from harvester.service.client import ApiClient
from harvester.service.stamps import newest_stamp
from harvester.signals import to_thread_to_the_end
from harvester.storage import changes, quarantine
from harvester.storage.commit import (
    committed_files,
    read_files,
    replace_files,
    sweep,
)
from harvester.storage.info import parallel_map, parquet_file
from harvester.storage.memory import release_freed_memory
from harvester.storage.merge import CHANGE_KEYS, flat, upserted_keys
from harvester.storage.partition import Partition
from harvester.storage.rewrite import FileMerge, StagedRows, merge_files
from harvester.storage.schema import ARROW_SCHEMA
from harvester.storage.shard import EARLIEST_PROBE, Shard, month_spans
from harvester.storage.state import (
    CompleteRecord,
    HarvestState,
    RefreshRun,
    StageName,
    StoredPlan,
    WatermarkRecord,
    utc_now,
)
from harvester.storage.store import Lake

log = logging.getLogger("harvester.jobs.refresh")
# A load the lake holds is worth a count to leave out only when fetching it would take more
# than a page or two: below that the count costs what it saves.
BULK_PAGES = 2
# At most this many loads are counted to be left out (the largest): a bound on requests.
MAX_EXCLUDED = 16
# A repair day of more pages than this is narrowed by id-range counts before it is fetched
# (``Refresher._narrow``): each halving costs two counts, so a day of a few pages is
# cheaper fetched whole.
NARROW_PAGES = 3


def changed_since(state: HarvestState, lookback_days: int, ceiling: str | None = None) -> str:
    """The createDateTime from which changed rows are fetched (watermark - lookback). A
    watermark past ``ceiling`` (the future beyond the tolerance: written by an older
    version from a row stamped 9999-12-31) is not trusted: everything is fetched again."""
    mark = state.watermark()
    if mark is None or (ceiling is not None and mark > ceiling):
        return EARLIEST_PROBE.isoformat() + "T00:00:00"
    since = dt.datetime.fromisoformat(mark) - dt.timedelta(days=lookback_days)
    return since.replace(microsecond=0).isoformat()


def coverage_span(state: HarvestState) -> tuple[dt.date, dt.date]:
    """The days the lake covers now: an open end reaches today, an open start the earliest
    date a query can name (``Coverage.span``)."""
    return state.coverage().span(dt.datetime.now(dt.UTC).date())


# How ``RefreshRun.months_done`` names an open start's stretch before the first month.
BEFORE: Final = "before"


def month_key(day: dt.date) -> str:
    """``YYYY-MM``: how a reload names the month of ``day``."""
    return f"{day.year:04d}-{day.month:02d}"


# -- the lake's facts (no request) --------------------------------------------------------
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


def _recent_stamps(lake: Lake, path: str, since: dt.datetime) -> dict[str, int]:
    """Rows per ``createDateTime`` at or after ``since`` in one file. A file whose footer
    statistics say every stamp is older is not read further."""
    with parquet_file(lake, path) as parquet:
        meta = parquet.metadata
        column = parquet.schema_arrow.get_field_index("createDateTime")
        newest = None
        for group in range(meta.num_row_groups):
            stats = meta.row_group(group).column(column).statistics
            if stats is None or not stats.has_min_max:
                newest = None
                break
            newest = stats.max if newest is None else max(newest, stats.max)
        else:
            if newest is not None and newest < since:
                return {}
        stamps = parquet.read(columns=["createDateTime"]).column("createDateTime")
    recent = stamps.filter(pc.greater_equal(stamps, pa.scalar(since, type=stamps.type)))
    out: dict[str, int] = {}
    for item in pc.value_counts(recent).to_pylist():
        if item["values"] is not None:
            out[item["values"].isoformat()] = int(item["counts"])
    return out


def stamp_facts(
    state: HarvestState, committed: dict[str, list[str]], since: str, lake_rows: int
) -> StampFacts:
    """The lake's rows per stamp at or after ``since`` (one column of the files that hold
    any, read one at a time)."""
    moment = dt.datetime.fromisoformat(since)
    files = [path for paths in committed.values() for path in paths]
    per_stamp: dict[str, int] = {}
    for found in parallel_map(state.lake, lambda p: _recent_stamps(state.lake, p, moment), files):
        for stamp, n in found.items():
            per_stamp[stamp] = per_stamp.get(stamp, 0) + n
    return StampFacts(since, per_stamp, lake_rows)


def lake_month_rows(state: HarvestState, committed: dict[str, list[str]]) -> dict[str, int]:
    """Rows per month (``YYYY-MM``) the lake holds, its quarantined rows included as the
    service counts them: what a reload compares each month's count with."""
    out: dict[str, int] = {}
    for day, n in quarantine.count(state).days()[0].items():
        out[month_key(day)] = out.get(month_key(day), 0) + n
    for partition, files in committed.items():
        part = Partition.parse(partition)
        key = month_key(dt.date(part.year, part.month, 1))
        rows = parallel_map(state.lake, lambda p: _footer_rows(state.lake, p), files)
        out[key] = out.get(key, 0) + sum(rows)
    return out


def require_completed(state: HarvestState) -> tuple[CompleteRecord, StoredPlan]:
    complete, plan = state.load_complete(), state.load_plan()
    if complete is None or plan is None:
        raise LakeError(
            f"{state.lake.uri} holds no completed harvest: run `harvester harvest` first"
        )
    return complete, plan


# -- the first decision: what changed --------------------------------------------------------
@dataclass(frozen=True)
class RefreshStart:
    """What a new refresh decides before fetching, and the facts it decided on: shared by
    ``Refresher`` and ``plan`` (one gathering, one decision)."""

    since: str
    watermark: str | None  # the service's newest stamp now: the watermark the run leaves
    beyond: int  # rows stamped in the future beyond the tolerance (reported)
    ceiling: str
    covered: tuple[dt.date, dt.date]
    changed: ChangedDecision
    root: Shard  # the changed-rows shard, counted (``expected``)
    months: int  # months of the coverage (each is counted by a reload)
    page_size: int
    rate: float

    @property
    def estimated_requests(self) -> int:
        """A reload's estimate (``decision.reload_requests``)."""
        return decision.reload_requests(
            self.changed.changed, self.changed.lake_rows, self.months, self.page_size
        )

    def cost_text(self) -> str:
        seconds = self.estimated_requests / self.rate if self.rate > 0 else None
        time = (
            "no rate limit configured"
            if seconds is None
            else f"about {duration_text(seconds)} at {self.rate:g} requests/s"
        )
        return f"about {self.estimated_requests:,} requests ({self.months} months), {time}"

    def reload_text(self) -> str:
        c = self.changed
        return (
            f"the source reloaded: {c.changed:,} rows changed since {self.since}, and the lake"
            f" holds {c.lake_rows:,} (reload_share {c.reload_share:g}). Fetching the coverage"
            f" again month by month, each month replacing its partition: {self.cost_text()}"
        )


def _ceiling(settings: Settings) -> str:
    moment = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    return (moment + dt.timedelta(days=settings.stamp_tolerance_days)).isoformat()


async def start(
    settings: Settings,
    state: HarvestState,
    plan: StoredPlan,
    client: ApiClient,
    known: Service,
) -> RefreshStart:
    """Gather what the first decision needs and make it: the service's newest stamp (the
    watermark to leave), ``since``, the lake's own stamps since then, the counts of the
    window and of the loads worth leaving out, then ``decision.decide_changed``. Requests:
    the stamp bisection (2 or 3 from a watermark), one for the window, one per load the
    lake holds at least ``BULK_PAGES`` pages of (at most ``MAX_EXCLUDED``), and one for the
    narrowed query when any is left out."""
    form, template = known.profile.stamp_form, known.profile.date_template
    current = state.watermark()
    newest = await newest_stamp(
        client,
        form,
        low=current if current and current <= _ceiling(settings) else None,
        tolerance=dt.timedelta(days=settings.stamp_tolerance_days),
    )
    since = changed_since(state, settings.lookback_days, newest.ceiling)
    covered = coverage_span(state)
    committed = committed_files(state, plan, state.load_markers())
    lake_rows = await asyncio.to_thread(lake_row_count, state, plan)
    facts = await asyncio.to_thread(stamp_facts, state, committed, since, lake_rows)
    page = known.limits.page_size
    window_query = ChangedScope(since).shard(covered, form).criteria(template)
    window = await client.count(window_query)
    if window == 0 and newest.stamp is not None and newest.stamp >= since:
        # The bisection just found rows stamped since: "none" now is a transient answer
        # (an empty replica), and trusting it would move the watermark past them.
        window = await client.count(window_query)
    candidates = sorted(facts.bulk(BULK_PAGES * page), key=lambda s: -facts.per_stamp[s])
    candidates = sorted(candidates[:MAX_EXCLUDED])
    counts: dict[str, int] = {}
    if window > BULK_PAGES * page:  # a window of a page or two: nothing is worth a count
        for stamp in candidates:
            exact = f"createDateTime:[{form.format(stamp=stamp)} TO {form.format(stamp=stamp)}]"
            counts[stamp] = await client.count(
                Shard(covered[0], covered[1], scope=exact).criteria(template)
            )
    excluded = decision.decide_exclusions(facts, counts)
    narrowed = None
    if excluded:
        scope = ChangedScope(since, excluded)
        narrowed = await client.count(scope.shard(covered, form).criteria(template))
    changed = decision.decide_changed(
        since, window, excluded, counts, narrowed, lake_rows, settings.reload_share
    )
    root = changed.scope.shard(covered, form).with_expected(changed.changed)
    return RefreshStart(
        since,
        newest.stamp or current,
        newest.beyond,
        newest.ceiling,
        covered,
        changed,
        root,
        state.coverage().months(dt.datetime.now(dt.UTC).date()),
        page,
        settings.rate,
    )


class Refresher:
    """The refresh's phase machine: each phase is saved in ``RefreshRun`` before the next
    starts, and every phase is idempotent, so a killed run resumes where it stopped."""

    def __init__(self, session: RunSession, report: RunReport | None = None) -> None:
        """A refresh over ``session`` (which holds the lake's lock, the client and the proven
        profile). ``report``: a report of its own (``verify --repair``: the repair's, beside
        verify's), else the session's; the session's earlier requests are then not this
        run's."""
        self.session = session
        self.settings = session.settings  # as resolved: the service's facts are ``known``
        self.progress = session.progress
        self.lake = session.lake
        self.state = session.state
        self.client = session.client
        self.known = session.known
        self.planner = session.planner
        self.report = report if report is not None else session.report
        self.totals = PipelineTotals()
        # The changed-rows shard as counted by ``_new_run``: its fetch needs no second count.
        self._changed_root: Shard | None = None
        # Requests of the run being worked on that its earlier processes (killed or
        # interrupted) sent, as its checkpoint counts them.
        self._earlier_requests = 0
        # A caller's requests before this run (verify's, before its repair): not this run's.
        self._caller_requests = 0 if report is None else self.client.stats.requests
        self._rows_committed = 0  # rows this process wrote into the lake's partitions
        self._stage_mark: str | None = None  # the watermark of the run being worked on
        self._files_rewritten = 0  # committed files this process's merges replaced

    # -- the run -------------------------------------------------------------------------
    async def run(self, repair_days: dict[str, str] | None = None) -> RunOutcome:
        """A refresh; given ``repair_days`` (day -> reason), a repair of just those days."""
        if self.report is self.session.report:
            return await self._run(repair_days)  # the session keeps its report
        with self.report.kept(self.state, self.client.stats):
            return await self._run(repair_days)

    async def _run(self, repair_days: dict[str, str] | None) -> RunOutcome:
        client, known, planner = self.client, self.known, self.planner
        _, plan = require_completed(self.state)
        run: RefreshRun | None = None
        # The session holds the lake's lock: everything from here writes under it.
        self.report.writing = True
        known.remember(self.state)
        try:
            run, ok = await self._run_locked(plan, planner, client, repair_days)
        except BaseException:
            # Stopped early: the report still says what was done (``kept`` saves it), and
            # the checkpoint what it cost (a resumed run's report counts it).
            current = self._current_run()
            self._close_report(plan, current, ok=False)
            self._save_on_the_way_out(current)
            raise
        finally:
            known.remember(self.state)
            self.report.extra["service"] = known.summary()
        self._finish_report(client)
        self._close_report(plan, run, ok)
        self.report.status = "complete" if ok else "incomplete"
        if self.report is self.session.report:
            self.session.save_report()  # inside the lock: nothing writes the lake after it
        else:
            self.report.save(self.state)
        if ok:
            # Last, after its report: a run killed before this resumes at "finish" and
            # saves its report again, so no finished run is left without one.
            await to_thread_to_the_end(self.state.clear_refresh)
        self.progress.stop()
        return RunOutcome(self.report, ok)

    def _finish_report(self, client: ApiClient) -> None:
        """Close the report with the client's counters, less a caller's requests."""
        self.report.finish("running", client.stats)
        self.report.requests -= self._caller_requests

    def _save_on_the_way_out(self, run: RefreshRun | None) -> None:
        """The requests sent since the last checkpoint, into it (a run killed outright
        loses only those)."""
        if run is None or not hasattr(self, "client"):
            return
        try:
            self._save(run)
        except Exception as exc:  # the lock lost, the lake failing: the first error shows
            log.warning("could not save the refresh's checkpoint: %s", exc)

    def _current_run(self) -> RefreshRun | None:
        try:
            return self.state.load_refresh_run()
        except Exception:  # the lake failing: the run's own error is the one to show
            return None

    def _close_report(self, plan: StoredPlan, run: RefreshRun | None, ok: bool) -> None:
        """What the report says of the run: its rows from the change feed (every process's
        work on this run), its requests over those processes, what it fetched and wrote."""
        self.report.absorb_totals(self.totals)
        fetched, self.report.rows_written = self.report.rows_written, self._rows_committed
        try:
            self.report.rows_in_lake = lake_row_count(self.state, plan)
        except Exception as exc:  # the lake failing: the run's own error is the one to show
            log.warning("could not count the lake's rows for the report: %s", exc)
        if run is None:
            return
        totals = changes.totals(self.state, run.run_id)
        self.report.extra.update(
            {
                "since": run.since,
                "excluded_loads": run.excluded,
                "rows_added": totals["added"],
                "rows_updated": totals["updated"],
                "rows_deleted": totals["deleted"],
                "rows_fetched": fetched,
                "run_requests": self._run_requests(),
                "partitions_rewritten": run.partitions_rewritten,
                "files_rewritten": self._files_rewritten,
                "days_repaired": run.repair_days or {},
                "days_held": run.held,
                "reload": _reload_summary(run),
                "watermark": self.state.watermark(),
                "no_op": ok and not any(totals.values()) and not run.partitions_rewritten,
            }
        )

    def _take_up(self, run: RefreshRun | None) -> None:
        """From now on this process works on ``run`` (None: one about to begin)."""
        self._earlier_requests = 0 if run is None else run.stats.get("requests", 0)

    def _run_requests(self) -> int:
        """Requests the run being worked on has cost: its earlier processes' and this
        one's (its probes and counts included; a caller's, ``verify``'s, not)."""
        return self._earlier_requests + self.client.stats.requests - self._caller_requests

    def _save(self, run: RefreshRun) -> None:
        """Save the run's checkpoint, with the requests of every process that worked on it."""
        run.stats["requests"] = self._run_requests()
        self.state.save_refresh_run(run)

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
            self._take_up(run)
            ok = await self._phases(run, plan, planner, client)
            if ok:
                await to_thread_to_the_end(self.state.clear_refresh)  # its report is its own
                run = None
        if ok:
            self._take_up(run)
            if run is None:
                run = await self._new_run(repair_days, client, plan)
                self._save(run)
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
            return RefreshRun(
                self.report.run_id, "", "reconcile", dict(repair_days), kind="repair", suspects={}
            )
        # The watermark this run will leave: the service's newest stamp now, before fetching
        # (``stamps``); a resumed run keeps it. Stamps in the future are reported, not used.
        begun = await start(self.settings, self.state, plan, client, self.known)
        if begun.beyond:
            self.report.events.append(
                f"{begun.beyond} rows are stamped after {begun.ceiling} (the future):"
                " never taken as the watermark"
            )
        run = RefreshRun(
            self.report.run_id,
            begun.since,
            watermark=begun.watermark,
            excluded=list(begun.changed.scope.excluded),
        )
        self.report.events.extend(begun.changed.notes)
        if begun.changed.scope.excluded:
            self.report.events.append(
                f"left out {len(begun.changed.scope.excluded)} loads the lake holds"
                f" ({begun.changed.excluded_rows:,} rows, proven by counts):"
                f" {', '.join(begun.changed.scope.excluded)}"
            )
        self._changed_root = begun.root
        if begun.changed.is_reload:
            await self._begin_reload(run, begun, plan)
        return run

    async def _begin_reload(self, run: RefreshRun, begun: RefreshStart, plan: StoredPlan) -> None:
        """Make ``run`` a reload of the coverage, and say so with its cost."""
        committed = self._committed(plan)
        run.phase = "reload"
        run.reload_span = [begun.covered[0].isoformat(), begun.covered[1].isoformat()]
        months = await asyncio.to_thread(lake_month_rows, self.state, committed)
        run.lake_months = {key: [n] for key, n in months.items()}
        run.reload_counts = {
            "changed_rows": begun.changed.changed,
            "lake_rows": begun.changed.lake_rows,
            "months": begun.months,
            "estimated_requests": begun.estimated_requests,
            "months_fetched": 0,
            "months_current": 0,
        }
        if self.settings.rate > 0:  # at the configured rate; none set: no estimate
            run.reload_counts["estimated_seconds"] = round(
                begun.estimated_requests / self.settings.rate
            )
        log.warning("%s", begun.reload_text())
        self.report.events.append(f"reload: {begun.reload_text()}")

    async def _phases(
        self, run: RefreshRun, plan: StoredPlan, planner: Planner, client: ApiClient
    ) -> bool:
        covered = coverage_span(self.state)
        scope = ChangedScope(run.since, tuple(run.excluded))
        form = self.known.profile.stamp_form
        # The stages' plans carry the run's watermark: kept pages of a killed run are proven
        # against it before they are reused (``fetch_shard``); a repair has none, keeps none.
        self._stage_mark = run.watermark
        if run.phase == "reload":
            if not await self._reload(run, plan, planner, client, scope):
                return False
            run.phase = "finish"
            self._save(run)
        if run.phase == "fetch-changed":
            root = self._changed_root
            counted = root is not None and root.scope == scope.query(form)
            if root is None or not counted:
                root = scope.shard(covered, form)
            if not await self._fetch_stage("changed", [root], planner, client, counted=counted):
                return False
            run.phase = "reconcile"  # the changed rows stay staged: one merge, at the end
            self._save(run)
        if run.phase == "merge-changed":
            # Written by a version that merged the changed rows first. Reconciling counts
            # them upserted whether they were merged or not, and merging them again
            # changes nothing where they were (``_lake_rows``).
            run.phase = "reconcile"
        if run.phase == "reconcile":
            if run.repair_days is None:
                await self._reconcile(plan, client, covered, run)
                await self._narrow(run, plan, client)  # saved with the days it narrows
                self._save(run)
            assert run.repair_days is not None
            if not await self._fetch_days(run, planner, client):
                return False
            run.phase = "confirm-drops"
            self._save(run)
        if run.phase == "confirm-drops":
            await self._confirm_drops(run, client)
            if not await self._fetch_days(run, planner, client):
                return False
            run.phase = "merge"
            self._save(run)
        if run.phase in ("merge", "merge-days"):  # "merge-days": an earlier version's name
            repair = {dt.date.fromisoformat(d) for d in run.repair_days or {}}
            await to_thread_to_the_end(self._merge_stages, run, plan, repair)
            run.phase = "finish"
            self._save(run)
        await to_thread_to_the_end(self._finish, run)
        return True

    # -- reconciliation ---------------------------------------------------------------------
    async def _reconcile(
        self,
        plan: StoredPlan,
        client: ApiClient,
        covered: tuple[dt.date, dt.date],
        run: RefreshRun,
    ) -> None:
        """The days that differ (``reconcile``), as ``decision.decide_repairs`` sorts them:
        fetched again now, or suspects to count again (``_confirm_drops``). The lake's side
        is what it will hold once the staged changed rows are merged (``_lake_rows``)."""
        rows = self._lake_rows(run, plan)
        first, last = await asyncio.to_thread(
            reconcile.window, rows, *covered, self.settings.reconcile_days
        )
        found = await reconcile.differing_in_window(
            self.state, rows, client, self.known.profile.date_template, first, last
        )
        repairs = decision.decide_repairs(
            found.differing, self.state.load_pending_drops(), self.settings.drop_share
        )
        run.repair_days, run.suspects = repairs.repair, repairs.suspects
        run.day_counts = repairs.counts
        self.report.extra["reconcile_window"] = [first.isoformat(), last.isoformat()]
        self.report.extra["quarantined_per_day"] = found.quarantined

    async def _confirm_drops(self, run: RefreshRun, client: ApiClient) -> None:
        """Count each suspect again, now that the run's other days are fetched: both counts
        agreeing, its rows go in this run; else they stay until a later run counts the same
        (``PendingDrop``). Idempotent: a resumed run finds no suspects left."""
        suspects = run.suspects or {}
        recounts = await self._recount(suspects, client)
        confirmed = decision.confirm_drops(suspects, recounts, run.run_id, utc_now())
        assert run.repair_days is not None
        run.repair_days.update(confirmed.repair)
        run.day_counts.update(confirmed.counts)
        run.held.update(confirmed.held)
        run.suspects = {}
        if run.kind == "refresh":
            # Days that no longer differ are settled; what is held now is what waits.
            self.state.save_pending_drops(confirmed.pending)
        self._save(run)
        self.report.events.extend(f"kept {day}: {why}" for day, why in confirmed.held.items())

    async def _settled_count(
        self, client: ApiClient, shard: Shard, doubt: Callable[[int], bool]
    ) -> int:
        """``shard``'s count; one that ``doubt`` finds suspect (it would skip or empty
        work) is asked again until two of its counts agree (``decision.settled``), at
        most ``decision.MAX_COUNTS`` times; the last is taken when they never agree."""
        criteria = shard.criteria(self.known.profile.date_template)
        counts = [await client.count(criteria)]
        while doubt(counts[-1]) and decision.needs_recount(counts):
            counts.append(await client.count(criteria))
        value = decision.settled(counts)
        return counts[-1] if value is None else value

    async def _recount(
        self, suspects: dict[str, list[int]], client: ApiClient
    ) -> dict[str, list[int]]:
        """Count each suspect day again until two of its counts agree, at most
        ``decision.MAX_COUNTS`` times in all: one to three requests a suspect."""
        template = self.known.profile.date_template
        recounts: dict[str, list[int]] = {}
        for key, (_, first) in sorted(suspects.items()):
            day = dt.date.fromisoformat(key)
            counts = [first]
            while decision.needs_recount(counts):
                counts.append(await client.count(Shard(day, day).criteria(template)))
            recounts[key] = counts[1:]
        return recounts

    async def _fetch_days(self, run: RefreshRun, planner: Planner, client: ApiClient) -> bool:
        """Fetch every repair day into the ``days`` stage (a day added since the stage was
        planned, a confirmed drop, is counted and planned into it)."""
        days = sorted(run.repair_days or {})
        if not days:
            return True
        # Planned with the counts that chose them (a repair's days come without: counted).
        counted = all(d in run.day_counts for d in days)
        roots = [Shard(dt.date.fromisoformat(d), dt.date.fromisoformat(d)) for d in days]
        if counted:
            roots = [r.with_expected(run.day_counts[d]) for r, d in zip(roots, days, strict=True)]
        # A narrowed day is fetched as its differing id ranges only (``_narrow``).
        pieces = _pieces(run)
        narrowed = {p.first for p in pieces}
        roots = [r for r in roots if r.first not in narrowed] + pieces
        return await self._fetch_stage("days", roots, planner, client, counted=counted)

    async def _narrow(self, run: RefreshRun, plan: StoredPlan, client: ApiClient) -> None:
        """Narrow each repair day of a refresh that spans more than ``NARROW_PAGES`` pages
        to the id ranges whose counts differ: the lake knows its ids per day, so a range is
        halved at the lake's median id and both halves counted at the service, until a
        range holds a page of the lake's rows or its counts agree. Only the differing ranges
        are fetched and replaced (``run.repair_pieces``), so a day that lost one row costs
        a few counts and a page, not all its pages; its deletions are found within those
        ranges. A range whose counts agree is taken as equal, as a day whose counts agree
        is. A day is fetched whole when its halves' counts do not add up to the whole (rows
        without an id, an index that moved), or when the lake holds quarantined rows of it
        (they have no id to place in a range)."""
        if run.kind != "refresh" or not run.repair_days:
            return
        page = max(1, self.known.profile.page_size)
        days = [d for d in sorted(run.repair_days) if d in run.day_counts]
        if not days:
            return
        quarantined = quarantine.count(self.state).days()[0]
        by_month: dict[str, list[str]] = {}
        for key in days:
            by_month.setdefault(Partition.of(dt.date.fromisoformat(key)).path, []).append(key)
        # A month's ids at a time: the lake's ids of every repair day at once were the 10 M
        # bench's refresh peak (2,419 days, ~8 M ids as Python strings: ~600 MB).
        for month_days in by_month.values():
            held = await asyncio.to_thread(self._lake_ids, run, plan, month_days)
            for key in month_days:
                day = dt.date.fromisoformat(key)
                ids = held.get(day, pa.array([], pa.string()))
                if len(ids) <= NARROW_PAGES * page or quarantined.get(day):
                    continue
                pieces = await self._differing_pieces(
                    client, Shard(day, day), ids, run.day_counts[key], page
                )
                if not pieces:
                    continue  # the counts did not add up (or nothing differs): the whole day
                run.repair_pieces.update({p.key: p.expected for p in pieces})
                rows = sum(p.expected for p in pieces)
                self.report.events.append(
                    f"narrowed {key} to {len(pieces)} id ranges ({rows} of its"
                    f" {run.day_counts[key]} rows at the service)"
                )
            del held

    def _lake_rows(self, run: RefreshRun, plan: StoredPlan) -> reconcile.LakeRows:
        """The rows a refresh reconciles and narrows by: the committed files with the run's
        staged changed rows upserted (``merge.upserted_keys``), which is what the lake will
        hold once they are merged. Merging them before reconciling, as this once did, wrote
        each file they touch twice (once for them, once for the days repaired after), about
        the whole lake twice over on a day whose changes touch every month; counted this
        way, both are merged in one pass (``_merge_stages``). Exact whether or not some of
        them were merged already: an upsert of rows the lake holds changes nothing."""
        committed = self._committed(plan)
        staged = self._staged("changed") if run.kind == "refresh" else {}
        lake, stage_lake = self.lake, self.state.stage("changed").lake
        if not staged:
            return reconcile.LakeRows.committed(lake, committed)

        def read(partition: str, columns: list[str]) -> pa.Table:
            files = staged.get(partition)
            if not files:
                return read_files(lake, committed.get(partition, []), columns=columns)
            held = read_files(lake, committed.get(partition, []), columns=["id", "submissionDate"])
            incoming = read_files(stage_lake, files, columns=list(CHANGE_KEYS))
            return upserted_keys(held, incoming).select(columns)

        return reconcile.LakeRows(tuple(sorted({*committed, *staged})), read)

    def _staged(self, name: StageName) -> dict[str, list[str]]:
        """The stage's fetched files per partition ({} when it holds no plan)."""
        stage = self.state.stage(name)
        stored = stage.load_plan()
        return committed_files(stage, stored, stage.load_markers()) if stored else {}

    def _lake_ids(
        self, run: RefreshRun, plan: StoredPlan, days: list[str]
    ) -> dict[dt.date, pa.Array]:
        """The ids per day of ``days`` that the lake will hold once the staged changed rows
        are merged (``_lake_rows``), sorted byte-wise as the service orders them (copies of
        an id each count: the counts compared are rows). Two columns of the days'
        partitions are read; the ids stay Arrow strings (a million of them as Python
        strings in lists made a refresh of a million-row month peak at 430 MB)."""
        release_freed_memory()
        rows = self._lake_rows(run, plan)
        wanted = {dt.date.fromisoformat(d) for d in days}
        value_set = pa.array(sorted(wanted), pa.date32())
        out: dict[dt.date, pa.Array] = {}
        for partition in sorted({Partition.of(d).path for d in wanted}):
            keys = rows.read(partition, ["id", "submissionDate"])
            inside = pc.is_in(keys.column("submissionDate"), value_set=value_set)
            keys = keys.filter(pc.and_(inside, pc.is_valid(keys.column("id"))))
            dates = keys.column("submissionDate")
            # A day at a time: one sorted copy of the month's keys was a third of the peak.
            for day in sorted(d for d in wanted if Partition.of(d).path == partition):
                ids = flat(keys.column("id").filter(pc.equal(dates, pa.scalar(day, pa.date32()))))
                if len(ids):
                    out[day] = ids.take(pc.sort_indices(ids))
            del keys, dates
        return out

    async def _differing_pieces(
        self, client: ApiClient, piece: Shard, ids: pa.Array, service: int, page: int
    ) -> list[Shard] | None:
        """The id ranges of ``piece`` (one day) whose service count differs from the lake's
        ``ids`` in it (sorted), each with its count; [] when none does, None when its
        halves' counts do not add up to ``service`` (the day is then fetched whole)."""
        if len(ids) == service:
            return []
        if len(ids) <= page:
            return [piece.with_expected(service)]
        middle = ids[len(ids) // 2].as_py()
        # The ids are sorted: those below the middle one come first (a bisection's answer).
        below = int(pc.sum(pc.less(ids, pa.scalar(middle, pa.string()))).as_py() or 0)
        # No cut between copies of one id, nor at an id a shard key cannot spell.
        if below == 0 or not (middle.isascii() and middle.isalnum()):
            return [piece.with_expected(service)]
        template = self.known.profile.date_template
        day = piece.first
        halves = [
            piece.narrowed(day, day, piece.id_low, middle),
            piece.narrowed(day, day, middle, piece.id_high),
        ]
        counts = [await client.count(half.criteria(template)) for half in halves]
        if sum(counts) != service:
            return None
        out: list[Shard] = []
        for half, part, count in zip(
            halves, (ids.slice(0, below), ids.slice(below)), counts, strict=True
        ):
            found = await self._differing_pieces(client, half, part, count, page)
            if found is None:
                return None
            out.extend(found)
        return out

    # -- a reload: month by month ---------------------------------------------------------
    async def _reload(
        self,
        run: RefreshRun,
        plan: StoredPlan,
        planner: Planner,
        client: ApiClient,
        scope: ChangedScope,
    ) -> bool:
        """Every month of the reload's span not done yet: skipped when it is current
        (``decision.month_verdict``), else fetched whole into the ``reload`` stage and
        replacing its partition. Each month is recorded done only once committed, and the
        stage is emptied before the next, so a killed run resumes at its month (the stage's
        shards and pages kept)."""
        assert run.reload_span is not None
        first, last = (dt.date.fromisoformat(d) for d in run.reload_span)
        query = scope.query(self.known.profile.stamp_form)
        months = await self._months_to_reload(run, first, last, client)
        await self._skip_empty_months(run, months, client)
        for start_day, end in months:
            key = month_key(start_day)
            if key in run.months_done:
                continue
            stage = self.state.stage("reload")
            stored = stage.load_plan()
            if stored is not None and (stored.first, stored.last) != (start_day, end):
                # A month committed before the kill whose stage was not emptied yet.
                await to_thread_to_the_end(self.state.clear_stage, "reload")
                stored = None
            roots: list[Shard] = []
            if stored is None:
                whole = Shard(start_day, end)
                lake_rows = run.lake_months.get(key, [0])[0]
                # A month is skipped on "nothing changed" and "as many rows": each answer
                # that would skip it, or empty it, is asked until two agree.
                changed = await self._settled_count(
                    client, Shard(start_day, end, scope=query), lambda n: n == 0
                )

                def emptying(n: int, held: int = lake_rows) -> bool:
                    return decision.is_suspect(held, n, self.settings.drop_share)

                total = None
                if not changed:
                    total = await self._settled_count(client, whole, emptying)
                verdict = decision.month_verdict(changed, total, lake_rows)
                if not verdict.fetch:
                    self._month_done(run, key, "months_current")
                    continue
                if total is None:
                    total = await self._settled_count(client, whole, emptying)
                roots = [whole.with_expected(total)]
            if not await self._fetch_stage("reload", roots, planner, client, counted=True):
                return False
            await self._replace_month(run, plan, start_day, end, client)
            self._month_done(run, key, "months_fetched")
            await to_thread_to_the_end(self.state.clear_stage, "reload")
        return True

    def _span_count(self, client: ApiClient) -> Callable[[dt.date, dt.date], Awaitable[int]]:
        """The service's count of the rows of a day range, as ``reconcile.count_months``
        asks it."""
        template = self.known.profile.date_template

        async def count(a: dt.date, b: dt.date) -> int:
            return await client.count(Shard(a, b).criteria(template))

        return count

    async def _months_to_reload(
        self, run: RefreshRun, first: dt.date, last: dt.date, client: ApiClient
    ) -> list[tuple[dt.date, dt.date]]:
        """The reload's months: those from the first month harvested on, after the months
        of an open start's stretch before it (from 1900) that the service holds rows in.
        That stretch is one unit of the reload: counted by halving once (``BEFORE`` then
        joins ``months_done``, the months found kept in ``months_before`` for a resume),
        not 1,400 months counted one by one."""
        months = month_spans(first, last)
        harvested = self.state.coverage().first_day.replace(day=1)
        before = [m for m in months if m[1] < harvested]
        if before and BEFORE not in run.months_done:
            counts = await reconcile.count_months(self._span_count(client), before)
            run.months_before = [
                month_key(a) for (a, _), n in zip(before, counts, strict=True) if n
            ]
            run.months_done.append(BEFORE)
            if not run.months_before:  # else the months found are counted as they are done
                current = run.reload_counts.get("months_current", 0)
                run.reload_counts["months_current"] = current + 1
            self._save(run)
        held = set(run.months_before)
        return [m for m in months if month_key(m[0]) in held or m[1] >= harvested]

    async def _skip_empty_months(
        self, run: RefreshRun, months: list[tuple[dt.date, dt.date]], client: ApiClient
    ) -> None:
        """Runs of months the lake holds nothing of are counted by halving
        (``reconcile.count_months``), and the months the service holds nothing of either
        are done: a coverage with an open end reaches today, one with an open start begins
        in 1900, and neither may cost a count for every empty month."""
        runs: list[list[tuple[dt.date, dt.date]]] = [[]]
        for span in months:
            key = month_key(span[0])
            if key in run.months_done or run.lake_months.get(key, [0])[0]:
                runs.append([])
            else:
                runs[-1].append(span)
        for empty in (r for r in runs if len(r) > 1):
            counts = await reconcile.count_months(self._span_count(client), empty)
            none = [month_key(a) for (a, _), n in zip(empty, counts, strict=True) if n == 0]
            if none:
                run.months_done.extend(none)
                current = run.reload_counts.get("months_current", 0)
                run.reload_counts["months_current"] = current + len(none)
                self._save(run)

    def _month_done(self, run: RefreshRun, key: str, outcome: str) -> None:
        run.months_done.append(key)
        run.reload_counts[outcome] = run.reload_counts.get(outcome, 0) + 1
        self._save(run)

    async def _replace_month(
        self, run: RefreshRun, plan: StoredPlan, first: dt.date, last: dt.date, client: ApiClient
    ) -> None:
        """Replace the month's days with the staged rows. A day that would lose all or most
        of its rows is counted again first, and keeps the lake's rows (its staged rows are
        upserted) unless both counts agree, as in reconciliation. Idempotent: run again on
        the same stage it finds nothing to change."""
        stage = self.state.stage("reload")
        days = Shard(first, last).days
        lake_days, service_days = await asyncio.to_thread(
            self._month_day_counts, stage, plan, first, days
        )
        differing = {
            d: (lake_days[d], service_days[d]) for d in days if lake_days[d] != service_days[d]
        }
        pending = self.state.load_pending_drops()
        repairs = decision.decide_repairs(differing, pending, self.settings.drop_share)
        recounts = await self._recount(repairs.suspects, client)
        confirmed = decision.confirm_drops(
            repairs.suspects, recounts, run.run_id, utc_now(), fetched=True
        )
        held = sorted(dt.date.fromisoformat(d) for d in confirmed.held)
        await to_thread_to_the_end(self._commit_month, run, plan, first, days, held)
        # This month's days are settled now: what is held stays pending, the rest is not.
        month = {d.isoformat() for d in days}
        kept = {d: drop for d, drop in pending.items() if d not in month}
        self.state.save_pending_drops({**kept, **confirmed.pending})
        run.held.update(confirmed.held)
        self.report.events.extend(f"kept {day}: {why}" for day, why in confirmed.held.items())

    def _month_day_counts(
        self, stage: HarvestState, plan: StoredPlan, first: dt.date, days: list[dt.date]
    ) -> tuple[dict[dt.date, int], dict[dt.date, int]]:
        """Rows per day of the month in the lake and in the stage (quarantine included)."""
        partition = Partition.of(first).path
        stored = stage.load_plan()
        staged = committed_files(stage, stored, stage.load_markers()) if stored else {}
        existing = read_files(
            self.lake, self._committed(plan).get(partition, []), columns=["submissionDate"]
        )
        incoming = read_files(stage.lake, staged.get(partition, []), columns=["submissionDate"])
        return (
            _per_day(existing, quarantine.count(self.state).days()[0], days),
            _per_day(incoming, quarantine.count(stage).days()[0], days),
        )

    def _commit_month(
        self,
        run: RefreshRun,
        plan: StoredPlan,
        first: dt.date,
        days: list[dt.date],
        held: list[dt.date],
    ) -> None:
        stage = self.state.stage("reload")
        stored = stage.load_plan()
        staged = committed_files(stage, stored, stage.load_markers()) if stored else {}
        partition = Partition.of(first).path
        committed = self._committed(plan)
        for other in sorted(set(staged) - {partition}):
            # A month's query returns rows of that month only; should a row be written
            # elsewhere all the same, it is upserted there, never dropped.
            theirs = committed.get(other, [])
            rows = StagedRows(lake=stage.lake, files=tuple(staged[other]))
            empty = ARROW_SCHEMA.empty_table()
            result = merge_files(self.lake, other, theirs, rows, (), empty, run.run_id, "reload")
            self._commit_files(run, other, theirs, [], result, "reload")
        # At file grain, as a daily refresh merges (``rewrite``): the lake's files and the
        # month's fetched rows are read a group at a time, not the month's rows twice.
        owned = committed.get(partition, [])
        fetched = tuple(staged.get(partition, []))
        changed = StagedRows(lake=stage.lake, files=fetched, days=tuple(held), within=True)
        day_rows = StagedRows(lake=stage.lake, files=fetched, days=tuple(held), within=False)
        replaced = set(days) - set(held)
        result = merge_files(
            self.lake, partition, owned, changed, replaced, day_rows, run.run_id, "reload"
        )
        self._commit_files(run, partition, owned, [], result, "reload")
        # Rows quarantined before for the replaced days were fetched again: the stage's
        # quarantine stands for them now.
        quarantine.supersede_days(self.state, replaced, run.run_id)
        quarantine.promote(self.state, stage, run.run_id, "reload")

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
        stage ``name``, planned once and resumed from its markers. Roots the stored plan
        does not cover yet (days added to a ``days`` stage) are counted and planned in."""
        stage = self.state.stage(name)
        stored = stage.load_plan()
        new = roots
        if stored is not None:
            # Only days are added to a stage planned before (``confirm-drops``).
            planned = {d for s in stored.shards for d in s.days} if name == "days" else None
            new = [s for s in roots if planned is not None and not set(s.days) <= planned]
        if new:
            if not counted:
                template = self.known.profile.date_template
                new = [s.with_expected(await client.count(s.criteria(template))) for s in new]
            shards = [] if stored is None else list(stored.shards)
            for shard in new:
                shards.extend(await planner.refine(shard))
            stored = StoredPlan(
                min(s.first for s in shards),
                max(s.last for s in shards),
                self.known.profile.date_template,
                self.settings.shard_size,
                shards,
                watermark=self._stage_mark,
            )
            stage.save_plan(stored)
        assert stored is not None
        runner = self.session.runner(stage, stored)
        await runner.run_pending()
        # The fetch's freed pages back to the system before a merge reads the stage.
        release_freed_memory()
        self.totals.merge(runner.pipeline.totals)
        self.report.count_shards(*runner.leaves())
        failed = runner.failures()
        self.report.failures.update(failed)
        return not failed

    # -- merging a staging area into the lake --------------------------------------------
    def _merge_stages(self, run: RefreshRun, plan: StoredPlan, repair_days: set[dt.date]) -> None:
        """Merge the staged changed rows and then the repair days' rows into each partition
        they touch, in one pass (``rewrite.merge_files(days_last=True)``): the same rows as
        committing the changed rows first and the days into what that left, with each
        touched file written once. Partition by partition, each committed before the next;
        killed between, a resumed run merges the committed ones again and finds nothing left
        to change there."""
        changed_files = self._staged("changed")
        day_files = self._staged("days")
        committed = self._committed(plan)
        # Days narrowed to id ranges replace those ranges only (``_narrow``).
        pieces = _pieces(run)
        narrowed = {p.first for p in pieces}
        partitions = (
            set(changed_files) | set(day_files) | {Partition.of(d).path for d in repair_days}
        )
        changed_stage, days_stage = self.state.stage("changed"), self.state.stage("days")
        for partition in sorted(partitions):
            owned = committed.get(partition, [])
            if run.kind == "repair":
                # verify --repair names every day a missing committed file held among the
                # days to fetch again: the partition is rebuilt without it.
                listed = set(self.lake.list_files(partition, suffix=".parquet"))
                owned = [f for f in owned if f in listed]
            days = {
                d for d in repair_days if Partition.of(d).path == partition and d not in narrowed
            }
            ranges = [
                (p.first, p.id_low or "", p.id_high or "")
                for p in pieces
                if Partition.of(p.first).path == partition
            ]
            # Read a group at a time by merge_files, not the partition's fetched rows whole.
            changed = StagedRows(
                lake=changed_stage.lake, files=tuple(changed_files.get(partition, []))
            )
            day_rows = StagedRows(lake=days_stage.lake, files=tuple(day_files.get(partition, [])))
            # The step names the new files and the feed: "days" where the partition's days
            # are replaced, "changed" where it only takes changed rows.
            step = "days" if days or ranges or partition in day_files else "changed"
            # Only the files holding an incoming id or a replaced day are read whole and
            # rewritten; the others stay as they are (``rewrite``).
            result = merge_files(
                self.lake,
                partition,
                owned,
                changed,
                days,
                day_rows,
                run.run_id,
                step,
                ranges,
                days_last=True,
            )
            files = committed.get(partition, [])
            missing = [f for f in files if f not in owned]
            self._commit_files(run, partition, files, missing, result, step)

    def _commit_files(
        self,
        run: RefreshRun,
        partition: str,
        committed: list[str],
        missing: list[str],
        result: FileMerge,
        step: str,
    ) -> None:
        """Keep a file-grain merge's changes in the feed, then swap the files it rewrote
        (and drop the ``missing`` ones a repair found gone) for its new ones, the others
        staying; nothing when no file changed and none is missing. Killed before the
        manifest, a resumed run merges the same rows into the same files again and writes
        the same feed; killed after, it finds nothing left to change there."""
        if result.stats.changes is not None:
            changes.write(self.state, run.run_id, partition, step, result.stats.changes)
        if not result.written and not result.removed and not missing:
            return
        removed = [*result.removed, *missing]
        replace_files(self.state, partition, committed, removed, result.written)
        self._rows_committed += result.rows_written
        self._files_rewritten += len(result.removed)
        if partition not in run.partitions_rewritten:
            run.partitions_rewritten.append(partition)
        self._save(run)

    def _finish(self, run: RefreshRun) -> None:
        """Move the watermark (data is committed), keep quarantined rows. Idempotent: the
        staging areas are dropped by the caller once the run's report is saved."""
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


def _pieces(run: RefreshRun) -> list[Shard]:
    """The id ranges the run narrowed its repair days to, each with its service count."""
    return [Shard.parse_key(key).with_expected(n) for key, n in sorted(run.repair_pieces.items())]


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
    session = RunSession(settings, "refresh", progress)  # other files, another source: refused
    session.state.check_compatible()
    require_completed(session.state)  # before the lock and any request
    async with session:
        return await Refresher(session).run()
