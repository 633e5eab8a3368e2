"""Merge fetched rows into a partition at file grain: only the files that hold an affected
row are rewritten, every other file stays byte for byte where it is.

A refresh's changed rows and a repair's re-fetched days touch a few rows of a partition;
rewriting the whole month for them made a daily refresh rewrite the whole lake. Here a
partition's committed files are first read for their ``id`` and ``submissionDate`` columns
only (a ranged read of two columns), and a file is *touched* when it holds a row of an
incoming id or of a replaced day. Touched files that share such an id (copies of one id in
two files) form one *group*; each group is merged on its own by ``merge.merge_partition``,
which is exact because everything that merge decides is decided per id: an incoming id's
lake versions, a replaced day's dropped rows and the deletions among them all lie inside
one group, and the rows of an untouched file are rows the merge of the whole partition
would keep as they are. So the merged rows and the ``MergeStats`` (the change feed's rows)
are what the merge of the whole partition gives.

Rows of ids no file holds (new rows) join the file whose day range covers their day (the
nearest one when none does), which is rewritten for them: the partition keeps its number of
files and its files their day ranges, instead of gaining one small file per refresh.

Memory is one group's rows at a time (in practice one file of at most
``writer.PARTITION_FILE_ROWS`` rows), plus the two key columns of the partition and of the
incoming rows, not the whole month: each group's merged rows are written hidden
(``writer.write_rewrite_files``) before the next group is read, and incoming rows given as
a stage's files (``StagedRows``) are read for each group, filtered to its ids.

Compaction (``plan_compaction``, ``compact_files``) lives here too: it rewrites a
partition's files as day ranges, one new file at a time.

Nothing here is visible to a reader: the caller commits the swap with
``commit.replace_files`` (manifest, publish, delete), after writing the change feed.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from harvester.storage import writer
from harvester.storage.commit import read_files
from harvester.storage.datafile import DataFileName
from harvester.storage.info import file_rows, parallel_map, parquet_file
from harvester.storage.memory import release_freed_memory
from harvester.storage.merge import (
    IdRange,
    MergeStats,
    flat,
    join_feed,
    merge_partition,
    replaced_mask,
    upsert_then_replace,
)
from harvester.storage.schema import ARROW_SCHEMA
from harvester.storage.store import Lake
from harvester.storage.writer import HiddenFile, write_rewrite_files

_KEYS = ["id", "submissionDate"]


@dataclass
class FileMerge:
    """What a file-grain merge of one partition did. ``removed``: committed files it
    rewrote (to leave the manifest and be deleted once the new ones are published);
    ``written``: their replacements, hidden; ``kept``: committed files left as they are."""

    stats: MergeStats = field(default_factory=MergeStats)
    removed: list[str] = field(default_factory=list)
    written: list[HiddenFile] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    @property
    def rows_written(self) -> int:
        return sum(item.file.rows for item in self.written)


def _file_keys(lake: Lake, path: str) -> pa.Table:
    """The ``id`` and ``submissionDate`` of every row of one file, in file order."""
    with parquet_file(lake, path) as parquet:
        table = parquet.read(columns=_KEYS)
    return table.cast(pa.schema([ARROW_SCHEMA.field(n) for n in _KEYS]))


class _Groups:
    """Union-find over file indexes: files sharing an affected id are merged together."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


# A month's ids are deduplicated and compared by sorting, not hashing: over 900,000 ids a
# hash aggregation peaked at four times their size (285 MB), ``pc.unique`` at about twice
# plus its table (145 MB), a sort at about twice (72 MB). The allocator keeps the pages of
# such a peak, so the transient, not what stays allocated, set a merge's peak RSS.


def _sorted_ids(ids: pa.Array | pa.ChunkedArray) -> pa.Array:
    every = flat(ids)
    return every.take(pc.sort_indices(every))


# Rows of sorted ids compared at a time by ``_distinct_ranked``.
_SORTED_SLICE = 65_536


