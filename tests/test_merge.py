"""The partition merge: newest createDateTime wins by id; replaced days drop what vanished."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa

from harvester.merge import merge_partition, newest_per_id
from harvester.schema import ARROW_SCHEMA

D1, D2 = dt.date(2019, 1, 2), dt.date(2019, 1, 3)


def row(i: str, day: dt.date, created: int, cls: str = "438") -> dict[str, Any]:
    return {
        "id": i,
        "submissionDate": day,
        "createDateTime": dt.datetime(2019, 2, 1) + dt.timedelta(hours=created),
        "nationalClass": cls,
    }


def table(*rows: dict[str, Any]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=ARROW_SCHEMA)


def by_id(t: pa.Table) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in t.to_pylist()}


EMPTY = ARROW_SCHEMA.empty_table()


def test_upsert_adds_updates_and_keeps_newer_lake_rows() -> None:
    existing = table(row("a", D1, 1), row("b", D1, 5), row("c", D2, 1))
    changed = table(row("a", D1, 2, "999"), row("b", D1, 3, "111"), row("d", D2, 4))
    merged, stats = merge_partition(existing, changed, (), EMPTY)
    got = by_id(merged)
    assert sorted(got) == ["a", "b", "c", "d"]
    assert got["a"]["nationalClass"] == "999"  # newer incoming wins
    assert got["b"]["nationalClass"] == "438"  # the lake's row is newer: kept
    assert (stats.added, stats.updated, stats.deleted) == (1, 1, 0)


def test_same_rows_again_change_nothing() -> None:
    existing = table(row("a", D1, 1), row("b", D2, 2))
    merged, stats = merge_partition(existing, table(row("a", D1, 1)), (), EMPTY)
    assert not stats.changed
    assert by_id(merged) == by_id(existing)


def test_replaced_day_drops_rows_the_service_no_longer_has() -> None:
    existing = table(row("a", D1, 1), row("b", D1, 1), row("c", D2, 1))
    day_rows = table(row("a", D1, 1), row("e", D1, 1))
    merged, stats = merge_partition(existing, EMPTY, [D1], day_rows)
    assert sorted(by_id(merged)) == ["a", "c", "e"]
    assert (stats.added, stats.updated, stats.deleted) == (1, 0, 1)


def test_newest_per_id_prefers_later_rows_on_ties() -> None:
    t = table(row("a", D1, 1, "x"), row("a", D1, 1, "y"), row("b", D1, 3), row("b", D1, 2))
    got = by_id(newest_per_id(t))
    assert got["a"]["nationalClass"] == "y"
    assert got["b"]["createDateTime"] == dt.datetime(2019, 2, 1, 3)
