"""Merge fetched rows into one partition's rows: the upsert at the heart of refresh.

Two kinds of incoming rows:

- *changed rows* (found by ``createDateTime`` above the watermark): upserted by ``id``. The
  incoming row wins over the lake's, whatever their stamps: it is the service's word now,
  and a stamp is no clock (a row a wrong clock stamped 9999-12-30 and a later load re-stamps
  correctly must not keep its wrong version for ever). Among incoming rows of one id, the
  newest ``createDateTime`` wins (later rows win ties): the index moved during a fetch;
- *whole days* fetched again by reconciliation: they replace every lake row of that day,
  which is how deletions (invisible to the watermark) leave the lake.

The merge is pure Arrow in, Arrow out, and reports whether anything actually changed, so a
refresh that re-reads its overlap rewrites nothing. It works on row positions: the key
columns (``id``, ``createDateTime``, ``submissionDate``) decide which rows of the lake and
which incoming rows survive, and each table is copied once, by one ``take``, into the
result. No row becomes a Python object, so memory follows the partition's Arrow size.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from harvester.storage.schema import ARROW_SCHEMA

# A run of this many consecutive rows kept is shared with the input, not copied.
_RUN: Final = 16_384
# Row pairs compared at a time when counting updates.
_BATCH: Final = 65_536


CHANGE_KEYS: Final = ("id", "submissionDate", "createDateTime")


@dataclass
class MergeStats:
    """What a merge changed. ``changes``: one row per id added, updated or deleted (its
    ``id``, ``submissionDate`` and ``createDateTime`` — the incoming row's, or a deleted row's
    last — and ``change``): the change feed's rows (``harvester.storage.changes``), kept by the merge
    that made them and never summed. Copies of an id dropped beside a kept row count in
    ``deleted`` but are not a change of the source, so the feed does not list them."""

    added: int = 0
    updated: int = 0
    deleted: int = 0
    changes: pa.Table | None = None

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.deleted)

    def __iadd__(self, other: MergeStats) -> MergeStats:
        self.added += other.added
        self.updated += other.updated
        self.deleted += other.deleted
        return self


FEED_SCHEMA: Final = pa.schema(
    [*(ARROW_SCHEMA.field(name) for name in CHANGE_KEYS), pa.field("change", pa.string())]
)


def _change_rows(table: pa.Table, at: pa.Array, change: str) -> pa.Table:
    keys = table.select(list(CHANGE_KEYS)).take(at)
    return keys.append_column("change", pa.repeat(pa.scalar(change, pa.string()), len(at)))


def join_feed(pieces: list[pa.Table]) -> pa.Table:
    """The merges' feed ``pieces`` as one table of one chunk per column (``FEED_SCHEMA``),
    emptying ``pieces``: the caller hands them over. Each column is joined, then its pieces'
    buffers are let go before the next column is joined, so the join costs one column's copy,
    not the feed's. A sort of the feed takes from it once per row group, and a take from a
    column of many chunks joins them all for that take: a reload's feed is a month of
    updates from some 50 pieces, and those joins were most of the feed write's peak
    (``harvester.storage.changes``)."""
    columns = {name: [t.column(name) for t in pieces] for name in FEED_SCHEMA.names}
    pieces.clear()
    joined: list[pa.Array] = []
    for field_ in FEED_SCHEMA:
        chunks = [
            chunk.cast(field_.type)
            for column in columns.pop(field_.name)
            for chunk in column.chunks
        ]
        if len(chunks) == 1:
            joined.append(chunks[0])
        else:
            joined.append(pa.concat_arrays(chunks) if chunks else pa.array([], field_.type))
        del chunks
    return pa.table(joined, schema=FEED_SCHEMA)


def _positions(n: int) -> pa.Array:
    """0, 1, ..., n - 1 as int64."""
    return pc.indices_nonzero(pa.repeat(True, n)).cast(pa.int64())


def flat(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One array of ``values``; a single chunk as it is (``combine_chunks`` copies even
    that: a month's ids held twice)."""
    if isinstance(values, pa.Array):
        return values
    return values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()


def _count(mask: pa.Array | pa.ChunkedArray) -> int:
    return int(pc.sum(mask.cast(pa.int64())).as_py() or 0)


def _concat(arrays: list[pa.Array]) -> pa.Array:
    return pa.concat_arrays([flat(a) for a in arrays])


