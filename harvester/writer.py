"""Arrow tables -> Parquet files in ``year=YYYY/month=M`` partitions, with deterministic names.

A shard's rows are split by each row's *own* ``submissionDate`` (not by what the shard asked
for), and each part goes to ``<partition>/part-<shard>.parquet``. The name depends only on
the shard key, so writing a shard again (a retry, a resume, a re-harvest) replaces its files
instead of adding duplicates. Values from the data reach a path only through
``partition_of``, which accepts nothing but a validated year and month.

Files are written for both readers: zstd, ~128k-row row groups, rows sorted by
``(submissionDate, id)`` (similar rows together compress better and give tight min/max
statistics per row group), timestamps as Parquet ``TIMESTAMP(MICROS)`` (Spark reads that; it
mishandles nanoseconds and int96 is deprecated). Each file is built in memory and handed to
``Lake.write_bytes``, which makes it appear atomically. The writer knows nothing of HTTP.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
from dataclasses import dataclass
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harvester.lake import Lake
from harvester.schema import ARROW_SCHEMA, COLUMNS

ROW_GROUP_ROWS: Final = 128 * 1024
PARTITION_FILE_ROWS: Final = 1_000_000
SORT_KEYS: Final = [("submissionDate", "ascending"), ("id", "ascending")]
MIN_YEAR: Final = 1900
MAX_YEAR: Final = 2999

_PARTITION_RE: Final = re.compile(r"year=(\d{4})/month=([1-9]|1[0-2])")
_SAFE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DAY: Final = r"\d{4}-\d{2}-\d{2}"
_BOUND: Final = r"[0-9A-Za-z]*"
# Shard keys as harvester.plan makes them: a day or a day range, then an optional id range.
_KEY_RE: Final = re.compile(rf"({_DAY})(?:\.\.({_DAY}))?(?:/id\[({_BOUND})-({_BOUND})\))?")


@dataclass(frozen=True)
class WrittenFile:
    path: str  # relative to the lake root, e.g. year=2019/month=7/part-2019-07-15.parquet
    rows: int
    bytes: int


def partition_of(day: dt.date) -> str:
    """``year=2019/month=7`` for a date whose year is within 1900..2999."""
    if not isinstance(day, dt.date):
        raise TypeError(f"partition_of takes a date, not {type(day).__name__}")
    return _partition(day.year, day.month)


def _partition(year: int, month: int) -> str:
    if not (MIN_YEAR <= year <= MAX_YEAR and 1 <= month <= 12):
        raise ValueError(f"no partition for year {year} month {month}")
    return f"year={year:04d}/month={month}"


def parse_partition(partition: str) -> tuple[int, int]:
    """The (year, month) of a partition path; anything else is refused."""
    match = _PARTITION_RE.fullmatch(partition)
    if match is None:
        raise ValueError(f"not a partition path: {partition!r}")
    year, month = int(match[1]), int(match[2])
    _partition(year, month)
    return year, month


def file_name_for(shard_key: str) -> str:
    """A safe, deterministic Parquet file name for a shard key (or its plan slug).

    ``2019-07-15`` -> ``part-2019-07-15.parquet``; ``2019-07-01..2019-07-09`` ->
    ``part-2019-07-01_to_2019-07-09.parquet``; ``2019-07-15/id[0-8)`` ->
    ``part-2019-07-15_id0-8.parquet``; ``2019-07-15/id[8-)`` -> ``part-2019-07-15_id8-.parquet``.
    This is injective on such keys (``_to_`` and ``_id`` mark the parts, and the bounds hold
    no ``-``), and it maps a key and its ``Shard.slug`` to the same name, as they name the
    same shard. A string that is neither a key nor already a safe name is sanitised and
    suffixed with a hash of itself, so distinct inputs still get distinct names.
    """
    match = _KEY_RE.fullmatch(shard_key)
    if match is not None:
        first, last, low, high = match.groups()
        stem = first + (f"_to_{last}" if last else "")
        if low is not None:
            stem += f"_id{low}-{high}"
    elif _SAFE_NAME.fullmatch(shard_key) and ".." not in shard_key and len(shard_key) <= 120:
        stem = shard_key
    else:
        digest = hashlib.sha256(shard_key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        cleaned = re.sub(r"[^A-Za-z0-9-]+", "_", shard_key).strip("_-")[:60]
        stem = f"{cleaned}_h{digest}" if cleaned else f"h{digest}"
    return f"part-{stem}.parquet"


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
        out.append((_partition(yyyymm // 100, yyyymm % 100), table.slice(start, end - start)))
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


def write_shard(lake: Lake, shard_key: str, table: pa.Table) -> list[WrittenFile]:
    """Write one shard's rows, one file per partition its rows fall in; replaces a rewrite.

    An empty table writes nothing. A rewrite whose rows no longer reach a partition the
    earlier write reached leaves that earlier file: the caller knows the earlier files (the
    shard marker lists them) and deletes those not in the returned list.
    """
    if table.num_rows == 0:
        return []
    name = file_name_for(shard_key)
    parts = _split_by_month(_sorted(table))
    return [_write(lake, f"{partition}/{name}", part) for partition, part in parts]


def write_partition_files(
    lake: Lake, partition: str, table: pa.Table, name_prefix: str
) -> list[WrittenFile]:
    """Rewrite a whole partition's rows as new files ``<name_prefix>-NNNNN.parquet``.

    Splits every ``PARTITION_FILE_ROWS`` rows. Every row must belong to ``partition``. The
    caller deletes the partition's old files afterwards (and only then), so readers always
    see the rows at least once; a caller that must avoid seeing them twice picks a prefix
    that sorts apart and lists files explicitly.
    """
    parse_partition(partition)
    if not _SAFE_NAME.fullmatch(name_prefix) or ".." in name_prefix:
        raise ValueError(f"unsafe file name prefix: {name_prefix!r}")
    table = _sorted(table)
    if table.num_rows == 0:
        return []
    for part_name, _ in _split_by_month(table):
        if part_name != partition:
            raise ValueError(f"rows of {part_name} given for partition {partition}")
    written = []
    for number, start in enumerate(range(0, table.num_rows, PARTITION_FILE_ROWS)):
        chunk = table.slice(start, PARTITION_FILE_ROWS)
        written.append(_write(lake, f"{partition}/{name_prefix}-{number:05d}.parquet", chunk))
    return written


def read_partition(lake: Lake, partition: str) -> pa.Table:
    """All rows of one partition (every visible ``.parquet`` file in it), as ARROW_SCHEMA."""
    parse_partition(partition)
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
