"""Refresh at file grain (issue 20): a merge rewrites only the files holding an affected row.

The unit half checks ``rewrite.merge_files`` against ``merge.merge_partition`` (and, for a
refresh's one pass, ``merge.upsert_then_replace``) over the whole partition on random partitions (copies of one id in two files, new ids, replaced days,
empty days): the same rows and the same change feed. The end-to-end half refreshes a real
lake after a few changes and checks every file the change did not touch is byte-identical.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harvester.sim.testing import SimHandle, run_simulator_process
from harvester.storage import rewrite, writer
from harvester.storage.commit import read_files
from harvester.storage.merge import merge_partition, upsert_then_replace
from harvester.storage.rewrite import StagedRows, _Routed, merge_files
from harvester.storage.schema import ARROW_SCHEMA
from harvester.storage.store import Lake
from harvester.storage.writer import _day_cuts, write_shard
from tests.support.harvest import RANGE, WINDOW, run_harvest
from tests.support.lakecheck import assert_lake_equals_truth
from tests.test_refresh_e2e import latest_report, run_refresh

PARTITION = "year=2019/month=1"
RUN_ID = "20240102T030405Z-refresh-abc123"
EMPTY = ARROW_SCHEMA.empty_table()


def _row(rng: random.Random, id_: str, day: int) -> dict[str, Any]:
    return {
        "id": id_,
        "submissionDate": dt.date(2019, 1, day),
        "createDateTime": dt.datetime(2019, 2, 1) + dt.timedelta(hours=rng.randrange(5)),
        "nationalClass": rng.choice(["438", "439", None]),
    }


def _rows_key(table: pa.Table) -> list[tuple[Any, ...]]:
    return sorted(tuple(str(v) for v in r.values()) for r in table.to_pylist())


def _feed(table: pa.Table) -> list[tuple[Any, ...]]:
    return sorted((r["change"], r["id"], str(r["submissionDate"])) for r in table.to_pylist())


@pytest.mark.parametrize("days_last", [False, True])
@pytest.mark.parametrize("seed", range(40))
def test_merge_files_equals_the_whole_partition_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, days_last: bool
) -> None:
    rng = random.Random(seed)
    # Neighbouring ids compared a few sorted rows at a time: slices end inside runs of
    # copies of an id.
    monkeypatch.setattr(rewrite, "_SORTED_SLICE", 1 + seed % 5)
    lake = Lake.open(str(tmp_path / "lake"))
    files: list[str] = []
    ids = [f"id{n:03d}" for n in range(60)]
    for number in range(rng.randrange(0, 5)):
        # Day ranges per file, as a harvest's shards; now and then a copy of an id elsewhere.
        first = 1 + 6 * number
        rows = [_row(rng, rng.choice(ids), rng.randrange(first, first + 6)) for _ in range(12)]
        table = pa.Table.from_pylist(rows, schema=ARROW_SCHEMA)
        files += [w.path for w in write_shard(lake, f"part-2019-01-{number:02d}.parquet", table)]
    files.sort()
    changed = pa.Table.from_pylist(
        [_row(rng, rng.choice([*ids, "new1", "new2"]), rng.randrange(1, 31)) for _ in range(4)],
        schema=ARROW_SCHEMA,
    )
    days = {dt.date(2019, 1, rng.randrange(1, 31)) for _ in range(rng.randrange(3))}
    day_rows = pa.Table.from_pylist(
        [_row(rng, rng.choice([*ids, "new3"]), d.day) for d in days for _ in range(2)],
        schema=ARROW_SCHEMA,
    )
    ranges: list[tuple[dt.date, str, str]] = []
    # days_last: a refresh's one pass, the changed rows and the days together (each seed
    # keeps both); else one of the two, as a reload's steps and a repair merge them.
    if days_last or rng.random() < 0.5:
        changed = changed if days_last else EMPTY
        if days and rng.random() < 0.5:
            # A day narrowed to an id range: its fetched rows lie in the range.
            day = days.pop()
            low, high = sorted(rng.sample(["", "id010", "id030", "id050"], 2))
            ranges.append((day, low, high if high else ""))
            inside = [
                r
                for r in day_rows.to_pylist()
                if r["submissionDate"] != day or (low <= r["id"] and (not high or r["id"] < high))
            ]
            day_rows = pa.Table.from_pylist(inside, schema=ARROW_SCHEMA)
    else:
        days, day_rows = set(), EMPTY
    merge = upsert_then_replace if days_last else merge_partition
    whole, expected = merge(read_files(lake, files), changed, days, day_rows, ranges)

    # Odd seeds hand the fetched rows over as a stage's files (read a group at a time), as
    # the refresh does; even seeds as tables.
    fetched_changed: pa.Table | StagedRows = changed
    fetched_days: pa.Table | StagedRows = day_rows
    if seed % 2:
        if seed % 4 == 1:  # a stage bigger than a file: read per group, not held
            monkeypatch.setattr(writer, "PARTITION_FILE_ROWS", 4)
        stage = Lake.open(str(tmp_path / "stage"))
        fetched_changed, fetched_days = (
            StagedRows(lake=stage, files=tuple(_stage(stage, name, table)))
            for name, table in (("changed", changed), ("days", day_rows))
        )
    result = merge_files(
        lake,
        PARTITION,
        files,
        fetched_changed,
        days,
        fetched_days,
        RUN_ID,
        "changed",
        ranges,
        days_last=days_last,
    )

    kept = read_files(lake, result.kept)
    hidden = [read_files(lake, [h.temp]) for h in result.written]  # not published yet
    got = pa.concat_tables([kept, *hidden])
    assert _rows_key(got) == _rows_key(whole)
    assert (result.stats.added, result.stats.updated, result.stats.deleted) == (
        expected.added,
        expected.updated,
        expected.deleted,
    )
    assert result.stats.changes is not None and expected.changes is not None
    assert _feed(result.stats.changes) == _feed(expected.changes)
    assert set(result.kept) | set(result.removed) == set(files)
    assert not set(result.kept) & set(result.removed)


@pytest.mark.parametrize("seed", range(60))
def test_incoming_ids_are_ranked_among_their_distinct_values(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """``_distinct_ranked`` (sorted in slices, never materialising the sorted ids) against
    Python's ``sorted(set(...))``: the distinct ids, and each row's place among them."""
    rng = random.Random(seed)
    monkeypatch.setattr(rewrite, "_SORTED_SLICE", rng.randint(1, 6))
    chunks = [
        pa.array([f"id{rng.randrange(12):02d}" for _ in range(rng.randrange(9))], pa.string())
        for _ in range(rng.randint(1, 3))
    ]
    ids = pa.chunked_array(chunks, pa.string())
    distinct, rank = rewrite._distinct_ranked(ids)
    every = ids.to_pylist()
    assert distinct.to_pylist() == sorted(set(every))
    assert [distinct[i].as_py() for i in rank.to_pylist()] == every


def test_new_ids_join_the_file_whose_days_cover_their_first_row(tmp_path: Path) -> None:
    """A new id's rows go to the file whose day range covers the day of its first row
    (the nearest file when none does), and only the files that take one are rewritten."""
    rng = random.Random(7)
    lake = Lake.open(str(tmp_path / "lake"))
    files = []
    for number, first in enumerate((1, 11, 21)):  # days 1-5, 11-15, 21-25
        rows = [_row(rng, f"id{number}{k}", first + k) for k in range(5)]
        table = pa.Table.from_pylist(rows, schema=ARROW_SCHEMA)
        files += [w.path for w in write_shard(lake, f"part-2019-01-{number:02d}.parquet", table)]
    changed = pa.Table.from_pylist(
        [
            _row(rng, "new-a", 12),  # inside the second file's days
            _row(rng, "new-b", 31),  # after every file: the nearest, the third
            _row(rng, "new-c", 2),  # first row in the first file's days ...
            _row(rng, "new-c", 22),  # ... a later copy in the third's: it follows the first
        ],
        schema=ARROW_SCHEMA,
    )
    result = merge_files(lake, PARTITION, files, changed, (), EMPTY, RUN_ID, "changed")
    assert result.removed == files
    placed = {
        row["id"]: number
        for number, hidden in enumerate(result.written)
        for row in read_files(lake, [hidden.temp]).to_pylist()
        if row["id"].startswith("new")
    }
    first_ids = {
        number: read_files(lake, [h.temp]).column("id")[0].as_py()
        for number, h in enumerate(result.written)
    }
    by_file = {first_ids[n][2]: n for n in first_ids}  # "id<file><k>": the file's number
    assert placed == {"new-a": by_file["1"], "new-b": by_file["2"], "new-c": by_file["0"]}
    again = pa.Table.from_pylist([_row(rng, "new-d", 4)], schema=ARROW_SCHEMA)
    only_first = merge_files(lake, PARTITION, files, again, (), EMPTY, RUN_ID, "changed")
    assert only_first.removed == [files[0]]
    assert sorted(only_first.kept) == sorted(files[1:])


def _stage(stage: Lake, name: str, table: pa.Table) -> list[str]:
    """``table`` as staged files of at most 3 rows each (none when it is empty)."""
    paths = []
    for n, start in enumerate(range(0, table.num_rows, 3)):
        path = f"{name}-{n:03d}.parquet"
        sink = pa.BufferOutputStream()
        pq.write_table(table.slice(start, 3), sink)
        stage.write_bytes(path, sink.getvalue().to_pybytes())
        paths.append(path)
    return paths


def _refused_read(*args: object) -> pa.Table:
    raise AssertionError(f"a file read for a group it holds no row of: {args[1:]}")


@pytest.mark.parametrize("whole", [True, False])
def test_staged_rows_keep_the_days_asked_and_each_group_its_own_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whole: bool
) -> None:
    """Read whole once (a stage of at most a file's rows) or per group (a bigger one): the
    same rows either way. A group's rows are those its labels (one per row of ``keys()``,
    in order) name, and a file is read only for the groups it holds rows of."""
    if not whole:
        monkeypatch.setattr(writer, "PARTITION_FILE_ROWS", 4)
    rng = random.Random(5)
    table = pa.Table.from_pylist(
        [_row(rng, f"id{n:03d}", 1 + n % 5) for n in range(20)], schema=ARROW_SCHEMA
    )
    stage = Lake.open(str(tmp_path / "stage"))
    files = tuple(_stage(stage, "x", table))
    held = (dt.date(2019, 1, 2), dt.date(2019, 1, 4))
    for days, within in ((None, True), (held, True), (held, False)):
        inside = [
            r for r in table.to_pylist() if days is None or (r["submissionDate"] in held) == within
        ]
        for source in (
            StagedRows(table=table, days=days, within=within),
            StagedRows(lake=stage, files=files, days=days, within=within),
        ):
            keys = source.keys()
            assert keys.column_names == ["id", "submissionDate"]
            if source.lake is not None:
                assert bool(source._held) == whole
            assert keys.column("id").to_pylist() == [r["id"] for r in inside]  # in order
            labels = [rng.choice([-1, 0, 3]) for _ in inside]
            routed = _Routed(source, pa.array(labels, pa.int64()))
            with monkeypatch.context() as patch:
                patch.setattr(rewrite, "read_files", _refused_read)
                assert routed.rows(7).num_rows == 0  # no file holds group 7: none is read
            for root in (-1, 0, 3, 7):
                want = [r for r, label in zip(inside, labels, strict=True) if label == root]
                assert _rows_key(routed.rows(root)) == _rows_key(
                    pa.Table.from_pylist(want, schema=ARROW_SCHEMA)
                )
    assert StagedRows(lake=stage).keys().num_rows == 0


def _hashes(out: str) -> dict[str, str]:
    root = Path(out)
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.glob("year=*/month=*/*.parquet")
    }


def _file_rows(out: str, paths: Iterable[str]) -> dict[str, int]:
    return {p: pq.ParquetFile(Path(out) / p).metadata.num_rows for p in paths}


@pytest.fixture()
def harvested(tmp_path: Path) -> Any:
    out = str(tmp_path / "lake")
    with run_simulator_process(
        "--records", "6000", *RANGE, "--max-window", WINDOW, "--seed", "21", "--admin"
    ) as sim:
        result = run_harvest(sim.url, out)
        assert result.returncode == 0, result.stdout + result.stderr
        yield sim, out


def test_a_refresh_of_a_few_rows_rewrites_only_the_files_that_hold_them(
    harvested: tuple[SimHandle, str],
) -> None:
    sim, out = harvested
    before = _hashes(out)
    rows_before = _file_rows(out, before)
    assert len([p for p in before if p.startswith(PARTITION)]) > 3
    sim.mutate(modify=3, delete=2, late=2, seed=5)
    result = run_refresh(sim.url, out)
    assert result.returncode == 0, result.stdout + result.stderr
    lake = Lake.open(out)
    assert_lake_equals_truth(lake, sim.truth())
    after = _hashes(out)
    kept = {p for p in before if after.get(p) == before[p]}
    gone = set(before) - kept
    report = latest_report(lake)
    assert report["extra"]["files_rewritten"] == len(gone)
    # A few rows changed: a few files rewritten, every other file untouched, byte for byte.
    assert 0 < len(gone) <= 7 + 2, (len(gone), len(before))
    assert len(kept) >= len(before) - 9
    assert not any(after.get(p) not in (None, before[p]) for p in before)
    # Rows written are the new files' rows, once each: what the replaced files held, with
    # the late rows added and the deleted ones gone (no untouched file's rows among them).
    held = sum(rows_before[p] for p in gone)
    written = set(after) - set(before)
    assert report["rows_written"] == sum(_file_rows(out, written).values()), report
    assert (
        report["rows_written"]
        == held + report["extra"]["rows_added"] - report["extra"]["rows_deleted"]
    ), (report, held)
    # And the refresh after it changes nothing, and no file.
    again = run_refresh(sim.url, out)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _hashes(out) == after
    assert_lake_equals_truth(lake, sim.truth())


def test_a_refresh_writes_each_file_it_changes_once_and_each_row_once(
    harvested: tuple[SimHandle, str],
) -> None:
    """Changed rows and deleted rows in the same files: one merge writes each touched file
    once (merging the changed rows and then the days as two commits wrote most files
    twice, and their rows twice)."""
    sim, out = harvested
    before = _hashes(out)
    sim.mutate(modify=300, delete=60, late=20, add=40, seed=9)
    result = run_refresh(sim.url, out)
    assert result.returncode == 0, result.stdout + result.stderr
    lake = Lake.open(out)
    assert_lake_equals_truth(lake, sim.truth())
    after = _hashes(out)
    gone = {p for p in before if after.get(p) != before[p]}
    new = [p for p in after if p not in before]
    report = latest_report(lake)
    assert len(gone) > 10 and new, (len(gone), len(before))
    # Every file the run removed was a file from before it: none it wrote itself.
    assert report["extra"]["files_rewritten"] == len(gone)
    # And every row it wrote is in a file it left: none written twice.
    assert report["rows_written"] == sum(pq.read_metadata(Path(out) / p).num_rows for p in new)
    assert report["extra"]["rows_deleted"] > 0 and report["extra"]["rows_updated"] > 0


def test_rewrite_files_are_cut_where_a_day_begins() -> None:
    days = [dt.date(2019, 1, d) for d in (1, 1, 1, 2, 2, 3, 3, 3, 3, 3, 3, 4)]
    rows = [{"id": str(i), "submissionDate": d} for i, d in enumerate(days)]
    table = pa.Table.from_pylist(rows, schema=ARROW_SCHEMA)
    assert _day_cuts(table, 4) == [(0, 3), (3, 2), (5, 4), (9, 3)]  # day 3 exceeds a file
    assert _day_cuts(table, 5) == [(0, 5), (5, 5), (10, 2)]
    assert _day_cuts(table, 12) == [(0, 12)]
    assert _day_cuts(table.slice(0, 0), 4) == []


def test_a_day_that_lost_a_row_is_narrowed_by_id_range_counts(tmp_path: Path) -> None:
    """Item 3: a day of several pages that lost a row is fetched again only in the id
    ranges whose counts differ, and the lake equals the truth after."""
    out = str(tmp_path / "lake")
    # Ten days of ~600 rows: a day is six pages of 100.
    with run_simulator_process(
        "--records", "6000", "--start", "2019-01-01", "--end", "2019-01-10",
        "--max-window", WINDOW, "--seed", "8", "--admin",
    ) as sim:  # fmt: skip
        assert run_harvest(sim.url, out).returncode == 0
        before = {doc["id"]: doc["submissionDate"][:10] for doc in sim.truth()}
        sim.mutate(delete=1, seed=3)
        after = {doc["id"] for doc in sim.truth()}
        (day,) = {before[i] for i in set(before) - after}
        day_rows = sum(1 for i in after if before.get(i) == day)
        result = run_refresh(sim.url, out)
        assert result.returncode == 0, result.stdout + result.stderr
        lake = Lake.open(out)
        assert_lake_equals_truth(lake, sim.truth())
        report = latest_report(lake)
        assert day in report["extra"]["days_repaired"], report["extra"]
        assert any(e.startswith(f"narrowed {day}") for e in report["events"]), report["events"]
        assert day_rows > 300 and report["extra"]["rows_fetched"] < day_rows // 2, report["extra"]
        # Exact: the next refresh finds nothing to do.
        again = run_refresh(sim.url, out)
        assert again.returncode == 0, again.stdout + again.stderr
        assert latest_report(lake)["extra"]["no_op"] is True


def test_a_narrowed_day_replaces_its_rows_in_the_id_range_only() -> None:
    rng = random.Random(1)
    lake_rows = [_row(rng, f"id{n:03d}", 5) for n in range(10)] + [_row(rng, "id004", 6)]
    existing = pa.Table.from_pylist(lake_rows, schema=ARROW_SCHEMA)
    # The service holds id002..id006 of day 5 but id004 (deleted); id003 changed.
    fetched = [_row(rng, f"id{n:03d}", 5) for n in (2, 3, 5)]
    day = dt.date(2019, 1, 5)
    merged, stats = merge_partition(
        existing, EMPTY, (), pa.Table.from_pylist(fetched, schema=ARROW_SCHEMA),
        [(day, "id002", "id006")],
    )  # fmt: skip
    ids = sorted((r["id"], r["submissionDate"].day) for r in merged.to_pylist())
    assert ("id004", 5) not in ids and ("id004", 6) in ids  # the other day's row stays
    assert len(ids) == 10 and stats.deleted == 1
    assert {r["id"] for r in merged.to_pylist() if r["submissionDate"] == day} == {
        f"id{n:03d}" for n in (0, 1, 2, 3, 5, 6, 7, 8, 9)
    }
