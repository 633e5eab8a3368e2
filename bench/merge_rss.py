"""Peak memory and time of refresh's partition merge (issue 12).

Run: ``python -m bench.merge_rss [--rows 900000] [--impl harvester.storage.merge] [--keep DIR]``;
``make bench`` runs it as the ``refresh_rss`` scenario (``measure``).

Builds one month of ``--rows`` simulator rows (``harvester.sim.rows``, decoded like a
harvest) and writes it as a partition with the harvester's writer, plus the staged rows of
two refreshes, then runs each refresh's merge in a fresh subprocess: the cases
``files-*`` as ``Refresher._merge_stages`` does it now (``rewrite.merge_files``, the files
holding an affected row only), the others as the whole-partition merge did before it
(``read_files`` of the partition and of the stage, ``merge_partition``, the writer's
files, old files deleted):

- ``repair``: 2,000 late rows, 5,000 modified and 500 deleted; the changed rows (late and
  modified) are merged first, then every day of the month is fetched again and replaces
  the lake's rows of that day (``files-repair``: both in one pass);
- ``restamp``: every row's ``createDateTime`` changed (an upstream reload): all rows are
  changed rows.

Each child prints its wall time and peak RSS (``VmHWM`` of ``/proc/self/status``; also
its RSS before the merge: the interpreter and its imports), so the numbers are the
merge's own, not the setup's. ``--impl`` names the module that provides
``merge_partition`` (e.g. a copy of an older ``harvester/storage/merge.py``, for comparison).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harvester.service.decode import decode_docs
from harvester.sim.rows import Stamps, generate
from harvester.storage.commit import read_files
from harvester.storage.memory import use_returning_allocator
from harvester.storage.rewrite import (
    StagedRows,
    compact_files,
    merge_files,
    new_file_paths,
    plan_compaction,
)
from harvester.storage.schema import ARROW_SCHEMA
from harvester.storage.store import Lake
from harvester.storage.writer import write_rewrite_files

YEAR, MONTH = 2019, 7
PARTITION = f"year={YEAR}/month={MONTH}"
DAYS = [dt.date(YEAR, MONTH, d) for d in range(1, 32)]
LATE, MODIFIED, DELETED = 2_000, 5_000, 500
CASES = ("repair", "restamp")
# The steps as the refresh and compact run them now (issue 20, item 4): a partition of
# bounded files, merged at file grain (``rewrite.merge_files``); and ``compact`` of the
# month as a harvest leaves it (shard files of ~10,000 rows, each spanning the month).
FILE_CASES = ("files-repair", "files-restamp", "compact")
SHARD_ROWS = 10_000
_REPO = Path(__file__).resolve().parents[1]


def _rows(rng: random.Random, count: int, prefix: bytes, stamp_offset_days: int) -> pa.Table:
    """``count`` decoded rows spread over the month's days."""
    tables = []
    per_day, extra = divmod(count, len(DAYS))
    for n, day in enumerate(DAYS):
        k = per_day + (n < extra)
        stamps = Stamps(day + dt.timedelta(days=1 + stamp_offset_days), 44 * 86400)
        docs = generate(rng, k, day, stamps, prefix + day.isoformat().encode()).rows
        tables.append(decode_docs(docs, source="bench").table)
    return pa.concat_tables(tables)


# A run id of the shape ``report.new_run_id`` makes, for the rewrite files' names.
_RUN_ID = "20260101T000000Z-bench-0"


def _write_partition(lake: Lake, table: pa.Table, step: str) -> list[str]:
    """The partition's rows as rewrite files, published at once (as ``replace_files``
    does, without its manifest)."""
    written = []
    taken = set(lake.list_files(PARTITION, suffix=".parquet"))
    names = new_file_paths(PARTITION, _RUN_ID, step, taken)
    for item in write_rewrite_files(lake, PARTITION, table, names):
        lake.publish(item.temp, item.file.path)
        written.append(item.file.path)
    return written


def _write_stage(directory: Path, name: str, table: pa.Table) -> None:
    """A stage's rows as a refresh's fetch leaves them: files of a shard's size."""
    for n, start in enumerate(range(0, table.num_rows, SHARD_ROWS)):
        piece = table.slice(start, SHARD_ROWS)
        pq.write_table(
            piece, str(directory / "stage" / f"{name}-{n:05d}.parquet"), compression="zstd"
        )


def _stage_files(stage: Lake, name: str) -> list[str]:
    return sorted(p for p in stage.list_files("", suffix=".parquet") if p.startswith(f"{name}-"))