def _distinct_ranked(ids: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """The distinct values of ``ids`` (no nulls: ``id`` is a required column), sorted, and
    for each value of ``ids`` its place among them.

    The sorted ids are never materialised: neighbours are compared a slice of the sort
    order at a time, and the distinct values taken from ``ids`` once, by the position of
    their first copy. At its peak this holds the input, its sort order and the distinct
    values (a month's ids are ~36 MB a copy; holding five at once made a repair of a
    million-row month peak at 410 MB)."""
    if ids.null_count:
        raise ValueError("a staged row without an id")
    n = len(ids)
    if n == 0:
        return pa.array([], pa.string()), pa.array([], pa.int64())
    order = pc.sort_indices(ids)
    # Per position of the sort order: does it start a new value? A slice overlaps the
    # next by one row, so each comparison sees its left neighbour.
    starts = [pa.array([True])]
    for begin in range(0, n - 1, _SORTED_SLICE):
        part = flat(ids.take(order.slice(begin, _SORTED_SLICE + 1)))
        starts.append(pc.not_equal(part.slice(1), part.slice(0, len(part) - 1)))
    new = pa.concat_arrays(starts)
    distinct = flat(ids.take(order.filter(new)))
    place = pc.subtract(pc.cumulative_sum(new.cast(pa.int64())), 1)
    # ``order`` is a permutation: sorting it gives its inverse, a row's place in the order.
    inverse = pc.sort_indices(order)
    del order
    return distinct, place.take(inverse)


def _distinct(ids: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The distinct non-null values of ``ids``, sorted."""
    return _distinct_ranked(pc.drop_null(ids))[0]


def _spread_ids(affected: list[pa.Array]) -> pa.Array:
    """The ids found in more than one of ``affected`` (each unique within itself: a file's
    affected ids): copies of one id in two files, which must be merged together."""
    ordered = _sorted_ids(pa.concat_arrays(affected))
    if len(ordered) < 2:
        return ordered.slice(0, 0)
    same = pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
    return _distinct(ordered.slice(1).filter(same))


def _day_range_file(ranges: list[tuple[dt.date, dt.date] | None], day: dt.date) -> int:
    """The file whose day range covers ``day``, or else the nearest (ties: the first)."""
    best, best_gap = -1, None
    for i, span in enumerate(ranges):
        if span is None:
            continue
        first, last = span
        gap = 0 if first <= day <= last else min(abs((day - first).days), abs((day - last).days))
        if best_gap is None or gap < best_gap:
            best, best_gap = i, gap
    return best


def new_file_paths(partition: str, run_id: str, step: str, taken: set[str]) -> Iterator[str]:
    """Paths for new rewrite files, never one a committed file of the partition has (a
    run's later step may rewrite files an earlier one wrote under the same run and step).
    Deterministic, so a run resumed before its commit writes the same names again."""
    for number in range(100_000):
        path = f"{partition}/{DataFileName.of_rewrite(run_id, step, number).name}"
        if path not in taken:
            yield path


@dataclass(frozen=True)
class StagedRows:
    """Fetched rows for ``merge_files``: a table already in memory, or the files of a
    staging lake, read again for each group and filtered to its rows (``_Routed``), so
    that memory holds one group's share of them, not a month of fetched rows. ``days`` (with ``within``)
    keeps only the rows of those days (``within``) or of the other days."""

    table: pa.Table | None = None
    lake: Lake | None = None
    files: tuple[str, ...] = ()
    days: tuple[dt.date, ...] | None = None
    within: bool = True
    # The stage's rows, read once when they are few (``keys`` decides): re-reading every
    # file for each group costs CPU that only a large stage repays in memory.
    _held: dict[str, pa.Table] = field(default_factory=dict, compare=False, repr=False)
    # Rows ``keys`` kept of each file in turn (one entry for a table): how ``_Routed``
    # lines its labels up with the files.
    _counts: list[int] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def of(cls, rows: pa.Table | StagedRows) -> StagedRows:
        return rows if isinstance(rows, StagedRows) else cls(table=rows)

    def _mask(self, table: pa.Table) -> pa.Array | None:
        if self.days is None:
            return None
        inside = pc.is_in(
            table.column("submissionDate"), value_set=pa.array(self.days, pa.date32())
        )
        return inside if self.within else pc.invert(inside)

    def _whole(self) -> pa.Table | None:
        """The rows in memory (a table, or a small stage held), else None."""
        return self.table if self.table is not None else self._held.get("rows")

    def _parts(self, columns: list[str] | None, keep: _Keep) -> list[pa.Table]:
        names = columns or list(ARROW_SCHEMA.names)
        table = self._whole()
        if table is not None:
            return [keep(table.select(names).cast(_schema(names)))]
        if self.lake is not None and self.files:
            lake = self.lake
            return parallel_map(
                lake, lambda path: keep(read_files(lake, [path], columns)), list(self.files)
            )
        return [_schema(names).empty_table()]

    def keys(self) -> pa.Table:
        """The ``id`` and ``submissionDate`` of every row (two columns). A stage of at most
        a data file's rows is then read whole once and held, instead of once per group."""
        lake, files = self.lake, list(self.files)
        if self.table is None and lake is not None and files and not self._held:
            staged = sum(file_rows(lake, files).values())  # footers: every row, not the kept
            if staged <= writer.PARTITION_FILE_ROWS:
                self._held["rows"] = read_files(lake, files)  # the keys come from it too
        parts = self._parts(_KEYS, self._filtered)
        self._counts[:] = [part.num_rows for part in parts]
        return pa.concat_tables(parts)

    def _filtered(self, table: pa.Table) -> pa.Table:
        mask = self._mask(table)
        return table if mask is None else table.filter(mask)


_Keep = Callable[[pa.Table], pa.Table]


class _Routed:
    """A ``StagedRows``' rows by the group each one goes to: ``labels`` holds a group per
    row of its ``keys()``, in their order. A group's rows are then a comparison of
    integers, not a hash of the group's ids built again for every file, and a stage file is
    read only for the groups it holds rows of (reading every file for every group made a
    900,000-row restamp four times slower than merging the whole month)."""

    def __init__(self, staged: StagedRows, labels: pa.Array) -> None:
        self.staged = staged
        ends = list(itertools.accumulate(staged._counts))
        self.slices = [
            labels.slice(end - count, count)
            for end, count in zip(ends, staged._counts, strict=True)
        ]
        self.groups = [set(pc.unique(part).to_pylist()) for part in self.slices]

    def rows(self, root: int) -> pa.Table:
        """Every column of the rows that go to the group ``root``."""
        staged, whole = self.staged, self.staged._whole()
        if whole is not None:
            names = list(ARROW_SCHEMA.names)
            kept = staged._filtered(whole.select(names).cast(ARROW_SCHEMA))
            return kept.filter(pc.equal(self.slices[0], root))
        lake = staged.lake
        if lake is None or not staged.files:
            return ARROW_SCHEMA.empty_table()
        wanted = [i for i, groups in enumerate(self.groups) if root in groups]

        def read(i: int) -> pa.Table:
            kept = staged._filtered(read_files(lake, [staged.files[i]]))
            return kept.filter(pc.equal(self.slices[i], root))

        parts = parallel_map(lake, read, wanted)
        return pa.concat_tables(parts) if parts else ARROW_SCHEMA.empty_table()


def _schema(names: list[str]) -> pa.Schema:
    return pa.schema([ARROW_SCHEMA.field(n) for n in names])


def _survey(
    lake: Lake, path: str, *, incoming_ids: pa.Array, days: list[dt.date], ranges: list[IdRange]
) -> tuple[pa.Array, pa.Array, tuple[dt.date, dt.date] | None]:
    """Of one committed file: which incoming ids it holds (a mask over ``incoming_ids``:
    the hash is built over the file's ids, not over a month of incoming ones once per
    file), the ids of its rows of replaced ``days`` (or ``ranges``) that are not incoming
    (rows a repair deletes), and its day range. Its key columns are dropped once surveyed:
    a partition's keys are never all held at once."""
    table = _file_keys(lake, path)
    file_ids = flat(table.column("id"))
    inside = pc.fill_null(pc.is_in(incoming_ids, value_set=file_ids), False)
    replaced = replaced_mask(table, days, ranges)
    if pc.any(replaced).as_py():
        mine = incoming_ids.filter(inside)
        incoming_row = pc.fill_null(pc.is_in(file_ids, value_set=mine), False)
        replaced = pc.and_(replaced, pc.invert(incoming_row))
    low, high = pc.min_max(table.column("submissionDate")).values()
    span = None if low.as_py() is None else (low.as_py(), high.as_py())
    return inside, _distinct(file_ids.filter(replaced)), span


def _route_new(
    rank: pa.Array,
    dates: pa.Array,
    new: pa.Array,
    ranges: list[tuple[dt.date, dt.date] | None],
    groups: _Groups,
) -> pa.Array:
    """For each new incoming id (``new``, a mask over the incoming ids, in their order):
    the group its rows join, that of the file whose day range covers the day of its first
    row (``_day_range_file``; -1 in a partition without files). ``rank`` and ``dates``
    are per incoming row: its id's place among the incoming ids, and its day. Any row of an
    id routes the id as a whole; the first is taken so that the choice is deterministic.
    Columnar, with one Python step per distinct day, not per id."""
    rows = new.take(rank)
    places, days = rank.filter(rows), dates.filter(rows)
    order = pc.sort_indices(places)  # stable: a place's rows stay in incoming order
    places, days = places.take(order), days.take(order)
    first = pa.concat_arrays(
        [pa.array([True]), pc.not_equal(places.slice(1), places.slice(0, len(places) - 1))]
    )
    # One day per new id, in the order of their places: the order of ``new``'s true values.
    days = days.filter(first)
    choices = {
        day: groups.find(f) if (f := _day_range_file(ranges, day)) >= 0 else -1
        for day in pc.unique(days).to_pylist()
    }
    known = pa.array(list(choices), pa.date32())
    group_of = pa.array(list(choices.values()), pa.int64())
    return group_of.take(pc.index_in(days, value_set=known))


def merge_files(
    lake: Lake,
    partition: str,
    files: list[str],
    changed: pa.Table | StagedRows,
    replaced_days: Iterable[dt.date],
    day_rows: pa.Table | StagedRows,
    run_id: str,
    step: str,
    replaced_ranges: Iterable[IdRange] = (),
    *,
    days_last: bool = False,
) -> FileMerge:
    """Merge ``changed`` upserts and ``replaced_days`` (their rows ``day_rows``) into the
    partition made of ``files`` (committed, readable, in committed order), as
    ``merge_partition`` would over all of them (``days_last``: as ``upsert_then_replace``
    would, the changed rows first and the days then, as two merges one after the other),
    rewriting only the groups of touched files whose rows change (``replaced_ranges``:
    pieces of days by id range, as ``merge_partition`` takes them). The new files are
    written hidden; the caller commits them."""
    release_freed_memory()  # what the phase before left, before a month's keys are read
    ranges_ = list(replaced_ranges)
    out = FileMerge()
    days = pa.array(sorted(set(replaced_days)), pa.date32())
    changed_rows, replacing_rows = StagedRows.of(changed), StagedRows.of(day_rows)
    changed_keys, day_keys = changed_rows.keys(), replacing_rows.keys()
    incoming_ids, rank = _distinct_ranked(
        pa.chunked_array(
            [*day_keys.column("id").chunks, *changed_keys.column("id").chunks], pa.string()
        )
    )
    # From here on the incoming ids are ``incoming_ids`` and each row's ``rank`` among
    # them; of the rows only their days are kept (where a new id goes), not a second copy
    # of a month's ids.
    staged_days = day_keys.num_rows
    dates = flat(
        pa.chunked_array(
            [
                *day_keys.column("submissionDate").chunks,
                *changed_keys.column("submissionDate").chunks,
            ],
            pa.date32(),
        )
    )
    del day_keys, changed_keys
    # Per file: the ids of its affected rows (an incoming id, or a row of a replaced day).
    # A file is touched when it holds either.
    groups = _Groups(len(files))
    replaced_list = days.to_pylist()
    survey = functools.partial(
        _survey, lake, incoming_ids=incoming_ids, days=replaced_list, ranges=ranges_
    )
    surveyed = parallel_map(lake, survey, files)
    held = [inside for inside, _, _ in surveyed]
    leaving = [ids for _, ids, _ in surveyed]
    ranges = [span for _, _, span in surveyed]
    del surveyed, survey
    touched = {i for i in range(len(files)) if pc.any(held[i]).as_py() or len(leaving[i])}
    # Files sharing an affected id (copies of one id) are one group: an incoming id held
    # by two files (two masks true at its place), or a leaving id of two files.
    if len(touched) > 1:
        count = pa.repeat(pa.scalar(0, pa.int32()), len(incoming_ids))
        for inside in held:
            count = pc.add(count, inside.cast(pa.int32()))
        spread = pa.concat_arrays(
            [
                incoming_ids.filter(pc.greater(count, 1)),
                _spread_ids([leaving[i] for i in sorted(touched)]),
            ]
        )
        first_holder: list[int | None] = [None] * len(spread)
        for i in sorted(touched) if len(spread) else []:
            here = pc.or_(
                pc.is_in(spread, value_set=incoming_ids.filter(held[i])),
                pc.is_in(spread, value_set=leaving[i]),
            ).to_pylist()
            for k in (k for k, found in enumerate(here) if found):
                holder = first_holder[k]
                if holder is None:
                    first_holder[k] = i
                else:
                    groups.union(holder, i)
    # The bookkeeping of the whole partition is dropped as soon as it has served, so that
    # what the group loop below holds besides one group is the incoming ids and their
    # routing (a whole month's ids several times over made most of a merge's peak).
    del leaving

    # Route every incoming id to the group that holds it, or a new id to the file whose
    # day range covers its row's day.
    target = pa.nulls(len(incoming_ids), pa.int64())
    for i in range(len(files)):
        here = pc.and_(pc.is_null(target), held[i])
        target = pc.if_else(here, pa.scalar(groups.find(i), pa.int64()), target)
    new = pc.is_null(target)
    if pc.any(new).as_py():
        routed = _route_new(rank, dates, new, ranges, groups)
        target = pc.replace_with_mask(target, new, routed)
        del routed
    # Each staged row's group: its id's place among ``incoming_ids``, then that id's target.
    labels = target.take(rank)
    day_routed = _Routed(replacing_rows, labels.slice(0, staged_days))
    changed_routed = _Routed(changed_rows, labels.slice(staged_days))
    del held, new, rank, labels, incoming_ids, dates
    targeted = set(pc.unique(target.drop_null()).to_pylist())
    touched |= {i for i in range(len(files)) if groups.find(i) in targeted}

    release_freed_memory()  # the routing's transients, before the groups are read
    members: dict[int, list[int]] = {}
    for i in sorted(touched):
        members.setdefault(groups.find(i), []).append(i)
    if bool(pc.any(pc.equal(target, -1)).as_py()):
        members[-1] = []  # an empty partition: its new rows make a file of their own
    names = new_file_paths(partition, run_id, step, set(files))
    changes: list[pa.Table] = []
    for root, indexes in sorted(members.items()):
        group_files = [files[i] for i in indexes]
        existing = read_files(lake, group_files)
        merge = upsert_then_replace if days_last else merge_partition
        merged, stats = merge(
            existing,
            changed_routed.rows(root),
            days.to_pylist(),
            day_routed.rows(root),
            ranges_,
        )
        out.stats += stats
        if stats.changes is not None:
            # Held once, by ``changes``: ``join_feed`` lets each column's pieces go.
            changes.append(stats.changes)
            stats.changes = None
        if not stats.changed and merged.num_rows == existing.num_rows:
            continue  # copies dropped are counted as deleted, so this group is as it was
        del existing  # one group's rows at a time
        out.written.extend(write_rewrite_files(lake, partition, merged, names))
        out.removed.extend(group_files)
    removed = set(out.removed)
    out.kept = [f for f in files if f not in removed]
    out.stats.changes = join_feed(changes)
    return out


def _day_spans(dates: pa.ChunkedArray, most: int) -> list[tuple[dt.date, dt.date, int]]:
    """Consecutive day ranges that cover ``dates`` and their rows, each of at most ``most``
    rows unless a single day has more (that day is a range of its own; the writer cuts it
    further). Greedy, so two neighbouring ranges together always exceed ``most``."""
    counts = pc.value_counts(dates.combine_chunks() if dates.num_chunks else dates)
    values, rows_per_day = counts.field("values").to_pylist(), counts.field("counts").to_pylist()
    spans: list[tuple[dt.date, dt.date, int]] = []
    for day, rows in sorted(zip(values, rows_per_day, strict=True)):
        if spans and spans[-1][2] + rows <= most:
            spans[-1] = (spans[-1][0], day, spans[-1][2] + rows)
        else:
            spans.append((day, day, rows))
    return spans


@dataclass(frozen=True)
class Compaction:
    """How ``compact_files`` rewrites a partition's ``files``: the day ranges of the new
    files (first day, last day, rows) and each old file's first and last day (``None`` when
    empty), read from the ``submissionDate`` column alone."""

    files: list[str]
    spans: list[tuple[dt.date, dt.date, int]]
    file_days: list[tuple[dt.date, dt.date] | None]
    file_rows: list[int]

    @property
    def files_after(self) -> int:
        most = writer.PARTITION_FILE_ROWS
        return sum(-(-rows // most) for _, _, rows in self.spans)

    @property
    def rows(self) -> int:
        return sum(rows for _, _, rows in self.spans)

    @property
    def oversize(self) -> list[str]:
        """Files of more than ``writer.PARTITION_FILE_ROWS`` rows over more than one day
        (written before files were bounded): a step that rewrites one would hold it whole."""
        most = writer.PARTITION_FILE_ROWS
        return [
            path
            for path, days, rows in zip(self.files, self.file_days, self.file_rows, strict=True)
            if rows > most and days is not None and days[0] != days[1]
        ]

    @property
    def worth_it(self) -> bool:
        """Fewer files after than before, or an oversize file to cut. A partition already
        compacted is left alone (its files are these day ranges already), so compacting
        twice rewrites nothing."""
        return self.files_after < len(self.files) or bool(self.oversize)


def plan_compaction(lake: Lake, files: list[str]) -> Compaction:
    """Read the ``submissionDate`` column of every file (one column, ~4 bytes a row) and cut
    the partition into day ranges of up to ``writer.PARTITION_FILE_ROWS`` rows."""
    dates = parallel_map(
        lake, lambda path: read_files(lake, [path], ["submissionDate"]).column(0), files
    )
    file_days = [
        (pc.min(d).as_py(), pc.max(d).as_py()) if len(d) and d.null_count < len(d) else None
        for d in dates
    ]
    every = pa.chunked_array([c for d in dates for c in d.chunks], pa.date32())
    spans = _day_spans(every, writer.PARTITION_FILE_ROWS)
    return Compaction(list(files), spans, file_days, [len(d) for d in dates])


def compact_files(
    lake: Lake, partition: str, plan: Compaction, run_id: str, step: str
) -> list[HiddenFile]:
    """The rows of a partition's committed files (``plan.files``) rewritten as files of up
    to ``writer.PARTITION_FILE_ROWS`` rows, each a run of whole days (``plan.spans``),
    written hidden (the caller commits them with ``commit.replace_files``). Rows are
    neither added, dropped nor changed.

    Memory is one output file's rows plus one input file at a time (a batch of them on S3),
    not the month: each day range is gathered from the files whose days overlap it. The
    cost is reading a file once per range it overlaps: a harvest's shard files each span
    the whole month, so a month of ``n`` new files reads them ``n`` times; files already
    cut by day are read about once."""
    names = new_file_paths(partition, run_id, step, set(plan.files))
    written: list[HiddenFile] = []
    for first, last, _ in plan.spans:
        overlapping = [
            path
            for path, days in zip(plan.files, plan.file_days, strict=True)
            if days is not None and days[0] <= last and first <= days[1]
        ]

        def rows_in_span(path: str, first: dt.date = first, last: dt.date = last) -> pa.Table:
            table = read_files(lake, [path])
            day = table.column("submissionDate")
            return table.filter(pc.and_(pc.greater_equal(day, first), pc.less_equal(day, last)))

        chunk = pa.concat_tables(parallel_map(lake, rows_in_span, overlapping))
        written.extend(write_rewrite_files(lake, partition, chunk, names))
        del chunk  # one new file's rows at a time
    return written
