"""``harvester changes``: the ids each refresh, reload and repair added, updated, deleted.

Reads the change feed (``harvester.storage.changes``, under ``_harvest/changes/``) and nothing
else: no API call, no write. Only runs that ended are shown: the feed of a run still in
progress (``_harvest/refresh/run.json`` names it) is complete only once it ends, so a
downstream job that consumes ``changes --since <last run it saw>`` never reads half a run.

``--since`` takes a run id (the runs after it) or a date (the runs begun on or after it):
run ids begin with their start time (``20240102T030405Z-refresh-…``), so both are a
comparison of text. ``--json`` prints one object per line; ``--parquet PATH`` writes one
Parquet file of ``changes.SCHEMA`` (a local path).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harvester.config import Settings
from harvester.errors import ConfigError
from harvester.humanize import plural
from harvester.storage import changes
from harvester.storage.info import open_state

_RUN_ID = re.compile(r"\d{8}T\d{6}Z-[a-z]+-[0-9a-f]+")


def since_key(since: str | None) -> tuple[str, bool]:
    """What ``--since`` compares run ids with, and whether that run itself is left out (a
    run id: the runs *after* it; a date: the runs begun on or after it)."""
    if not since:
        return "", False
    if _RUN_ID.fullmatch(since):
        return since, True
    try:
        day = dt.date.fromisoformat(since)
    except ValueError:
        raise ConfigError(
            f"--since {since!r}: give a run id (as `harvester changes` prints) or a date YYYY-MM-DD"
        ) from None
    return f"{day:%Y%m%d}T000000Z", False


@dataclass
class ChangeFeed:
    runs: list[str]
    table: pa.Table
    in_progress: str | None  # a run whose feed is left out until it ends

    def counts(self, run_id: str) -> dict[str, int]:
        rows = self.table.filter(pc.equal(self.table.column("run_id"), run_id))
        out = dict.fromkeys(changes.KINDS, 0)
        for item in pc.value_counts(rows.column("change")).to_pylist():
            out[str(item["values"])] = int(item["counts"])
        return out

    def lines(self) -> list[str]:
        out = []
        for run_id in self.runs:
            c = self.counts(run_id)
            out.append(
                f"run {run_id}: {c['added']:,} added, {c['updated']:,} updated,"
                f" {c['deleted']:,} deleted"
            )
        for row in self.table.to_pylist():
            stamp = row["createDateTime"].isoformat() if row["createDateTime"] else "-"
            out.append(f"  {row['change']:7} {row['id']}  {row['submissionDate']}  {stamp}")
        if self.in_progress:
            out.append(
                f"run {self.in_progress} is still in progress: its changes come once it ends"
            )
        if not self.runs:
            out.append("no changes recorded")
        out.append(f"{plural(len(self.runs), 'run')}, {plural(self.table.num_rows, 'change')}")
        return out


def read_feed(settings: Settings, since: str | None) -> ChangeFeed:
    """The feed of every ended run after ``since`` (``since_key``), oldest first."""
    key, exclusive = since_key(since)
    state = open_state(settings)
    running = state.load_refresh_run()
    in_progress = running.run_id if running is not None else None
    runs = [
        r for r in changes.runs(state) if r != in_progress and (r > key if exclusive else r >= key)
    ]
    return ChangeFeed(runs, changes.read(state, runs), in_progress)


def write_parquet(feed: ChangeFeed, path: str) -> None:
    """The feed as one Parquet file at a local ``path``; a path it cannot write is the
    flag's error, in one line."""
    try:
        pq.write_table(feed.table, path, compression="zstd")
    except OSError as exc:
        raise ConfigError(f"--parquet {path}: cannot write it ({exc.strerror or exc})") from None