def build(directory: Path, rows: int) -> None:
    """The partition (written with the writer) and each stage's rows (one file each)."""
    rng = random.Random(12)
    lake = Lake.open(str(directory / "lake"))
    existing = _rows(rng, rows, b"base", 0)
    _write_partition(lake, existing, "base")
    (directory / "stage").mkdir(exist_ok=True)
    shards = Lake.open(str(directory / "shards"))
    names = new_file_paths(PARTITION, _RUN_ID, "shard", set())
    order = pc.sort_indices(existing.column("id"))  # ids are random: each piece spans the month
    for start in range(0, existing.num_rows, SHARD_ROWS):
        piece = existing.take(order[start : start + SHARD_ROWS])
        for item in write_rewrite_files(shards, PARTITION, piece, names):
            shards.publish(item.temp, item.file.path)

    picks = rng.sample(range(existing.num_rows), MODIFIED + DELETED)
    modified_at = pa.array(sorted(picks[:MODIFIED]), pa.int64())
    deleted_at = pa.array(sorted(picks[MODIFIED:]), pa.int64())
    modified = existing.take(modified_at)
    later = pc.add(modified.column("createDateTime"), pa.scalar(dt.timedelta(days=60)))
    modified = modified.set_column(
        modified.schema.get_field_index("createDateTime"), "createDateTime", later
    ).set_column(
        modified.schema.get_field_index("nationalClass"),
        "nationalClass",
        pa.array(["999"] * modified.num_rows, pa.string()),
    )
    late = _rows(rng, LATE, b"late", 60)
    _write_stage(directory, "repair-changed", pa.concat_tables([late, modified]))

    # Every day again: the lake's rows minus the deleted ones, the modified ones as they are
    # now, and the late ones.
    gone = pc.is_in(
        existing.column("id"),
        value_set=pa.concat_arrays(
            [
                existing.column("id").take(deleted_at).combine_chunks(),
                modified.column("id").combine_chunks(),
            ]
        ),
    )
    days = pa.concat_tables([existing.filter(pc.invert(gone)), modified, late])
    _write_stage(directory, "repair-days", days)

    restamped = existing.set_column(
        existing.schema.get_field_index("createDateTime"),
        "createDateTime",
        pc.add(existing.column("createDateTime"), pa.scalar(dt.timedelta(days=1))),
    )
    _write_stage(directory, "restamp-changed", restamped)


