"""Merge fetched rows into one partition's rows: the upsert at the heart of refresh.

Two kinds of incoming rows:

- *changed rows* (found by ``createDateTime`` above the watermark): upserted by ``id``, the
  newest ``createDateTime`` winning; on a tie the incoming row wins (it was read later);
- *whole days* fetched again by reconciliation: they replace every lake row of that day,
  which is how deletions (invisible to the watermark) leave the lake.

The merge is pure Arrow in, Arrow out, and reports whether anything actually changed, so a
refresh that re-reads its overlap rewrites nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from harvester.schema import ARROW_SCHEMA


@dataclass
class MergeStats:
    added: int = 0
    updated: int = 0
    deleted: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.deleted)

    def __iadd__(self, other: MergeStats) -> MergeStats:
        self.added += other.added
        self.updated += other.updated
        self.deleted += other.deleted
        return self


def newest_per_id(table: pa.Table) -> pa.Table:
    """One row per id, the newest createDateTime winning (later rows win ties)."""
    if table.num_rows == 0:
        return table
    indexed = table.append_column("__pos", pa.array(range(table.num_rows), pa.int64()))
    ordered = indexed.sort_by(
        [("id", "ascending"), ("createDateTime", "descending"), ("__pos", "descending")]
    )
    ids = ordered.column("id").to_pylist()
    keep = [i == 0 or ids[i] != ids[i - 1] for i in range(len(ids))]
    return ordered.filter(pa.array(keep)).drop_columns(["__pos"])


def _rows_by_id(table: pa.Table) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in table.to_pylist()}


def _newer(incoming: dict[str, Any], existing: dict[str, Any]) -> bool:
    new, old = incoming.get("createDateTime"), existing.get("createDateTime")
    if old is None:
        return True
    if new is None:
        return False
    return bool(new >= old)


def merge_partition(
    existing: pa.Table,
    changed: pa.Table,
    replaced_days: Iterable[dt.date],
    day_rows: pa.Table,
) -> tuple[pa.Table, MergeStats]:
    """The partition after applying ``changed`` upserts and replacing ``replaced_days``."""
    stats = MergeStats()
    days = pa.array(sorted(set(replaced_days)), pa.date32())
    existing = existing.select(ARROW_SCHEMA.names).cast(ARROW_SCHEMA)
    on_replaced = pc.is_in(existing.column("submissionDate"), value_set=days)
    kept = existing.filter(pc.invert(on_replaced))
    dropped = existing.filter(on_replaced)

    # Whole days: the fetched rows are the truth for those days.
    incoming = newest_per_id(
        pa.concat_tables([day_rows.cast(ARROW_SCHEMA), changed.cast(ARROW_SCHEMA)])
    )
    dropped_by_id = _rows_by_id(dropped)

    in_incoming = pc.is_in(kept.column("id"), value_set=incoming.column("id"))
    untouched = kept.filter(pc.invert(in_incoming))
    overlap_by_id = _rows_by_id(kept.filter(in_incoming))

    winners: list[dict[str, Any]] = []
    for row in incoming.to_pylist():
        old = overlap_by_id.get(row["id"]) or dropped_by_id.pop(row["id"], None)
        if old is None:
            stats.added += 1
            winners.append(row)
        elif _newer(row, old):
            stats.updated += int(row != old)
            winners.append(row)
        else:
            winners.append(old)  # the lake already holds a newer version
    # Rows of a replaced day that the service no longer has.
    stats.deleted = len(dropped_by_id)
    merged = pa.concat_tables([untouched, pa.Table.from_pylist(winners, schema=ARROW_SCHEMA)])
    return merged, stats
