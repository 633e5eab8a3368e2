"""The run report: what a harvest or refresh did, printed and saved under ``_harvest/runs/``.

Built from the settings' public view (never the key), the pipeline's totals and the
client's counters, so each of those stays ignorant of reporting.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from harvester.config import Settings
from harvester.state import HarvestState, utc_now


class ClientCounters(Protocol):
    requests: int
    pages_ok: int
    throttled_429: int
    bytes_received: int
    wait_seconds_429: float
    retries_by_cause: Counter[str]


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
    every command finishes its report this one way."""

    command: str
    run_id: str
    settings: dict[str, Any]
    started_at: str
    finished_at: str = ""
    status: str = "running"
    plan_range: tuple[str, str] | None = None
    duration_s: float = 0.0
    rows_written: int = 0
    rows_in_lake: int = 0
    shards_done: int = 0
    shards_failed: int = 0
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
    unknown_fields: dict[str, int] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    saved_to: str = ""
    started_monotonic: float = field(default_factory=time.monotonic, repr=False)

    @classmethod
    def begin(cls, command: str, settings: Settings) -> RunReport:
        return cls(command, new_run_id(command), settings.public_dict(), utc_now())

    def absorb_totals(self, totals: Totals) -> None:
        """What the pipeline did (shards, rows, quarantine)."""
        self.rows_written += totals.rows_written
        self.shards_done += totals.shards_done
        self.shards_failed += totals.shards_failed
        self.shards_split += totals.shards_split
        self.refetched_shards += totals.refetched_shards
        self.reused_pages += totals.reused_pages
        self.quarantined += totals.quarantined
        self.unknown_fields = dict(totals.unknown_fields)
        self.events.extend(totals.events)

    def finish(self, status: str, stats: ClientCounters | None = None) -> None:
        """Close the report: its status, how long the run took, what the client spent."""
        self.status = status
        self.finished_at = utc_now()
        self.duration_s = round(time.monotonic() - self.started_monotonic, 3)
        if stats is not None:
            self._absorb_client(stats)

    def save(self, state: HarvestState) -> None:
        self.saved_to = state.save_report(self.run_id, self.to_json())

    def _absorb_client(self, stats: ClientCounters) -> None:
        self.requests = stats.requests
        self.pages_ok = stats.pages_ok
        self.throttled_429 = stats.throttled_429
        self.wait_seconds_429 = round(stats.wait_seconds_429, 3)
        self.bytes_received = stats.bytes_received
        self.retries_by_cause = dict(stats.retries_by_cause)

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in vars(self).items() if k not in ("saved_to", "started_monotonic")}
        duration = self.duration_s or 0.0
        data["rows_per_s"] = round(self.rows_written / duration, 1) if duration else None
        data["requests_per_s"] = round(self.requests / duration, 2) if duration else None
        return data

    def summary_lines(self) -> list[str]:
        lines = [
            f"{self.command} {self.status}: {self.rows_written:,} rows written"
            f" ({self.rows_in_lake:,} in the lake), {self.shards_done} shards done,"
            f" {self.shards_failed} failed, {self.quarantined} rows quarantined",
            f"requests {self.requests} in {self.duration_s:.1f}s, 429s {self.throttled_429},"
            f" retries {sum(self.retries_by_cause.values())} {self.retries_by_cause or ''}".rstrip(),
        ]
        if self.reused_pages:
            lines.append(f"resumed: {self.reused_pages} pages kept by the killed run reused")
        if "rows_added" in self.extra:
            e = self.extra
            lines.append(
                f"refresh since {e.get('since')}: {e['rows_added']} rows added,"
                f" {e['rows_updated']} updated, {e['rows_deleted']} deleted;"
                f" {len(e.get('partitions_rewritten', []))} partitions rewritten;"
                f" watermark {e.get('watermark')}"
                + (" (no change: the lake already equalled the source)" if e.get("no_op") else "")
            )
            for day, why in sorted(e.get("days_repaired", {}).items()):
                lines.append(f"repaired {day}: {why}")
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
