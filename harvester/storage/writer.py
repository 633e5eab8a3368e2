"""Arrow tables -> Parquet files in ``year=YYYY/month=M`` partitions, with deterministic names.

A shard's rows are split by each row's *own* ``submissionDate`` (not by what the shard asked
for), and each part goes to ``<partition>/<name>``, the shard's ``datafile.DataFileName``.
The name depends only on the shard key, so writing a shard again (a retry, a resume, a
re-harvest) replaces its files instead of adding duplicates. Values from the data reach a path only through ``Partition``,
which accepts nothing but a validated year and month.

Files are written for both readers: zstd, ~128k-row row groups, rows sorted by
``(submissionDate, id)`` (similar rows together compress better and give tight min/max
statistics per row group), timestamps as Parquet ``TIMESTAMP(MICROS)`` (Spark reads that; it
mishandles nanoseconds and int96 is deprecated). Each file is built in memory and handed to
``Lake.write_bytes``, which makes it appear atomically. The writer knows nothing of HTTP.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harvester.storage.partition import Partition
from harvester.storage.schema import ARROW_SCHEMA, COLUMNS
from harvester.storage.store import Lake

ROW_GROUP_ROWS: Final = 128 * 1024
# A data file's most rows: what any one-file step (a file-grain merge, a compaction's
# output) holds in memory is a few times this many rows. At 131,072 a merge re-stamping a
# 1 M-row month peaked at 324 MiB, at 65,536 at 294 MiB (bench/merge_rss.py; the step may
# take 300 MB): each group's existing, fetched, merged and sorted rows are live at once. On
# disk ~5-8 MB (zstd), one row group, what DuckDB and Spark read in one task; a 1 M-row month
# is 16 files, ~1,400 for the whole corpus. A daily change rewrites the files of the days it
# touches, so smaller files also write fewer rows.
PARTITION_FILE_ROWS: Final = 64 * 1024
SORT_KEYS: Final = [("submissionDate", "ascending"), ("id", "ascending")]
_SAFE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class WrittenFile:
    path: str  # relative to the lake root, e.g. year=2019/month=7/part-2019-07-15.parquet
    rows: int
    bytes: int


def _check_name(name: str, what: str = "data file name") -> str:
    """A file name that cannot climb out of its partition or hide from readers."""
    if not _SAFE_NAME.fullmatch(name) or ".." in name or len(name) > 200:
        raise ValueError(f"unsafe {what}: {name!r}")
    return name


def _sorted(table: pa.Table) -> pa.Table:
    if table.schema != ARROW_SCHEMA:
        # Same columns, maybe other metadata or nullability (e.g. read back from a file).
        table = table.select(list(COLUMNS)).cast(ARROW_SCHEMA)
    return table.sort_by(SORT_KEYS)


def _split_by_month(table: pa.Table) -> list[tuple[str, pa.Table]]:
    """(partition, rows) per year/month of each row's submissionDate; table must be sorted."""
    dates = table.column("submissionDate")
    if dates.null_count:
        raise ValueError("rows without submissionDate cannot be partitioned")
    keys = pc.add(pc.multiply(pc.year(dates), 100), pc.month(dates)).combine_chunks()
    # Sorted by date, so each month is one contiguous run: slice, don't filter.
    runs = pc.run_end_encode(keys)
    out: list[tuple[str, pa.Table]] = []
    start = 0
    for yyyymm, end in zip(runs.values.to_pylist(), runs.run_ends.to_pylist(), strict=True):
        partition = Partition(yyyymm // 100, yyyymm % 100)
        out.append((partition.path, table.slice(start, end - start)))
        start = end
    return out


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        row_group_size=ROW_GROUP_ROWS,
        coerce_timestamps="us",
        use_deprecated_int96_timestamps=False,
        allow_truncated_timestamps=False,
    )
    return sink.getvalue()


def _write(lake: Lake, path: str, table: pa.Table) -> WrittenFile:
    data = _parquet_bytes(table)
    lake.write_bytes(path, data)
    return WrittenFile(path, table.num_rows, len(data))


def write_shard(lake: Lake, file_name: str, table: pa.Table) -> list[WrittenFile]:
    """Write one shard's rows as ``<partition>/<file_name>`` (its ``DataFileName``), one
    file per partition its rows fall in; a rewrite replaces the earlier files of the same
    name.

    An empty table writes nothing. A rewrite whose rows no longer reach a partition the
    earlier write reached leaves that earlier file: the caller knows the earlier files (the
    shard marker lists them) and deletes those not in the returned list.
    """
    if table.num_rows == 0:
        return []
    name = _check_name(file_name)
    parts = _split_by_month(_sorted(table))
    return [_write(lake, f"{partition}/{name}", part) for partition, part in parts]


@dataclass(frozen=True)
class HiddenFile:
    """A partition file written under a temp name (``Lake.write_hidden``), to be given its
    name by ``Lake.publish``."""

    temp: str
    file: WrittenFile


def _day_cuts(table: pa.Table, most: int) -> list[tuple[int, int]]:
    """(start, length) of files of at most ``most`` rows of a table sorted by day, each cut
    made where a day begins when the file holds more than one day: a day then lies in one
    file, so a refresh that changes it rewrites one file (``rewrite``)."""
    if table.num_rows <= most:
        return [(0, table.num_rows)] if table.num_rows else []
    runs = pc.run_end_encode(table.column("submissionDate").combine_chunks())
    ends = runs.run_ends.to_pylist()
    cuts: list[tuple[int, int]] = []
    start = 0
    while start < table.num_rows:
        limit = start + most
        # The last day end within the limit, past the start; a day larger than a file: cut.
        fit = [e for e in ends if start < e <= limit]
        end = fit[-1] if fit and limit < table.num_rows else min(limit, table.num_rows)
        cuts.append((start, end - start))
        start = end
    return cuts


def write_rewrite_files(
    lake: Lake, partition: str, table: pa.Table, paths: Iterator[str]
) -> list[HiddenFile]:
    """Rows of ``partition`` (one file-grain merge's group: ``rewrite.merge_files``) as new
    files named by ``paths`` in turn, each of up to ``PARTITION_FILE_ROWS`` rows cut where a
    day begins (``_day_cuts``), written *hidden* (``Lake.write_hidden``): nothing is visible
    to readers until the caller commits and publishes them (``commit.replace_files``)."""
    Partition.parse(partition)
    table = _sorted(table)
    for part_name, _ in _split_by_month(table):
        if part_name != partition:
            raise ValueError(f"rows of {part_name} given for partition {partition}")
    written = []
    for start, length in _day_cuts(table, PARTITION_FILE_ROWS):
        chunk = table.slice(start, length)
        path = next(paths)
        data = _parquet_bytes(chunk)
        temp = lake.write_hidden(path, data)
        written.append(HiddenFile(temp, WrittenFile(path, chunk.num_rows, len(data))))
    return written


def read_partition(lake: Lake, partition: str) -> pa.Table:
    """All rows of one partition (every visible ``.parquet`` file in it), as ARROW_SCHEMA."""
    Partition.parse(partition)
    paths = [
        p
        for p in lake.list_files(partition, suffix=".parquet")
        if not p.rsplit("/", 1)[-1].startswith(("_", "."))  # what DuckDB/Spark skip too
    ]
    tables = [
        pq.read_table(pa.BufferReader(data)).select(list(COLUMNS)).cast(ARROW_SCHEMA)
        for data in lake.read_many(paths)
    ]
    if not tables:
        return ARROW_SCHEMA.empty_table()
    return pa.concat_tables(tables)
