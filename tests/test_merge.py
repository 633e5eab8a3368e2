"""The partition merge: newest createDateTime wins by id; replaced days drop what vanished."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from harvester.storage import merge
from harvester.storage.merge import merge_partition, newest_per_id
from harvester.storage.schema import ARROW_SCHEMA

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


def test_upsert_adds_and_updates_and_the_service_row_wins_whatever_its_stamp() -> None:
    existing = table(row("a", D1, 1), row("b", D1, 5), row("c", D2, 1))
    changed = table(row("a", D1, 2, "999"), row("b", D1, 3, "111"), row("d", D2, 4))
    merged, stats = merge_partition(existing, changed, (), EMPTY)
    got = by_id(merged)
    assert sorted(got) == ["a", "b", "c", "d"]
    assert got["a"]["nationalClass"] == "999"  # newer incoming wins
    # The lake's row is stamped later (a clock gone wrong, then corrected at the source):
    # what the service serves now wins all the same.
    assert got["b"]["nationalClass"] == "111"
    assert (stats.added, stats.updated, stats.deleted) == (1, 2, 0)
    assert sorted(stats.changes.column("change").to_pylist()) == ["added", "updated", "updated"]


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


# -- property tests: the Arrow merge against the row-by-row merge it replaced ---------------


def oracle_newest_per_id(t: pa.Table) -> list[dict[str, Any]]:
    """The pre-Arrow ``newest_per_id``, kept as the reference."""
    if t.num_rows == 0:
        return []
    indexed = t.append_column("__pos", pa.array(range(t.num_rows), pa.int64()))
    ordered = indexed.sort_by(
        [("id", "ascending"), ("createDateTime", "descending"), ("__pos", "descending")]
    )
    ids = ordered.column("id").to_pylist()
    keep = [i == 0 or ids[i] != ids[i - 1] for i in range(len(ids))]
    return list(ordered.filter(pa.array(keep)).drop_columns(["__pos"]).to_pylist())


def oracle_merge(
    existing: pa.Table, changed: pa.Table, replaced_days: list[dt.date], day_rows: pa.Table
) -> tuple[list[dict[str, Any]], tuple[int, int, int]]:
    """The pre-Arrow ``merge_partition`` (rows as Python dicts), kept as the reference."""
    added = updated = 0
    days = pa.array(sorted(set(replaced_days)), pa.date32())
    existing = existing.select(ARROW_SCHEMA.names).cast(ARROW_SCHEMA)
    on_replaced = pc.is_in(existing.column("submissionDate"), value_set=days)
    kept = existing.filter(pc.invert(on_replaced))
    dropped = existing.filter(on_replaced)
    incoming = oracle_newest_per_id(
        pa.concat_tables([day_rows.cast(ARROW_SCHEMA), changed.cast(ARROW_SCHEMA)])
    )
    dropped_by_id = {r["id"]: r for r in dropped.to_pylist()}
    incoming_ids = pa.array([r["id"] for r in incoming], pa.string())
    in_incoming = pc.is_in(kept.column("id"), value_set=incoming_ids)
    untouched = kept.filter(pc.invert(in_incoming)).to_pylist()
    overlap_by_id = {r["id"]: r for r in kept.filter(in_incoming).to_pylist()}

    winners = []
    for r in incoming:
        old = overlap_by_id.get(r["id"]) or dropped_by_id.pop(r["id"], None)
        if old is None:
            added += 1
        else:
            updated += int(r != old)
        winners.append(r)  # the service's row, whatever the lake's stamp
    return untouched + winners, (added, updated, len(dropped_by_id))


DAYS = [dt.date(2019, 1, d) for d in range(1, 6)]
CLAIMS: list[list[str | None] | None] = [
    None, [], ["1"], ["1", "2"], ["2", "1"], [None], ["1", None], ["1-3"], ["1", "2", "3"],
]  # fmt: skip


def random_row(rng: random.Random, ids: int) -> dict[str, Any]:
    def maybe(value: Any, odds: float = 0.15) -> Any:
        return None if rng.random() < odds else value

    return {
        "id": f"i{rng.randrange(ids)}",
        "submissionDate": rng.choice(DAYS),
        "createDateTime": maybe(dt.datetime(2019, 2, 1) + dt.timedelta(hours=rng.randrange(6))),
        "nationalClass": maybe(rng.choice(["438", "257", ""])),
        "hasRej101": maybe(rng.random() < 0.5),
        "cite103Max": maybe(rng.randrange(3)),
        "claimNumberArrayDocument": rng.choice(CLAIMS),
        "unknownFields": maybe('{"x":1}', 0.9),
    }


def random_table(rng: random.Random, rows: int, ids: int) -> pa.Table:
    """Rows in one to three chunks, as tables read from several files are."""
    cuts = sorted(rng.randrange(rows + 1) for _ in range(rng.randrange(3)))
    bounds = [0, *cuts, rows]
    return pa.concat_tables(
        [
            pa.Table.from_pylist(
                [random_row(rng, ids) for _ in range(hi - lo)], schema=ARROW_SCHEMA
            )
            for lo, hi in itertools.pairwise(bounds)
        ]
    )


def resend(rng: random.Random, t: pa.Table, share: float) -> pa.Table:
    """Some lake rows sent again: as they are, or with a new stamp or class."""
    rows = []
    for r in t.to_pylist():
        if rng.random() < share:
            r = dict(r)
            if rng.random() < 0.3:
                r["createDateTime"] = dt.datetime(2019, 2, 1) + dt.timedelta(hours=rng.randrange(8))
            if rng.random() < 0.2:
                r["claimNumberArrayDocument"] = rng.choice(CLAIMS)
            rows.append(r)
    return pa.Table.from_pylist(rows, schema=ARROW_SCHEMA)


def multiset(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(repr(sorted(r.items())) for r in rows)


def check_against_oracle(seed: int, size: int) -> None:
    rng = random.Random(seed)
    ids = max(1, int(size * rng.choice([0.3, 1.0, 3.0])))
    existing = random_table(rng, rng.randrange(size + 1), ids)
    changed = pa.concat_tables(
        [random_table(rng, rng.randrange(size // 3 + 1), ids), resend(rng, existing, 0.2)]
    )
    days = rng.sample(DAYS, rng.randrange(len(DAYS) + 1))
    day_rows = pa.concat_tables(
        [random_table(rng, rng.randrange(size // 3 + 1), ids), resend(rng, existing, 0.5)]
    )
    if not days and rng.random() < 0.7:
        day_rows = EMPTY
    merged, stats = merge_partition(existing, changed, days, day_rows)
    want_rows, want_stats = oracle_merge(existing, changed, days, day_rows)
    assert merged.schema == ARROW_SCHEMA
    assert (stats.added, stats.updated, stats.deleted) == want_stats
    assert multiset(merged.to_pylist()) == multiset(want_rows)


@pytest.mark.parametrize("seed", range(300))
def test_small_merges_match_the_row_by_row_merge(seed: int) -> None:
    check_against_oracle(seed, 12)


@pytest.mark.parametrize("seed", range(30))
def test_merges_match_the_row_by_row_merge(seed: int) -> None:
    check_against_oracle(1000 + seed, 3000)


@pytest.mark.parametrize("seed", range(30))
def test_shared_runs_and_batches_match_the_row_by_row_merge(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Short runs kept are slices of the inputs, and updates are compared in small batches.
    monkeypatch.setattr(merge, "_RUN", 1 + seed % 5)
    monkeypatch.setattr(merge, "_BATCH", 1 + seed % 7 * 50)
    check_against_oracle(2000 + seed, 1000)


@pytest.mark.parametrize("seed", range(50))
def test_newest_per_id_matches_the_row_by_row_version(seed: int) -> None:
    rng = random.Random(seed)
    t = random_table(rng, rng.randrange(500), rng.randrange(1, 300))
    assert newest_per_id(t).to_pylist() == oracle_newest_per_id(t)


def test_unchanged_lists_and_nulls_count_as_no_update() -> None:
    base = row("a", D1, 1) | {"claimNumberArrayDocument": ["1", None], "hasRej101": None}
    existing = table(base, row("b", D1, 1) | {"claimNumberArrayDocument": None})
    merged, stats = merge_partition(existing, table(base), [D1], table(base))
    assert (stats.added, stats.updated, stats.deleted) == (0, 0, 1)
    changed = table(base | {"claimNumberArrayDocument": ["1", "2"]})
    merged, stats = merge_partition(existing, changed, (), EMPTY)
    assert (stats.added, stats.updated, stats.deleted) == (0, 1, 0)
    assert by_id(merged)["a"]["claimNumberArrayDocument"] == ["1", "2"]


@pytest.mark.parametrize("seed", range(30))
def test_upserted_keys_are_the_keys_of_the_upsert(seed: int) -> None:
    """Reconciliation counts a partition with its staged changed rows upserted from the key
    columns alone: the same (id, day) multiset as the merge's rows, copies and moves
    between days included."""
    rng = random.Random(seed)
    ids = [f"id{n}" for n in range(12)]
    days = [dt.date(2019, 1, d) for d in range(1, 6)]

    def rows(n: int, pool: list[str]) -> pa.Table:
        return table(*(row(rng.choice(pool), rng.choice(days), rng.randrange(4)) for _ in range(n)))

    existing = rows(rng.randrange(0, 20), ids)
    changed = rows(rng.randrange(0, 8), [*ids, "new1", "new2"])
    merged, _ = merge_partition(existing, changed, (), EMPTY)
    keys = merge.upserted_keys(existing.select(["id", "submissionDate"]), changed)
    assert keys.column_names == ["id", "submissionDate"]

    def pairs(t: pa.Table) -> list[tuple[str, dt.date]]:
        return sorted(
            zip(t.column("id").to_pylist(), t.column("submissionDate").to_pylist(), strict=False)
        )

    assert pairs(keys) == pairs(merged)


def test_upsert_then_replace_takes_the_days_as_the_later_word() -> None:
    """A changed row on a day fetched again after it, which that day no longer holds, leaves
    the lake, as committing the changed rows and then the day would do; the merge of both
    at once keeps it (an incoming id)."""
    existing = table(row("a", D1, 0), row("b", D1, 0), row("c", D2, 0))
    changed = table(row("b", D1, 3), row("n", D1, 3), row("c", D2, 3, "439"))
    day_rows = table(row("a", D1, 0), row("b", D1, 1))  # b again, n gone since
    merged, stats = merge.upsert_then_replace(existing, changed, [D1], day_rows)
    assert by_id(merged) == by_id(table(row("a", D1, 0), row("b", D1, 1), row("c", D2, 3, "439")))
    assert merged.num_rows == 3
    # Two steps' feeds: n added then deleted, b and c updated, b then back to the day's.
    assert stats.changes is not None
    assert sorted(
        zip(stats.changes["change"].to_pylist(), stats.changes["id"].to_pylist(), strict=False)
    ) == [
        ("added", "n"),
        ("deleted", "n"),
        ("updated", "b"),
        ("updated", "b"),
        ("updated", "c"),
    ]
    both, _ = merge_partition(existing, changed, [D1], day_rows)
    assert "n" in by_id(both)  # the difference
    # One step only: the same as merge_partition's.
    for args in ((changed, (), EMPTY), (EMPTY, [D1], day_rows)):
        one, _ = merge.upsert_then_replace(existing, *args)
        alone, _ = merge_partition(existing, *args)
        assert one.to_pylist() == alone.to_pylist()


def test_a_feed_of_many_pieces_is_joined_to_one_chunk_a_column_and_the_pieces_let_go() -> None:
    """``join_feed`` takes the merges' feed pieces over: the same rows in the same order,
    one chunk per column (so the feed's sorted write takes slices of it without joining
    the pieces again for every slice), and the caller's list emptied so that nothing but
    the joined table holds the rows."""
    rng = random.Random(20)
    pieces = []
    for p in range(9):
        existing = table(
            *(row(f"p{p}-{k}", D1, rng.randrange(50)) for k in range(rng.randrange(6)))
        )
        incoming = table(
            *(row(f"p{p}-{k}", D1, rng.randrange(50)) for k in range(rng.randrange(6)))
        )
        _, stats = merge_partition(existing, incoming, [D1], incoming)
        assert stats.changes is not None
        pieces.append(stats.changes)
    expected = pa.concat_tables(pieces).cast(merge.FEED_SCHEMA).to_pylist()
    assert len(expected) > 9
    joined = merge.join_feed(pieces)
    assert pieces == []
    assert joined.schema == merge.FEED_SCHEMA
    assert all(column.num_chunks == 1 for column in joined.columns)
    assert joined.to_pylist() == expected
    assert merge.join_feed([]).schema == merge.FEED_SCHEMA
    assert merge.join_feed([]).num_rows == 0