def _newest_positions(ids: pa.ChunkedArray, created: pa.ChunkedArray) -> pa.Array:
    """Positions of the newest row per id, in id order (later rows win ties)."""
    keys = pa.table({"id": ids, "created": created, "pos": _positions(len(ids))})
    order = pc.sort_indices(
        keys,
        sort_keys=[("id", "ascending"), ("created", "descending"), ("pos", "descending")],
    ).cast(pa.int64())
    if len(order) == 0:
        return order
    sorted_ids = flat(ids.take(order))
    # A row starts its id's run where its id differs from the row before (nulls are one id).
    before, after = sorted_ids.slice(0, len(sorted_ids) - 1), sorted_ids.slice(1)
    same = pc.or_(
        pc.fill_null(pc.equal(after, before), False),
        pc.and_(pc.is_null(after), pc.is_null(before)),
    )
    first = _concat([pa.array([True]), pc.invert(same)])
    return order.filter(first)


def newest_per_id(table: pa.Table) -> pa.Table:
    """One row per id, the newest createDateTime winning (later rows win ties)."""
    if table.num_rows == 0:
        return table
    return table.take(_newest_positions(table.column("id"), table.column("createDateTime")))


def _last_by_key(keys: pa.Array, mask: pa.Array, size: int) -> pa.Array:
    """Per key ``0 .. size - 1``: the position of the last row under ``mask`` with that key
    (null where none)."""
    rows = pa.table({"key": keys.filter(mask), "pos": _positions(len(keys)).filter(mask)})
    last = rows.group_by("key", use_threads=False).aggregate([("pos", "max")])
    found = pc.index_in(_positions(size).cast(keys.type), value_set=flat(last.column("key")))
    return flat(last.column("pos_max")).take(found)


def _same(a: pa.Array, b: pa.Array) -> pa.Array:
    """Per row: do ``a`` and ``b`` hold equal values (two nulls are equal)? Lists compare
    element by element, as Python compares lists."""
    both_null = pc.and_(pc.is_null(a), pc.is_null(b))
    if not (pa.types.is_list(a.type) or pa.types.is_large_list(a.type)):
        return pc.or_(pc.fill_null(pc.equal(a, b), False), both_null)
    # Non-null lists of one length are equal when every element pair is: count the
    # mismatched elements per list through a running sum over the flattened elements.
    candidate = pc.fill_null(pc.equal(pc.list_value_length(a), pc.list_value_length(b)), False)
    a_lists, b_lists = a.filter(candidate), b.filter(candidate)
    mismatched = pc.invert(_same(pc.list_flatten(a_lists), pc.list_flatten(b_lists)))
    running = _concat([pa.array([0], pa.int64()), pc.cumulative_sum(mismatched.cast(pa.int64()))])
    offsets = pc.subtract(a_lists.offsets, a_lists.offsets[0]).cast(pa.int64())
    per_list = pc.subtract(
        running.take(offsets.slice(1)), running.take(offsets.slice(0, len(a_lists)))
    )
    return pc.replace_with_mask(both_null, candidate, pc.equal(per_list, 0))


# createDateTime first: a row sent again with a new stamp differs there, and rows found to
# differ are not compared further.
_COMPARE_ORDER: Final = (
    "createDateTime",
    *(n for n in ARROW_SCHEMA.names if n != "createDateTime"),
)


def differing_pairs(
    left: pa.Table, left_at: pa.Array, right: pa.Table, right_at: pa.Array
) -> pa.Array:
    """Per row pair (``left[left_at[i]]``, ``right[right_at[i]]``): does it differ in any
    column? A batch of pairs and one column at a time, so the copies stay small; pairs
    found to differ are not compared further."""
    masks: list[pa.Array] = []
    for begin in range(0, len(left_at), _BATCH):
        lefts, rights = left_at.slice(begin, _BATCH), right_at.slice(begin, _BATCH)
        open_at = _positions(len(lefts))  # pairs of this batch still equal so far
        differs = pa.array([False] * len(lefts), pa.bool_())
        for name in _COMPARE_ORDER:
            if len(lefts) == 0:
                break
            same = _same(flat(left.column(name).take(lefts)), flat(right.column(name).take(rights)))
            found = open_at.filter(pc.invert(same))
            if len(found):
                differs = pc.or_(differs, pc.is_in(_positions(len(differs)), value_set=found))
            lefts, rights, open_at = lefts.filter(same), rights.filter(same), open_at.filter(same)
        masks.append(differs)
    return _concat(masks) if masks else pa.array([], pa.bool_())


