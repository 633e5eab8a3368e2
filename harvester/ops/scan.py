"""One read-only pass over a lake's data files, for ``verify``.

Reads only the footer and the ``id``, ``submissionDate`` and ``createDateTime`` columns of
each file, one partition at a time (its files in parallel on S3), so memory follows the
largest partition, not the lake (ids go to ``ops.dupes``, which spills them to disk).
What it finds:

- rows per mail date in the committed files (to compare with the service), and of those
  the rows created or changed at or after a given time (the watermark);
- files readers see that the committed lake does not own, committed files that are gone,
  and visible files that are not Parquet (Spark would try to read them);
- foreign files: any other file the harvester did not write (``commit.is_own_file``), which
  no command ever deletes; the visible Parquet ones are read like the rest (readers do), but
  their rows are never counted as the lake's;
- files whose schema is not the lake's (names and types, in order);
- rows stored under a partition that is not their own mail date's;
- ids that readers see more than once, with the file and mail date of every copy.
"""

from __future__ import annotations

import datetime as dt
import logging
import posixpath
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from harvester.ops.dupes import DuplicateFinder, id_keys
from harvester.storage.commit import is_own_file
from harvester.storage.info import is_visible, parallel_map, parquet_file
from harvester.storage.partition import Partition
from harvester.storage.schema import ARROW_SCHEMA
from harvester.storage.store import Lake

log = logging.getLogger("harvester.verify")
KEY_COLUMNS = ["id", "submissionDate"]
_READ_SCHEMA = pa.schema(
    [("id", pa.string()), ("submissionDate", pa.date32()), ("createDateTime", pa.timestamp("us"))]
)


@dataclass
class Copy:
    path: str
    day: dt.date | None
    committed: bool


@dataclass
class Scan:
    files_read: int = 0
    rows: int = 0  # in committed files
    day_counts: dict[dt.date, int] = field(default_factory=dict)  # committed files only
    changed_day_counts: dict[dt.date, int] = field(default_factory=dict)  # of those, >= since
    uncommitted: list[str] = field(default_factory=list)  # ours, from a killed run
    foreign: list[str] = field(default_factory=list)  # not written by the harvester
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    schema: dict[str, str] = field(default_factory=dict)  # path -> how it differs
    misplaced: dict[str, int] = field(default_factory=dict)  # path -> rows not of its partition
    duplicates: dict[str, list[Copy]] = field(default_factory=dict)  # id -> every copy


def schema_difference(schema: pa.Schema) -> str | None:
    """How a file's schema differs from the lake's, or None (metadata and nullability aside)."""
    want = [(f.name, f.type) for f in ARROW_SCHEMA]
    got = [(f.name, f.type) for f in schema]
    if got == want:
        return None
    missing = [name for name, _ in want if name not in schema.names]
    extra = [name for name, _ in got if name not in ARROW_SCHEMA.names]
    if missing or extra:
        return f"columns missing {missing}, unexpected {extra}"
    for (name, want_type), (_, got_type) in zip(want, got, strict=False):
        if want_type != got_type:
            return f"column {name} is {got_type}, the lake's is {want_type}"
    return "columns in another order"


@dataclass
class _FileRead:
    path: str
    table: pa.Table | None = None  # id, submissionDate; None when unusable
    problem: str | None = None
    schema_problem: str | None = None


def _read(lake: Lake, path: str) -> _FileRead:
    try:
        with parquet_file(lake, path) as parquet:
            difference = schema_difference(parquet.schema_arrow)
            names = parquet.schema_arrow.names
            if not all(name in names for name in KEY_COLUMNS):
                return _FileRead(path, schema_problem=difference)
            has_stamp = "createDateTime" in names
            table = parquet.read(columns=KEY_COLUMNS + (["createDateTime"] if has_stamp else []))
    except (pa.ArrowException, OSError, ValueError) as exc:
        return _FileRead(path, problem=f"{type(exc).__name__}: {str(exc)[:120]}")
    if table.schema.field("submissionDate").type != pa.date32():
        return _FileRead(path, schema_problem=difference)
    try:
        if not has_stamp:
            table = table.append_column(
                "createDateTime", pa.nulls(table.num_rows, pa.timestamp("us"))
            )
        table = table.cast(_READ_SCHEMA)
        table = table.filter(pc.is_valid(table.column("id")))
    except (pa.ArrowException, ValueError) as exc:
        return _FileRead(path, problem=f"{type(exc).__name__}: {str(exc)[:120]}")
    return _FileRead(path, table, schema_problem=difference)


def _month_keys(dates: pa.ChunkedArray) -> pa.Array:
    return pc.add(pc.multiply(pc.year(dates), 100), pc.month(dates))