def _rss_bytes(field: str = "VmHWM") -> int:
    """This process's peak RSS (``VmHWM``) or current RSS (``VmRSS``), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024  # the kernel counts kB = KiB
    return -1


def _merge_stage(lake: Lake, stage: Lake, stage_file: str, days: list[dt.date]) -> dict[str, Any]:
    """One stage merged into the whole partition, as ``Refresher._merge_stage`` did it
    before the merge went to file grain (kept for comparison)."""
    impl = importlib.import_module(_IMPL[0])
    old_files = lake.list_files(PARTITION, suffix=".parquet")
    incoming = read_files(stage, _stage_files(stage, stage_file))
    existing = read_files(lake, old_files)
    empty = ARROW_SCHEMA.empty_table()
    if days:
        merged, stats = impl.merge_partition(existing, empty, days, incoming)
    else:
        merged, stats = impl.merge_partition(existing, incoming, (), empty)
    written = _write_partition(lake, merged, "merge")
    for path in old_files:
        if path not in written:
            lake.delete(path)
    return {
        "rows": merged.num_rows,
        "added": stats.added,
        "updated": stats.updated,
        "deleted": stats.deleted,
    }


_IMPL = ["harvester.storage.merge"]


def _merge_files_stage(
    lake: Lake, stage: Lake, changed_file: str | None, days_file: str | None, step: str
) -> dict[str, Any]:
    """The staged rows merged at file grain, as ``Refresher._merge_stages`` does it now: the
    changed rows and then the days fetched again in one pass (``days_last``), the touched
    files only, one group at a time, the new files published and the replaced ones
    deleted."""
    files = sorted(lake.list_files(PARTITION, suffix=".parquet"))

    def staged(name: str | None) -> StagedRows:
        if name is None:
            return StagedRows(table=ARROW_SCHEMA.empty_table())
        return StagedRows(lake=stage, files=tuple(_stage_files(stage, name)))

    days = DAYS if days_file is not None else []
    result = merge_files(
        lake,
        PARTITION,
        files,
        staged(changed_file),
        days,
        staged(days_file),
        _RUN_ID,
        step,
        days_last=True,
    )
    for item in result.written:
        lake.publish(item.temp, item.file.path)
    for path in result.removed:
        lake.delete(path)
    return {
        "files": len(files),
        "rewritten": len(result.removed),
        "rows_written": result.rows_written,
        "added": result.stats.added,
        "updated": result.stats.updated,
        "deleted": result.stats.deleted,
    }


def _file_case(lake: Lake, stage: Lake, case: str) -> list[dict[str, Any]]:
    if case == "files-repair":
        # One pass, as a refresh merges its two stages since issue 20's "one merge".
        return [_merge_files_stage(lake, stage, "repair-changed", "repair-days", "days")]
    if case == "files-restamp":
        return [_merge_files_stage(lake, stage, "restamp-changed", None, "changed")]
    # compact: the harvest's shard files (``lake`` is a copy of them here) in day ranges.
    files = sorted(lake.list_files(PARTITION, suffix=".parquet"))
    plan = plan_compaction(lake, files)
    hidden = compact_files(lake, PARTITION, plan, _RUN_ID, "compact")
    for item in hidden:
        lake.publish(item.temp, item.file.path)
    for path in files:
        lake.delete(path)
    return [{"files": len(files), "files_after": len(hidden), "rows": plan.rows}]


def child(lake_dir: Path, stage_dir: Path, case: str) -> dict[str, Any]:
    allocator = use_returning_allocator()  # as the CLI's every command (``storage.memory``)
    lake, stage = Lake.open(str(lake_dir)), Lake.open(str(stage_dir))
    importlib.import_module(_IMPL[0])
    before = _rss_bytes("VmRSS")  # the interpreter and its imports, before any row
    start = time.perf_counter()
    if case in FILE_CASES:
        stages = _file_case(lake, stage, case)
    elif case == "repair":
        stages = [
            _merge_stage(lake, stage, "repair-changed", []),
            _merge_stage(lake, stage, "repair-days", DAYS),
        ]
    else:
        stages = [_merge_stage(lake, stage, "restamp-changed", [])]
    seconds = time.perf_counter() - start
    peak = _rss_bytes()
    return {
        "case": case,
        "impl": _IMPL[0],
        "allocator": allocator,
        "seconds": round(seconds, 1),
        # MiB, as this script has always printed them (docs/decisions.md quotes them).
        "peak_rss_mb": round(peak / 2**20),
        "peak_rss_bytes": peak,
        "rss_before_bytes": before,
        "stages": stages,
    }


def measure(
    rows: int,
    *,
    impl: str = "harvester.storage.merge",
    cases: Sequence[str] = CASES,
    keep: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Build ``rows`` rows (in ``keep``, reused if already built there; else a temporary
    directory) and run each case's merge in a fresh subprocess, each from a copy of the
    same partition. Returns the build's seconds (``None`` when reused) and each case's
    result as its child reported it (``seconds``, ``peak_rss_mb``, ``stages``)."""
    results: dict[str, Any] = {"rows": rows, "impl": impl, "build_s": None, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="merge-rss-") as tmp:
        base = keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        if not (base / "built").exists():
            start = time.perf_counter()
            build(base, rows)
            (base / "built").touch()
            results["build_s"] = round(time.perf_counter() - start, 1)
            log(f"built {rows:,} rows in {results['build_s']:.0f}s")
        for case in cases:
            results["cases"][case] = run_case(base, case, impl)
            log(json.dumps(results["cases"][case]))
    return results


def run_case(base: Path, case: str, impl: str = "harvester.storage.merge") -> dict[str, Any]:
    """One case's merge in a fresh subprocess, on a copy of the partition built in
    ``base``; returns what the child reported."""
    work = base / "work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(base / ("shards" if case == "compact" else "lake"), work)
    try:
        command = [sys.executable, "-m", "bench.merge_rss", "--impl", impl]
        command += ["--case", case, "--child", str(work), str(base / "stage")]
        done = subprocess.run(command, capture_output=True, text=True, cwd=_REPO)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"merge_rss {case}: exit {done.returncode}: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.merge_rss", description=__doc__)
    parser.add_argument("--rows", type=int, default=900_000)
    parser.add_argument(
        "--impl", default="harvester.storage.merge", help="module with merge_partition"
    )
    parser.add_argument("--keep", type=Path, help="build here (reused if already built)")
    parser.add_argument(
        "--case", choices=CASES + FILE_CASES, action="append", help="default: all five"
    )
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _IMPL[0] = args.impl
    cases = args.case or [*CASES, *FILE_CASES]
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], cases[0])))
        return 0
    measure(
        args.rows,
        impl=args.impl,
        cases=cases,
        keep=args.keep,
        log=lambda line: print(line, flush=True),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