def _gather(table: pa.Table, positions: pa.Array) -> pa.Table:
    """The rows at ``positions`` (unique), in position order. Runs of at least ``_RUN``
    consecutive rows are slices that share the table's buffers; the rest is one ``take``.
    So a merge that keeps most of a table copies little of it."""
    positions = positions.take(pc.sort_indices(positions))
    n = len(positions)
    if n == 0:
        return table.slice(0, 0)
    starts = _concat(
        [
            pa.array([True]),
            pc.not_equal(pc.subtract(positions.slice(1), positions.slice(0, n - 1)), 1),
        ]
    )
    first = pc.indices_nonzero(starts).cast(pa.int64())
    lengths = pc.subtract(_concat([first.slice(1), pa.array([n], pa.int64())]), first)
    long = pc.greater_equal(lengths, _RUN)
    pieces = [
        table.slice(start, length)
        for start, length in zip(
            positions.take(first.filter(long)).to_pylist(),
            lengths.filter(long).to_pylist(),
            strict=True,
        )
    ]
    run_of_row = pc.subtract(pc.cumulative_sum(starts.cast(pa.int64())), 1)
    short = positions.filter(pc.invert(long.take(run_of_row)))
    if len(short):
        pieces.append(table.take(short))
    return pa.concat_tables(pieces) if pieces else table.slice(0, 0)


# A piece of one day fetched again by id range: (day, low id inclusive, high id exclusive),
# "" for an open end (``Shard``'s ``id[low-high)``).
IdRange = tuple[dt.date, str, str]


def replaced_mask(
    table: pa.Table, days: Iterable[dt.date], ranges: Iterable[IdRange] = ()
) -> pa.Array:
    """Per row of ``table``: is it a row the fetch replaces, one of a day of ``days`` or
    within one of the id ``ranges`` of its day? (Ids compare as the service orders them:
    byte-wise, as the planner's id ranges assume.)"""
    dates = table.column("submissionDate")
    value_set = pa.array(sorted(set(days)), pa.date32())
    mask = flat(pc.fill_null(pc.is_in(dates, value_set=value_set), False))
    ids = table.column("id")
    for day, low, high in ranges:
        piece = pc.equal(dates, pa.scalar(day, pa.date32()))
        if low:
            piece = pc.and_(piece, pc.greater_equal(ids, pa.scalar(low, pa.string())))
        if high:
            piece = pc.and_(piece, pc.less(ids, pa.scalar(high, pa.string())))
        mask = pc.or_(mask, flat(pc.fill_null(piece, False)))
    return mask