class _Scanner:
    def __init__(
        self, lake: Lake, committed: dict[str, list[str]], since: dt.datetime | None
    ) -> None:
        self.since = since
        self.lake = lake
        self.committed = {f for files in committed.values() for f in files}
        self.scan = Scan()
        self.numbers: dict[str, int] = {}

    def run(self) -> Scan:
        listed = self.lake.list_files("")
        present = set(listed)
        visible = [p for p in listed if is_visible(p)]
        scan = self.scan
        scan.unexpected = [p for p in visible if not p.endswith(".parquet")]
        scan.missing = sorted(self.committed - present)
        scan.uncommitted = sorted(
            p
            for p in visible
            if p.endswith(".parquet") and p not in self.committed and is_own_file(p)
        )
        unexpected = set(scan.unexpected)
        scan.foreign = sorted(
            p
            for p in [*listed, *self.lake.temp_files()]
            if not is_own_file(p) and p not in unexpected
        )
        seen = {p for p in scan.foreign if is_visible(p) and p.endswith(".parquet")}
        to_read = sorted((self.committed & present) | set(scan.uncommitted) | seen)
        by_dir: dict[str, list[str]] = defaultdict(list)
        for path in to_read:
            by_dir[posixpath.dirname(path)].append(path)
        with DuplicateFinder() as finder:
            for directory, paths in sorted(by_dir.items()):
                log.info("verify: reading %d files of %s", len(paths), directory or "/")
                for read in parallel_map(self.lake, lambda p: _read(self.lake, p), paths):
                    self._fold(directory, read, finder)
            candidates = finder.candidates()
        self._confirm(candidates)
        return scan

    def _fold(self, directory: str, read: _FileRead, finder: DuplicateFinder) -> None:
        scan = self.scan
        scan.files_read += 1
        if read.problem:
            scan.unreadable[read.path] = read.problem
        if read.schema_problem:
            scan.schema[read.path] = read.schema_problem
        if read.table is None:
            return
        number = self.numbers.setdefault(read.path, len(self.numbers))
        finder.add(number, read.table.column("id"))
        dates = read.table.column("submissionDate")
        try:
            partition = Partition.parse(directory)
            month_key = partition.year * 100 + partition.month
            outside = pc.sum(pc.not_equal(_month_keys(dates), month_key)).as_py()
        except ValueError:
            outside = 0  # not in a partition at all: reported as foreign already
        if outside:
            scan.misplaced[read.path] = int(outside)
        if read.path in self.committed:
            scan.rows += read.table.num_rows
            _add_counts(scan.day_counts, dates)
            if self.since is not None:
                stamps = read.table.column("createDateTime")
                recent = pc.greater_equal(stamps, pa.scalar(self.since, pa.timestamp("us")))
                _add_counts(scan.changed_day_counts, dates.filter(recent))

    def _confirm(self, candidates: dict[int, list[int]]) -> None:
        """Read the ids of the files that share a key, and keep the ids really repeated."""
        if not candidates:
            return
        paths = {n: p for p, n in self.numbers.items()}
        involved = sorted({paths[n] for numbers in candidates.values() for n in numbers})
        wanted = pa.array(list(candidates), pa.uint64())
        copies: dict[str, list[Copy]] = defaultdict(list)
        for read in parallel_map(self.lake, lambda p: _read(self.lake, p), involved):
            if read.table is None:
                continue
            table = read.table.filter(pc.is_in(id_keys(read.table.column("id")), wanted))
            for row in table.to_pylist():
                copies[row["id"]].append(
                    Copy(read.path, row["submissionDate"], read.path in self.committed)
                )
        self.scan.duplicates = {i: c for i, c in sorted(copies.items()) if len(c) > 1}


def _add_counts(counts: dict[dt.date, int], dates: pa.ChunkedArray) -> None:
    for item in pc.value_counts(dates).to_pylist():
        if item["values"] is not None:
            counts[item["values"]] = counts.get(item["values"], 0) + int(item["counts"])


def scan_lake(
    lake: Lake, committed: dict[str, list[str]], since: dt.datetime | None = None
) -> Scan:
    """See the module docstring; ``committed`` maps partition -> committed files; rows with
    ``createDateTime >= since`` are counted apart when ``since`` is given."""
    return _Scanner(lake, committed, since).run()


def duplicate_days(scan: Scan) -> Counter[dt.date]:
    """Mail dates holding ids that appear more than once among the committed files alone
    (copies caused by uncommitted files go when those files are swept)."""
    days: Counter[dt.date] = Counter()
    for copies in scan.duplicates.values():
        kept = [c for c in copies if c.committed]
        if len(kept) > 1:
            days.update(c.day for c in kept if c.day is not None)
    return days
