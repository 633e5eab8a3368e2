"""The run report: what a harvest or refresh did, printed and saved under ``_harvest/runs/``.

Built from the settings' public view (never the key), the pipeline's totals and the
client's counters, so each of those stays ignorant of reporting.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from harvester.config import Settings
from harvester.errors import HarvesterError, LockLost, RunStopped
from harvester.humanize import plural
from harvester.storage import quota
from harvester.storage.shard import Shard
from harvester.storage.state import HarvestState, ShardMarker, utc_instant

log = logging.getLogger("harvester.jobs.report")


class ClientCounters(Protocol):
    requests: int
    pages_ok: int
    throttled_429: int
    bytes_received: int
    wait_seconds_429: float
    retries_by_cause: Counter[str]
    holds: list[dict[str, object]]
    quota_spent_at: str
    capped_waits: int


class Totals(Protocol):
    shards_done: int
    shards_failed: int
    shards_split: int
    rows_written: int
    quarantined: int
    refetched_shards: int
    reused_pages: int
    unknown_fields: Counter[str]
    events: list[str]


def new_run_id(command: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{command}-{secrets.token_hex(3)}"


@dataclass
class RunReport:
    """One run's report. ``begin`` starts it, ``absorb_totals`` adds what a pipeline did,
    ``finish`` closes it (status, duration, the client's counters) and ``save`` writes it:
    every command finishes its report this one way. ``kept`` saves it however the run
    ends (a signal, a clean stop, an error), so every run that touched its lake leaves one.
    Saving also adds the run's requests to the lake's weekly quota ledger (``quota``)."""

    command: str
    run_id: str
    settings: dict[str, Any]
    started_at: str
    finished_at: str = ""
    status: str = "running"
    plan_range: tuple[str, str] | None = None
    duration_s: float = 0.0
    # Shards and rows in the one vocabulary of docs/operations.md ("Shards and rows"), the
    # progress display's and ``harvester status``'s: the shard counts are the markers' word
    # on the plans this run worked on (``count_shards``), ``shards_fetched`` and the rows
    # what this run's pipelines committed.
    rows_written: int = 0  # committed by this run (a refresh: into its staging areas)
    rows_in_lake: int = 0  # in the lake's committed files after the run
    shards_total: int = 0  # leaves of the plans this run worked on
    shards_done: int = 0  # of those, committed (by this run or before)
    shards_failed: int = 0  # of those, whose last attempt failed
    shards_fetched: int = 0  # fetches this run committed
    shards_split: int = 0
    refetched_shards: int = 0
    reused_pages: int = 0  # pages a killed run kept, used instead of asking again
    quarantined: int = 0
    requests: int = 0
    pages_ok: int = 0
    throttled_429: int = 0
    wait_seconds_429: float = 0.0
    bytes_received: int = 0
    closing_check_requests: int = 0
    swept_files: int = 0
    retries_by_cause: dict[str, int] = field(default_factory=dict)
    outages: list[dict[str, object]] = field(default_factory=list)  # and quota waits
    quota_spent_at: str = ""
    capped_waits: int = 0
    key_id: str = ""  # ``quota.key_id``: a digest naming the key, never the key
    unknown_fields: dict[str, int] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    saved_to: str = ""
    started_monotonic: float = field(default_factory=time.monotonic, repr=False)
    ledgered: int = field(default=0, repr=False)  # requests already in the quota ledger
    # Set once the run writes its lake (it holds the lock): from then on an error's report
    # is kept too. Before, only a stop or a signal is: a bad start leaves the lake untouched.
    writing: bool = field(default=False, repr=False)

    @classmethod
    def begin(cls, command: str, settings: Settings) -> RunReport:
        key = settings.api_key.reveal() if settings.api_key else None
        report = cls(command, new_run_id(command), settings.public_dict(), utc_instant())
        report.key_id = quota.key_id(key)
        return report

    @contextlib.contextmanager
    def kept(self, state: HarvestState, stats: ClientCounters | None = None) -> Iterator[None]:
        """Whatever ends the block early finishes the report with what ended it (status
        ``interrupted``, ``stopped`` or ``failed``; ``extra["ended_by"]``) and saves it,
        then lets it go on. Only into a lake that exists (``HarvestState.is_lake``), and
        for an error only once the run was ``writing``: a bad start (a wrong key, a lake in
        use) leaves the lake untouched, while a signal or a clean stop is always recorded.
        A report that cannot be saved (the lake itself failing) is logged, never raised
        over the first error."""
        try:
            yield
        except BaseException as exc:
            status, why = _ended_by(exc)
            self.finish(status, stats)
            self.extra["ended_by"] = why
            try:
                # A run that lost its lock writes nothing more: the lake is another run's.
                if (
                    state.is_lake()
                    and (self.writing or status != "failed")
                    and not isinstance(exc, LockLost)
                ):
                    self.save(state)
            except Exception as failure:  # the first error is the one to show
                log.warning("could not save the run report: %s", failure)
            raise

    def absorb_totals(self, totals: Totals) -> None:
        """What the pipeline did (shards, rows, quarantine)."""
        self.rows_written += totals.rows_written
        self.shards_fetched += totals.shards_done  # the pipeline's "done": what it committed
        self.shards_split += totals.shards_split
        self.refetched_shards += totals.refetched_shards
        self.reused_pages += totals.reused_pages
        self.quarantined += totals.quarantined
        self.unknown_fields = dict(totals.unknown_fields)
        self.events.extend(totals.events)

    def count_shards(self, leaves: Sequence[Shard], markers: Mapping[str, ShardMarker]) -> None:
        """Add a plan's leaves as its markers tell them: done, failed, or else pending. Called
        once per plan at the end of its work (a harvest: its plan; a refresh: each staging
        area it fetched), as ``status`` counts the lake's plan."""
        for leaf in leaves:
            marker = markers.get(leaf.key)
            self.shards_total += 1
            self.shards_done += marker is not None and marker.done
            self.shards_failed += marker is not None and marker.status == "failed"

    def finish(self, status: str, stats: ClientCounters | None = None) -> None:
        """Close the report: its status, how long the run took, what the client spent."""
        self.status = status
        self.finished_at = utc_instant()
        self.duration_s = round(time.monotonic() - self.started_monotonic, 3)
        if stats is not None:
            self._absorb_client(stats)

    def save(self, state: HarvestState) -> None:
        """Write the report, and add the requests not counted yet to the quota ledger."""
        self.saved_to = state.save_report(self.run_id, self.to_json())
        if self.requests > self.ledgered:
            now = dt.datetime.now(dt.UTC)
            fresh = self.requests - self.ledgered
            quota.record(state, self.key_id, fresh, self.quota_spent_at, now)
            self.ledgered = self.requests

    def _absorb_client(self, stats: ClientCounters) -> None:
        self.requests = stats.requests
        self.pages_ok = stats.pages_ok
        self.throttled_429 = stats.throttled_429
        self.wait_seconds_429 = round(stats.wait_seconds_429, 3)
        self.bytes_received = stats.bytes_received
        self.retries_by_cause = dict(stats.retries_by_cause)
        self.outages = list(stats.holds)
        self.quota_spent_at = stats.quota_spent_at
        self.capped_waits = stats.capped_waits

    def to_json(self) -> dict[str, Any]:
        hidden = ("saved_to", "started_monotonic", "ledgered", "writing")
        data = {k: v for k, v in vars(self).items() if k not in hidden}
        duration = self.duration_s or 0.0
        data["rows_per_s"] = round(self.rows_written / duration, 1) if duration else None
        data["requests_per_s"] = round(self.requests / duration, 2) if duration else None
        return data

    def summary_lines(self) -> list[str]:
        pending = max(0, self.shards_total - self.shards_done - self.shards_failed)
        split = f", {self.shards_split:,} split" if self.shards_split else ""
        lines = [
            f"{self.command} {self.status}: {self.rows_written:,} rows written,"
            f" {self.rows_in_lake:,} rows in the lake, {self.quarantined:,} rows quarantined",
            f"shards {self.shards_done:,}/{self.shards_total:,} done ({self.shards_fetched:,}"
            f" fetched by this run{split}), {self.shards_failed:,} failed, {pending:,} pending",
            f"requests {self.requests} in {self.duration_s:.1f}s, 429s {self.throttled_429},"
            f" retries {sum(self.retries_by_cause.values())} {self.retries_by_cause or ''}".rstrip(),
        ]
        if self.reused_pages:
            lines.append(
                f"resumed: {plural(self.reused_pages, 'page')} kept by the killed run reused"
            )
        if "rows_added" in self.extra:
            e = self.extra
            lines.append(
                f"refresh since {e.get('since')}: {e['rows_added']} rows added,"
                f" {e['rows_updated']} updated, {e['rows_deleted']} deleted;"
                f" {plural(len(e.get('partitions_rewritten', [])), 'partition')} rewritten;"
                f" watermark {e.get('watermark')}"
                + (" (no change: the lake already equalled the source)" if e.get("no_op") else "")
            )
            reload = e.get("reload")
            if reload:
                fetched = plural(reload.get("months_fetched", 0), "month")
                lines.append(
                    f"reload: {reload.get('changed_rows', 0):,} of the lake's"
                    f" {reload.get('lake_rows', 0):,} rows changed, so the coverage was"
                    f" fetched again month by month: {fetched} fetched,"
                    f" {reload.get('months_current', 0):,} already current"
                )
            for day, why in sorted(e.get("days_repaired", {}).items()):
                lines.append(f"repaired {day}: {why}")
        for hold in self.outages:
            what = "outage" if hold.get("kind") == "outage" else "waited for the weekly quota"
            until = hold.get("ended_at") or "the end of the run"
            failed = hold.get("failed_requests")
            lines.append(
                f"{what}: {hold.get('started_at')} .. {until} ({hold.get('seconds')}s,"
                f" {plural(failed if isinstance(failed, int) else 0, 'failed request')},"
                f" cause {hold.get('cause')})"
            )
        if self.capped_waits:
            lines.append(
                f"Retry-After capped at max_retry_after {plural(self.capped_waits, 'time')}"
            )
        if self.unknown_fields:
            lines.append(f"unknown fields kept in unknownFields: {self.unknown_fields}")
        lines.extend(f"failed shard {key}: {cause}" for key, cause in sorted(self.failures.items()))
        if self.saved_to:
            lines.append(f"report: {self.saved_to}")
        return lines


@dataclass
class RunOutcome:
    """What a harvest, refresh or repair ended with: its report, and whether its work is
    complete (False: failed shards, re-run to retry them)."""

    report: RunReport
    complete: bool


def _ended_by(exc: BaseException) -> tuple[str, str]:
    """A report's status and ``ended_by`` for what ended its run early."""
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        # cli.run_async cancels with the signal's name; Ctrl-C's cancel carries none.
        return "interrupted", str(exc) or "SIGINT"
    if isinstance(exc, RunStopped):
        return "stopped", str(exc)
    if isinstance(exc, HarvesterError):
        return "failed", str(exc)
    return "failed", f"unexpected {type(exc).__name__}: {exc}"