def merge_partition(
    existing: pa.Table,
    changed: pa.Table,
    replaced_days: Iterable[dt.date],
    day_rows: pa.Table,
    replaced_ranges: Iterable[IdRange] = (),
) -> tuple[pa.Table, MergeStats]:
    """The partition after applying ``changed`` upserts and replacing ``replaced_days``
    (and the rows of ``replaced_ranges``, pieces of days fetched again by id range: their
    ``day_rows`` are the truth for that piece only).

    Lake rows of a replaced day or piece are *dropped*, the others *kept*. Per incoming id (the
    newest of ``day_rows`` + ``changed``), the lake's version is its last kept row, or else
    its last dropped row; the incoming row replaces it. Kept rows of
    ids nobody sent stay as they are; dropped rows of ids nobody sent, or of ids a kept row
    stands for, are the deleted ones (counted once per id).
    """
    stats = MergeStats()
    existing = existing.select(ARROW_SCHEMA.names).cast(ARROW_SCHEMA)
    # Whole days: the fetched rows are the truth for those days.
    source = pa.concat_tables([day_rows.cast(ARROW_SCHEMA), changed.cast(ARROW_SCHEMA)])
    incoming_at = _newest_positions(source.column("id"), source.column("createDateTime"))
    # Per lake row: the incoming row (index into incoming_at) of the same id, or null. The
    # rest works on these integers, not on the ids.
    key = flat(
        pc.index_in(existing.column("id"), value_set=flat(source.column("id").take(incoming_at)))
    )
    claimed = pc.is_valid(key)
    dropped = replaced_mask(existing, replaced_days, replaced_ranges)
    kept = pc.invert(dropped)
    untouched_at = _positions(existing.num_rows).filter(pc.and_(kept, pc.invert(claimed)))
    overlap = _last_by_key(key, pc.and_(kept, claimed), len(incoming_at))
    gone = _last_by_key(key, pc.and_(dropped, claimed), len(incoming_at))
    # Rows of a replaced day that the service no longer has (once per id, the last copy),
    # and those whose id a kept row stands for.
    unclaimed_at = _positions(existing.num_rows).filter(pc.and_(dropped, pc.invert(claimed)))
    deleted_at = _newest_positions(
        existing.column("id").take(unclaimed_at),
        existing.column("createDateTime").take(unclaimed_at),
    )
    deleted_at = unclaimed_at.take(deleted_at)
    stats.deleted = len(deleted_at) + _count(pc.and_(pc.is_valid(gone), pc.is_valid(overlap)))

    # Per incoming row: the lake's version (a position in existing), or null for a new id.
    lake_at = pc.coalesce(overlap, gone)
    is_new = pc.is_null(lake_at)
    stats.added = _count(is_new)
    replaces = pc.invert(is_new)
    replacing_at = incoming_at.filter(replaces)
    differs = differing_pairs(source, replacing_at, existing, lake_at.filter(replaces))
    stats.updated = _count(differs)
    merged = pa.concat_tables([_gather(existing, untouched_at), _gather(source, incoming_at)])
    stats.changes = pa.concat_tables(
        [
            _change_rows(source, incoming_at.filter(is_new), "added"),
            _change_rows(source, replacing_at.filter(differs), "updated"),
            _change_rows(existing, deleted_at, "deleted"),
        ]
    )
    return merged, stats


def upsert_then_replace(
    existing: pa.Table,
    changed: pa.Table,
    replaced_days: Iterable[dt.date],
    day_rows: pa.Table,
    replaced_ranges: Iterable[IdRange] = (),
) -> tuple[pa.Table, MergeStats]:
    """A refresh's two steps over one partition's rows, in their order: the ``changed``
    upserts first, then ``replaced_days`` (and ``replaced_ranges``) replaced by
    ``day_rows``. The same rows as merging the changed rows, committing, then merging the
    days into what was committed, without the commit between: the days were counted and
    fetched after the changed rows, so their rows are the service's later word and win
    (an id a replaced day no longer holds leaves the lake even when the changed rows had
    it; ``merge_partition`` with both would keep the newer stamp of the two). Each step's
    feed rows are kept in turn, as the two commits wrote them."""
    days, ranges = sorted(set(replaced_days)), list(replaced_ranges)
    upserting, replacing = changed.num_rows > 0, bool(days or ranges or day_rows.num_rows)
    if not (upserting and replacing):  # one step: the single merge is the same
        return merge_partition(existing, changed, days, day_rows, ranges)
    upserted, stats = merge_partition(existing, changed, (), day_rows.slice(0, 0))
    rows, replaced = merge_partition(upserted, changed.slice(0, 0), days, day_rows, ranges)
    feeds = [t for t in (stats.changes, replaced.changes) if t is not None]
    stats += replaced
    stats.changes = pa.concat_tables(feeds) if feeds else None
    return rows, stats


def upserted_keys(existing: pa.Table, changed: pa.Table) -> pa.Table:
    """The ``id`` and ``submissionDate`` of the rows ``merge_partition(existing, changed,
    (), empty)`` keeps, from the key columns alone (``existing``: ``id``,
    ``submissionDate``; ``changed``: those and ``createDateTime``): what reconciliation
    counts of a partition whose changed rows are staged, not yet merged. Every lake row of
    an id the changed rows hold gives way to that id's newest changed row."""
    keys = ["id", "submissionDate"]
    if changed.num_rows == 0:
        return existing.select(keys)
    incoming_at = _newest_positions(changed.column("id"), changed.column("createDateTime"))
    incoming = changed.select(keys).take(incoming_at)
    claimed = pc.is_valid(
        flat(pc.index_in(existing.column("id"), value_set=flat(incoming.column("id"))))
    )
    kept = existing.select(keys).filter(pc.invert(claimed))
    schema = pa.schema([ARROW_SCHEMA.field(k) for k in keys])
    return pa.concat_tables([kept.cast(schema), incoming.cast(schema)])
