"""``harvester show``: a first look at the data, as DuckDB reads it (and what `make demo` prints).

For any lake, local or S3: rows per month with the files and bytes of each partition, the
partitions, the size on disk, and the newest row (its mail date and its createDateTime).

**Through DuckDB**, on purpose: the rows are counted by the engine users query the lake
with, reading the files as their queries do (``read_parquet`` with Hive partitioning over
the visible Parquet files of the ``year=/month=`` partitions), so a lake ``show`` can print
is a lake DuckDB reads. ``status`` is the other view: what the harvester committed, from
its own records. On S3, DuckDB reads through the lake's own fsspec filesystem
(``register_filesystem``): the credentials and endpoint the harvester uses, and no
``httpfs`` extension, which DuckDB downloads on first use (a machine without internet could
not load it). Files and bytes come from one listing of the lake, not from DuckDB.

DuckDB is an optional dependency (the ``show`` extra; ``docs/decisions.md``): the
harvester's jobs never need it, and a one-line error says how to install it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from harvester.config import Settings
from harvester.errors import LakeError, MissingExtra
from harvester.humanize import size_text
from harvester.storage.info import is_visible, open_state
from harvester.storage.partition import Partition
from harvester.storage.state import ROOT
from harvester.storage.store import Lake, storage_errors

# The distribution's name and its extra (pyproject.toml). A pipx install lives in a venv of
# its own, where a plain `pip install duckdb` would not reach: say both ways.
INSTALL_HINT = (
    "pipx inject uspto-oa-harvester duckdb (a pipx install),"
    " or pip install 'uspto-oa-harvester[show]'"
)


@dataclass
class MonthRows:
    """One partition as DuckDB reads it, with its files and their bytes on disk."""

    year: int
    month: int
    rows: int = 0
    files: int = 0
    bytes: int = 0


@dataclass
class LakeSummary:
    uri: str
    months: list[MonthRows] = field(default_factory=list)
    newest_mail_date: str | None = None  # max submissionDate (ISO date)
    newest_created: str | None = None  # max createDateTime (ISO timestamp)
    state_files: int = 0  # under _harvest/ (the harvester's records)
    state_bytes: int = 0
    other_files: int = 0  # neither a partition's Parquet file nor under _harvest/
    other_bytes: int = 0
    duckdb_version: str = ""

    @property
    def rows(self) -> int:
        return sum(m.rows for m in self.months)

    @property
    def files(self) -> int:
        return sum(m.files for m in self.months)

    @property
    def data_bytes(self) -> int:
        return sum(m.bytes for m in self.months)

    @property
    def size_on_disk(self) -> int:
        return self.data_bytes + self.state_bytes + self.other_bytes

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "rows": self.rows,
            "partitions": len(self.months),
            "data_files": self.files,
            "data_bytes": self.data_bytes,
            "size_on_disk": self.size_on_disk,
        }

    def lines(self) -> list[str]:
        out = [f"lake: {self.uri} (read by DuckDB {self.duckdb_version})"]
        if not self.months:
            out.append("no data files yet (no Parquet file in a year=/month= partition)")
        else:
            out.append(f"{'year':<5} {'month':>5} {'rows':>12} {'files':>6} {'size':>10}")
            out.extend(
                f"{m.year:<5} {m.month:>5} {m.rows:>12,} {m.files:>6} {size_text(m.bytes):>10}"
                for m in self.months
            )
        out.append(
            f"total: {self.rows:,} rows in {len(self.months)} partitions, {self.files} files,"
            f" {size_text(self.data_bytes)}"
        )
        other = (
            f", other files {size_text(self.other_bytes)} ({self.other_files})"
            if self.other_files
            else ""
        )
        out.append(
            f"size on disk: {size_text(self.size_on_disk)} (data {size_text(self.data_bytes)},"
            f" {ROOT}/ {size_text(self.state_bytes)}{other})"
        )
        if self.newest_mail_date:
            out.append(
                f"newest row: mail date {self.newest_mail_date},"
                f" createDateTime {self.newest_created or 'none'}"
            )
        return out


def _duckdb() -> Any:
    try:
        import duckdb
    except ImportError:
        raise MissingExtra(
            f"harvester show reads the lake through DuckDB, which is not installed: {INSTALL_HINT}"
        ) from None
    return duckdb


def summarise(lake: Lake) -> LakeSummary:
    """What DuckDB reads in ``lake``'s partitions, and the bytes on disk of everything in
    it. One listing; DuckDB then reads only the footers (row counts) and two date columns."""
    duckdb = _duckdb()
    summary = LakeSummary(lake.uri, duckdb_version=str(duckdb.__version__))
    with storage_errors(lake.uri, "read"):
        sizes = lake.file_sizes()
    months: dict[Partition, MonthRows] = {}
    data: list[str] = []
    for path, size in sizes.items():
        partition = _partition_of(path)
        if partition is not None:
            month = months.setdefault(partition, MonthRows(partition.year, partition.month))
            month.files += 1
            month.bytes += size
            data.append(path)
        elif path.split("/", 1)[0] == ROOT:
            summary.state_files += 1
            summary.state_bytes += size
        else:
            summary.other_files += 1
            summary.other_bytes += size
    summary.months = [months[p] for p in sorted(months)]
    if data:
        _count(duckdb, lake, data, summary, months)
    return summary


def _partition_of(path: str) -> Partition | None:
    """The partition of a data file DuckDB reads (visible, Parquet, in year=/month=)."""
    if not path.endswith(".parquet") or not is_visible(path):
        return None
    try:
        return Partition.of_file(path)
    except ValueError:
        return None


def _count(
    duckdb: Any,
    lake: Lake,
    data: list[str],
    summary: LakeSummary,
    months: dict[Partition, MonthRows],
) -> None:
    con = duckdb.connect()
    try:
        if lake.is_local:
            paths = [f"{lake.root}/{path}" for path in data]
        else:
            # DuckDB reads s3:// through s3fs, with the lake's credentials and endpoint.
            con.register_filesystem(lake.fs)
            paths = [f"s3://{lake.root}/{path}" for path in data]
        # union_by_name: a visible file without some column (not ours) still counts, as a
        # reader's query that names its columns would read it.
        rows = con.execute(
            "SELECT year, month, count(*), max(submissionDate), max(createDateTime)"
            " FROM read_parquet(?, hive_partitioning = true, union_by_name = true)"
            " GROUP BY ALL",
            [paths],
        ).fetchall()
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LakeError(f"DuckDB cannot read {lake.uri}: {first}") from exc
    finally:
        con.close()
    newest_day: dt.date | None = None
    newest_stamp: dt.datetime | None = None
    for year, month, count, day, stamp in rows:
        months[Partition(int(year), int(month))].rows = int(count)
        if day is not None and (newest_day is None or day > newest_day):
            newest_day = day
        if stamp is not None and (newest_stamp is None or stamp > newest_stamp):
            newest_stamp = stamp
    summary.newest_mail_date = newest_day.isoformat() if newest_day else None
    summary.newest_created = newest_stamp.isoformat() if newest_stamp else None


def show_lake(settings: Settings) -> LakeSummary:
    """The summary of the lake at ``settings.out`` (read only; LakeError if it is not a
    harvester lake or cannot be read)."""
    _duckdb()  # before the lake is touched: a missing DuckDB is the first thing to say
    return summarise(open_state(settings).lake)
