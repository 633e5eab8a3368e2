"""``harvester status``: what the lake's ``_harvest/`` says, without a single API call.

Everything here comes from the lake: the plan and shard markers (done, pending, failed
with their causes), partition manifests and Parquet footers (rows), the quarantine, the
watermark, an interrupted refresh's checkpoint and the newest run report. It writes
nothing, so it is safe to run against a lake another process is harvesting into.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from harvester.config import Settings
from harvester.humanize import duration_text, plural
from harvester.jobs.session import Service
from harvester.service.profile import limits_from
from harvester.storage import quarantine, quota
from harvester.storage.commit import uncommitted_files
from harvester.storage.info import file_rows, open_state, service_lines
from harvester.storage.partition import Partition
from harvester.storage.state import HarvestState


@dataclass
class LakeStatus:
    uri: str
    schema_version: int | None = None
    harvest: str = "not started"  # not started | in progress | complete
    harvest_range: tuple[str, str] | None = None
    coverage: tuple[str, str | None] | None = None  # the range refresh keeps (None: open)
    coverage_open_start: bool = False  # the days before coverage[0] are kept too
    holds: tuple[str, str] | None = None  # the first and last partition holding rows
    pending_drops: dict[str, str] = field(default_factory=dict)  # days kept for a later count
    completed_at: str | None = None
    shards_total: int = 0
    shards_done: int = 0
    shards_pending: int = 0
    shards_failed: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    files: int = 0
    partitions: int = 0
    rewritten_partitions: int = 0
    uncommitted_files: int = 0
    quarantined_rows: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    quarantined_per_day: dict[str, int] = field(default_factory=dict)  # as reconcile counts
    watermark: str | None = None
    service: dict[str, Any] | None = None  # what the service was found to do
    refresh_interrupted: dict[str, Any] | None = None
    runs: int = 0
    last_run: dict[str, Any] | None = None
    quota: dict[str, Any] | None = None  # this week's requests per key (``quota``)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> list[str]:
        lines = [f"lake: {self.uri} (schema version {self.schema_version})"]
        span = f" {self.harvest_range[0]}..{self.harvest_range[1]}" if self.harvest_range else ""
        done_at = f", completed {self.completed_at}" if self.completed_at else ""
        lines.append(f"harvest: {self.harvest}{span}{done_at}")
        if self.coverage:
            end = self.coverage[1] or "the service's newest data (open end)"
            held = f"; holds {self.holds[0]} .. {self.holds[1]}" if self.holds else ""
            start = (
                f"every mail date (harvested from {self.coverage[0]})"
                if self.coverage_open_start
                else self.coverage[0]
            )
            lines.append(f"coverage: {start} .. {end}{held}")
        lines.extend(f"  kept {day}: {why}" for day, why in sorted(self.pending_drops.items()))
        # The one vocabulary of docs/operations.md ("Shards and rows"), as progress and
        # the run's summary say it.
        lines.append(
            f"shards {self.shards_done:,}/{self.shards_total:,} done,"
            f" {len(self.shards_failed):,} failed, {self.shards_pending:,} pending"
        )
        lines.extend(
            f"  failed {key}: {cause}" for key, cause in sorted(self.shards_failed.items())
        )
        lines.append(
            f"rows: {self.rows:,} in the lake, in {plural(self.files, 'file')} over"
            f" {plural(self.partitions, 'partition')}"
            f" ({self.rewritten_partitions:,} rewritten by refresh or compact)"
        )
        if self.uncommitted_files:
            lines.append(
                f"uncommitted files: {self.uncommitted_files:,} (leftovers of a killed run; the"
                " next harvest or refresh removes them, `harvester verify` names them)"
            )
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.quarantine_reasons.items()))
        lines.append(
            f"quarantined rows: {self.quarantined_rows:,}" + (f" ({reasons})" if reasons else "")
        )
        lines.extend(_watermark_lines(self.watermark))
        lines.extend(service_lines(self.service))
        if self.refresh_interrupted:
            run = self.refresh_interrupted
            lines.append(
                f"interrupted {run.get('kind', 'refresh')}: {run.get('run_id')} at phase"
                f" {run.get('phase')} (`harvester refresh` finishes it)"
            )
        lines.extend(_quota_lines(self.quota))
        if self.last_run:
            run = self.last_run
            # A report written before ``shards_fetched`` existed called it ``shards_done``.
            fetched = run.get("shards_fetched", run.get("shards_done", 0))
            ended = run.get("extra", {}).get("ended_by")
            lines.append(
                f"last run: {run.get('command')} {run.get('status')} {run.get('run_id')},"
                f" finished {run.get('finished_at') or '?'}"
                + (f" ({ended})" if ended else "")
                + f", {plural(run.get('rows_written', 0), 'row')} written,"
                f" {plural(fetched, 'shard')} fetched, {plural(run.get('requests', 0), 'request')}"
                f" ({plural(self.runs, 'run')} recorded)"
            )
        else:
            lines.append("last run: none recorded")
        return lines


def _watermark_lines(watermark: str | None) -> list[str]:
    """The watermark and why it can be earlier than the newest ``createDateTime`` the lake
    holds (``show``'s newest row): it is the service's newest stamp when the last harvest or
    refresh *started*, rounded down to the day (``stamps``), not the newest row fetched.
    Rows stamped while that run ran may be in the lake already; the next refresh asks from
    the watermark on anyway, so nothing stamped after it is missed."""
    if watermark is None:
        return ["watermark: none (no harvest completed yet)"]
    return [
        f"watermark: {watermark}",
        "  (the service's newest createDateTime when the last harvest or refresh started,"
        " rounded down to the day: rows stamped since, which `show` may list as newer,"
        " are asked for again by the next refresh)",
    ]


def _quota_lines(week: dict[str, Any] | None) -> list[str]:
    if not week:
        return []
    allowed = f" of {week['quota']:,}" if week["quota"] else ""
    lines = [
        f"quota week: from {week['week_start']}, resets {week['resets_at']}"
        f" ({week['resets_in']}); requests by runs on this lake:"
    ]
    for key, spent in sorted(week["requests"].items()):
        # ``quota.key_id`` names "no key" by a word that reads as a key's name: say it plainly.
        keyless = key == quota.key_id(None)
        mine = ""
        if key == week["key_id"]:
            mine = " (none set now either)" if keyless else " (the key set now)"
        met = week["spent_at"].get(key)
        end = f"; quota found spent {met}" if met else ""
        who = "without a key" if keyless else f"key {key}"
        count = f"{spent:,}{allowed} requests" if allowed else plural(spent, "request")
        lines.append(f"  {who}{mine}: {count}{end}")
    if not week["requests"]:
        lines.append("  none yet this week")
    return lines


def _quota_week(state: HarvestState, settings: Settings) -> dict[str, Any]:
    """This quota week as the lake's ledger has it (runs of other lakes are not in it)."""
    now = dt.datetime.now(dt.UTC)
    reset = quota.next_reset(now)
    ledger = state.load_quota()
    this_week = ledger is not None and ledger.week_start == quota.week_start(now).isoformat()
    key = settings.api_key.reveal() if settings.api_key else None
    return {
        "week_start": f"{quota.week_start(now):%Y-%m-%d %H:%M} UTC",
        "resets_at": f"{reset:%Y-%m-%d %H:%M} UTC",
        "resets_in": duration_text((reset - now).total_seconds()),
        "quota": settings.weekly_quota,
        "key_id": quota.key_id(key),
        "requests": dict(ledger.requests) if ledger and this_week else {},
        "spent_at": dict(ledger.spent_at) if ledger and this_week else {},
    }


def _quarantine(state: HarvestState, status: LakeStatus) -> None:
    """Quarantined rows by ``quarantine``'s one rule (what refresh and verify count)."""
    counts = quarantine.count(state)
    status.quarantined_rows = counts.rows
    status.quarantine_reasons = counts.reasons
    per_day, _ = counts.days()
    status.quarantined_per_day = {d.isoformat(): n for d, n in sorted(per_day.items())}


def _shards_and_rows(state: HarvestState, status: LakeStatus) -> None:
    plan = state.load_plan()
    if plan is None:
        return
    status.harvest_range = (plan.first.isoformat(), plan.last.isoformat())
    markers = state.load_markers()
    leaves = state.leaves(plan, markers)
    manifests = state.load_manifests()
    status.shards_total = len(leaves)
    footers_needed: list[str] = [f for files in manifests.values() for f in files]
    committed: dict[str, list[str]] = {p: list(f) for p, f in manifests.items()}
    for leaf in leaves:
        marker = markers.get(leaf.key)
        if marker is None or marker.status not in ("done", "failed"):
            status.shards_pending += 1
        elif marker.status == "failed":
            status.shards_failed[leaf.key] = marker.cause or "unknown cause"
        else:
            status.shards_done += 1
            kept = [f for f in marker.files if Partition.of_file(f).path not in manifests]
            for path in kept:
                committed.setdefault(Partition.of_file(path).path, []).append(path)
            if len(kept) == len(marker.files):
                status.rows += marker.rows  # the marker counted exactly these files' rows
            else:
                footers_needed.extend(kept)  # part of its rows were rewritten elsewhere
    status.rows += sum(file_rows(state.lake, footers_needed).values())
    status.files = sum(len(files) for files in committed.values())
    status.partitions = sum(1 for files in committed.values() if files)
    held = sorted((Partition.parse(p) for p, files in committed.items() if files))
    if held:
        status.holds = (held[0].path, held[-1].path)
    coverage = state.coverage()
    status.coverage = (coverage.first, coverage.last)
    status.coverage_open_start = coverage.open_start
    status.pending_drops = {
        day: f"lake {d.lake} rows, service {d.service} since {d.seen_at}"
        for day, d in state.load_pending_drops().items()
    }
    status.rewritten_partitions = len(manifests)
    status.uncommitted_files = len(uncommitted_files(state.lake, committed))


def lake_status(settings: Settings) -> LakeStatus:
    """Read the lake's state; LakeError if ``settings.out`` is not a harvester lake."""
    state = open_state(settings)
    meta = state.require_lake()
    status = LakeStatus(state.lake.uri, meta.schema_version)
    complete = state.load_complete()
    plan_exists = state.has_plan()
    status.harvest = "complete" if complete else ("in progress" if plan_exists else "not started")
    status.completed_at = complete.completed_at if complete else None
    _shards_and_rows(state, status)
    _quarantine(state, status)
    status.watermark = state.watermark()
    profile = state.load_service()
    if profile is not None:
        limits = limits_from(profile, settings.max_window, settings.shard_size, settings.rows)
        status.service = Service(profile, limits, probed=False).summary()
    run = state.load_refresh_run()
    status.refresh_interrupted = None if run is None else asdict(run)
    status.quota = _quota_week(state, settings)
    reports = state.load_reports()
    status.runs = len(reports)
    status.last_run = latest_run(reports)
    return status


def latest_run(reports: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The report that finished last. By finish time, not by name: a resumed refresh keeps
    the run id it started with. The times are to the microsecond (``utc_instant``), since a
    harvest and the refresh after it can finish within one second."""
    if not reports:
        return None
    return max(reports, key=lambda r: r.get("finished_at") or r.get("started_at") or "")
