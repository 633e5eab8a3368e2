"""``harvester compact``: merge each partition's small files into few large ones.

A harvest writes one file per shard and partition (thousands of files of ~10k rows for the
whole source), and each refresh rewrites what it touches under new names. Readers pay per
file (an S3 request, a footer, a task in Spark), so compaction rewrites each partition as
``<prefix>-NNNNN.parquet`` files of up to ``writer.PARTITION_FILE_ROWS`` rows.

A partition is rewritten a day range at a time (``rewrite.compact_files``: memory is one
new file's rows, not the month's) and swapped as a refresh swaps files
(``commit.replace_files``): new files hidden, then the partition manifest (the commit), then
they are published and the old files deleted. A killed
compaction leaves either the old files or the new ones committed, never a mix; the others
are uncommitted and the next run's sweep removes them. The rows are not changed: they are
read with the lake's schema and written sorted, as every writer of the lake does.

Compaction rewrites the lake, so it refuses to run while a harvest is unfinished or a
refresh is interrupted; like them it holds the lake's lock (``lock.holding_sync``), with a
heartbeat, and stops before its next write if another run takes the lock over.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from harvester.config import Settings
from harvester.errors import LakeError
from harvester.jobs.report import RunReport
from harvester.storage.commit import replace_files, sweep
from harvester.storage.info import file_rows, load_committed, open_state, require_quiet_lake
from harvester.storage.lock import holding_sync
from harvester.storage.rewrite import compact_files, plan_compaction
from harvester.storage.state import HarvestState
from harvester.storage.writer import PARTITION_FILE_ROWS

log = logging.getLogger("harvester.compact")


@dataclass
class CompactOutcome:
    report: RunReport
    partitions: int = 0
    compacted: list[str] = field(default_factory=list)
    files_before: int = 0
    files_after: int = 0
    rows: int = 0

    def lines(self) -> list[str]:
        out = [
            f"compact complete: {len(self.compacted)} of {self.partitions} partitions rewritten,"
            f" files {self.files_before} -> {self.files_after}, {self.rows:,} rows unchanged"
            f" in {self.report.duration_s:.1f}s",
        ]
        if self.report.swept_files:
            out.append(f"removed {self.report.swept_files} uncommitted files first")
        if self.report.saved_to:
            out.append(f"report: {self.report.saved_to}")
        return out


def compact_lake(settings: Settings) -> CompactOutcome:
    """Compact every partition of the lake at ``settings.out`` that has more files than it
    needs; writes a run report."""
    state = open_state(settings)
    state.lake.preflight(for_write=True)  # it rewrites partitions: prove it may, first
    require_quiet_lake(state, "compact")
    # The lock's heartbeat runs while compacting; a lost lock stops it before its next write.
    with holding_sync(state, "compact"):
        return _compact(settings, state)


def _compact(settings: Settings, state: HarvestState) -> CompactOutcome:
    lake = state.lake
    report = RunReport.begin("compact", settings)
    outcome = CompactOutcome(report)
    committed = load_committed(state).files
    # Leftovers of a killed run first, so they cannot be mistaken for data later.
    report.swept_files = sweep(lake, committed)
    rows = file_rows(lake, [f for files in committed.values() for f in files])
    for partition, files in sorted(committed.items()):
        partition_rows = sum(rows[f] for f in files)
        outcome.partitions += 1
        outcome.rows += partition_rows
        outcome.files_before += len(files)
        if len(files) == 1 and partition_rows <= PARTITION_FILE_ROWS:
            outcome.files_after += 1  # nothing to gain, and no need to read it
            continue
        plan = plan_compaction(lake, files)
        if plan.rows != partition_rows:  # footers and data disagree: do not touch it
            raise LakeError(
                f"{partition}: the footers say {partition_rows} rows but {plan.rows} were"
                " read; not compacting it (run `harvester verify`)"
            )
        if not plan.worth_it:  # already day ranges of full files (compacted before)
            outcome.files_after += len(files)
            continue
        log.info("compact: %s, %d files, %d rows", partition, len(files), partition_rows)
        # One name per run: new files never collide with the ones they replace. Written a
        # day range at a time, so memory is one new file's rows, not the month's.
        hidden = compact_files(lake, partition, plan, report.run_id, "compact")
        written_rows = sum(item.file.rows for item in hidden)
        if written_rows != partition_rows:
            raise LakeError(
                f"{partition}: {partition_rows} rows were read but {written_rows} written;"
                " not compacting it (run `harvester verify`)"
            )
        written = replace_files(state, partition, files, files, hidden)
        outcome.compacted.append(partition)
        outcome.files_after += len(written)
    report.finish("complete")
    report.rows_in_lake = outcome.rows
    report.extra.update(
        {
            "partitions": outcome.partitions,
            "partitions_compacted": outcome.compacted,
            "files_before": outcome.files_before,
            "files_after": outcome.files_after,
        }
    )
    report.save(state)
    return outcome
