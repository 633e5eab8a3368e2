"""Lake (local and S3 over moto's real server) and the Parquet writer, read back by DuckDB."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import os
import re
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harvester.service.decode import decode_docs
from harvester.storage import writer
from harvester.storage.datafile import DataFileName
from harvester.storage.partition import Partition
from harvester.storage.rewrite import new_file_paths
from harvester.storage.schema import ARROW_SCHEMA, SCHEMA_VERSION
from harvester.storage.shard import Shard
from harvester.storage.store import Lake, is_temp_name
from harvester.storage.writer import read_partition, write_rewrite_files, write_shard
from tests.support.s3server import MotoS3

HIVE_TYPES = "{'year': INTEGER, 'month': INTEGER}"


def served(row_id: str, day: str, created: str = "2025-07-15T21:22:06") -> dict[str, Any]:
    return {
        "id": row_id,
        "patentApplicationNumber": "12190351",
        "obsoleteDocumentIdentifier": "GTYKOVWIPPOPPY5",
        "legacyDocumentCodeIdentifier": "CTNF",
        "submissionDate": f"{day}T00:00:00",
        "createDateTime": created,
        "createUserIdentifier": "ETL_SYS",
        "groupArtUnitNumber": "1713",
        "actionTypeCategory": "",
        "claimNumberArrayDocument": ["1,2,3"],
        "hasRej103": 1,
        "cite103Max": 2,
        "aliceIndicator": False,
    }


def table_of(days: dict[str, int], tag: str = "") -> pa.Table:
    """``count`` rows per day, ids unique per day, in reverse order (the writer sorts)."""
    docs = [served(f"{tag}{day}-{i:05d}", day) for day, count in days.items() for i in range(count)]
    result = decode_docs(list(reversed(docs)), source="test")
    assert not result.quarantined
    return result.table


# --- Lake: local -------------------------------------------------------------------------
def test_open_local_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for uri in ("lake", "./lake", str(tmp_path / "lake"), f"file://{tmp_path}/lake"):
        lake = Lake.open(uri)
        assert lake.is_local
        assert lake.local_path == str(tmp_path / "lake")
        assert lake.uri == str(tmp_path / "lake")
    with pytest.raises(ValueError, match="scheme"):
        Lake.open("gs://bucket/x")


def test_paths_cannot_leave_the_root(tmp_path: Path) -> None:
    lake = Lake.open(str(tmp_path))
    for bad in ("../x", "a/../../x", "/etc/passwd", "a//b", "", "a/./b", "a\\b"):
        with pytest.raises(ValueError):
            lake.write_bytes(bad, b"x")


def test_write_read_exists_delete_list(tmp_path: Path) -> None:
    lake = Lake.open(str(tmp_path / "lake"))
    assert not lake.exists("a/b/c.json")
    assert lake.list_files("a") == []
    lake.write_bytes("a/b/c.json", b"one")
    lake.write_bytes("a/d.txt", b"two")
    lake.write_bytes("a/b/c.json", b"three")  # overwrite
    assert lake.read_bytes("a/b/c.json") == b"three"
    assert lake.exists("a/b/c.json")
    assert lake.list_files("") == ["a/b/c.json", "a/d.txt"]
    assert lake.list_files("a", suffix=".json") == ["a/b/c.json"]
    assert lake.list_files("a/b/c.json") == ["a/b/c.json"]
    assert lake.read_many(["a/d.txt", "a/b/c.json"]) == [b"two", b"three"]
    lake.delete("a/b/c.json")
    lake.delete("a/b/c.json")  # missing is fine
    assert not lake.exists("a/b/c.json")
    assert lake.list_files("") == ["a/d.txt"]


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    lake = Lake.open(str(tmp_path))
    lake.write_bytes("p/f.parquet", b"x" * 1000)
    assert os.listdir(tmp_path / "p") == ["f.parquet"]


def test_failed_write_keeps_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake.open(str(tmp_path))
    lake.write_bytes("p/f.json", b"old")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk gone"):
        lake.write_bytes("p/f.json", b"new")
    monkeypatch.undo()
    assert lake.read_bytes("p/f.json") == b"old"
    assert os.listdir(tmp_path / "p") == ["f.json"]


def test_cleanup_removes_leftover_temp_files_only(tmp_path: Path) -> None:
    lake = Lake.open(str(tmp_path))
    lake.write_bytes("year=2019/month=7/part-a.parquet", b"data")
    lake.write_bytes("_harvest/plan.json", b"{}")
    leftovers = [
        f"year=2019/month=7/.part-b.parquet.tmp-{uuid.uuid4().hex}",
        f"_harvest/shards/.x.json.tmp-{uuid.uuid4().hex}",
        f".top.tmp-{uuid.uuid4().hex}",
    ]
    for rel in leftovers:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"partial")
    (tmp_path / ".hidden-but-not-temp").write_bytes(b"keep")
    # Temp files are never listed, even before cleanup.
    assert lake.list_files("") == [
        ".hidden-but-not-temp",
        "_harvest/plan.json",
        "year=2019/month=7/part-a.parquet",
    ]
    assert lake.cleanup_temp_files() == 3
    assert lake.cleanup_temp_files() == 0
    assert all(not (tmp_path / rel).exists() for rel in leftovers)
    assert (tmp_path / ".hidden-but-not-temp").exists()
    assert lake.read_bytes("year=2019/month=7/part-a.parquet") == b"data"


def test_temp_names_are_invisible_to_parquet_globs() -> None:
    name = f".part-x.parquet.tmp-{uuid.uuid4().hex}"
    assert is_temp_name(name)
    assert name.startswith(".") and not name.endswith(".parquet")
    assert not is_temp_name("part-x.parquet")


def test_s3_repr_never_shows_credentials() -> None:
    options = {"key": "AKIAEXAMPLEKEY", "secret": "s3cr3t-value", "endpoint_url": "http://x"}
    lake = Lake.open("s3://bucket/pre/fix", options)
    assert not lake.is_local and lake.local_path is None
    assert lake.uri == "s3://bucket/pre/fix"
    for text in (repr(lake), str(lake), lake.uri):
        assert "AKIA" not in text and "s3cr3t" not in text
    with pytest.raises(ValueError, match="no credentials"):
        Lake.open("s3://AKIA:secret@bucket/x")


# --- partitioning and names ---------------------------------------------------------------
def test_partition_paths() -> None:
    assert Partition.of(dt.date(2019, 7, 15)).path == "year=2019/month=7"
    assert Partition.of(dt.date(1900, 1, 1)).path == "year=1900/month=1"
    assert Partition.of(dt.date(2999, 12, 31)).path == "year=2999/month=12"
    for day in (dt.date(1899, 12, 31), dt.date(3000, 1, 1), dt.date(1, 1, 1)):
        with pytest.raises(ValueError):
            Partition.of(day)
    with pytest.raises(TypeError):
        Partition.of("2019-07-15")  # type: ignore[arg-type]
    assert Partition.parse("year=2019/month=7") == Partition(2019, 7)
    assert Partition.of_file("year=2019/month=7/part-x.parquet") == Partition(2019, 7)
    for bad in ("year=2019/month=13", "year=19/month=7", "year=2019/month=7/..", "x"):
        with pytest.raises(ValueError):
            Partition.parse(bad)
    for bad in ("year=2019/month=7/a/b.parquet", "year=2019/month=7/x.json", "x.parquet"):
        with pytest.raises(ValueError):
            Partition.of_file(bad)
    assert Partition(2019, 12) < Partition(2020, 1)


def test_file_names_for_shard_keys() -> None:
    def name(key: str) -> str:
        return DataFileName.of_shard(Shard.parse_key(key)).name

    assert name("2019-07-15") == "part-2019-07-15.parquet"
    assert name("2019-07-01..2019-07-09") == "part-2019-07-01_to_2019-07-09.parquet"
    assert name("2019-07-15/id[0-8)") == "part-2019-07-15_id0-8.parquet"
    assert name("2019-07-15/id[8-)") == "part-2019-07-15_id8-.parquet"
    assert name("2019-07-15/id[-8)") == "part-2019-07-15_id-8.parquet"
    assert name("undated") == "part-undated.parquet"
    for key in ("2019-07-15", "2019-07-01..2019-07-09", "2019-07-15/id[0-8)", "undated"):
        assert Shard.parse_key(key).key == key
    for bad in ("../../etc/passwd", "2019-07-15/id[0-8", "2019-07-15..", ""):
        with pytest.raises(ValueError):
            Shard.parse_key(bad)


def test_file_names_are_safe_and_injective() -> None:
    bounds = ["", "0", "4", "8", "08", "0c", "c", "f0", "ff"]
    keys = ["2019-07-15", "2019-07-01..2019-07-09", "2019-07-01..2019-07-15"]
    pairs = [(lo, hi) for lo, hi in itertools.product(bounds, bounds) if lo or hi]
    keys += [f"{d}/id[{lo}-{hi})" for d in keys[:2] for lo, hi in pairs]
    # "id[-)" bounds nothing: it is the whole day, the same shard (and file) as no range.
    assert Shard.parse_key("2019-07-15/id[-)") == Shard.parse_key("2019-07-15")
    names = [DataFileName.of_shard(Shard.parse_key(k)).name for k in keys]
    assert len(set(names)) == len(names)
    for name in names:
        assert re.fullmatch(r"part-[A-Za-z0-9._-]+\.parquet", name), name
        assert "/" not in name and ".." not in name.removeprefix("part-")


def test_write_shard_refuses_unsafe_file_names(tmp_path: Path) -> None:
    lake = Lake.open(str(tmp_path / "lake"))
    for bad in ("../x.parquet", "a/b.parquet", ".hidden.parquet", "_x.parquet", ""):
        with pytest.raises(ValueError):
            write_shard(lake, bad, table_of({"2019-07-15": 1}))
    assert lake.list_files() == []


# --- writing shards ----------------------------------------------------------------------
def name_of(key: str) -> str:
    return DataFileName.of_shard(Shard.parse_key(key)).name


def file_rows(lake: Lake, path: str) -> pa.Table:
    return pq.read_table(io.BytesIO(lake.read_bytes(path)))


def test_write_shard_partitions_by_each_rows_own_date(tmp_path: Path) -> None:
    lake = Lake.open(str(tmp_path))
    # The shard asked for July, but one row says June: it goes where its own date says.
    table = table_of({"2019-07-15": 5, "2019-06-30": 1, "2019-07-16": 2})
    written = write_shard(lake, name_of("2019-07-15/id[0-8)"), table)
    assert sorted((w.path, w.rows) for w in written) == [
        ("year=2019/month=6/part-2019-07-15_id0-8.parquet", 1),
        ("year=2019/month=7/part-2019-07-15_id0-8.parquet", 7),
    ]
    for w in written:
        assert w.bytes == len(lake.read_bytes(w.path))
    july = file_rows(lake, "year=2019/month=7/part-2019-07-15_id0-8.parquet")
    keys = list(zip(july["submissionDate"].to_pylist(), july["id"].to_pylist(), strict=True))
    assert keys == sorted(keys)  # sorted by (submissionDate, id)
    assert "year" not in july.column_names and "month" not in july.column_names
    assert write_shard(lake, name_of("2019-07-20"), table_of({})) == []


def test_rewriting_a_shard_replaces_its_files(tmp_path: Path) -> None:
    lake = Lake.open(str(tmp_path))
    write_shard(lake, name_of("2019-07-15"), table_of({"2019-07-15": 10}, tag="old"))
    again = write_shard(lake, name_of("2019-07-15"), table_of({"2019-07-15": 4}, tag="new"))
    assert [w.path for w in again] == ["year=2019/month=7/part-2019-07-15.parquet"]
    assert lake.list_files("", suffix=".parquet") == [w.path for w in again]
    ids = file_rows(lake, again[0].path)["id"].to_pylist()
    assert len(ids) == 4 and all(i.startswith("new") for i in ids)


def test_parquet_file_format(tmp_path: Path) -> None:
    lake = Lake.open(str(tmp_path))
    (written,) = write_shard(lake, name_of("2019-07-15"), table_of({"2019-07-15": 3}))
    data = lake.read_bytes(written.path)
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    created = meta.schema.column(ARROW_SCHEMA.get_field_index("createDateTime"))
    assert created.physical_type == "INT64"  # not int96
    assert "timeUnit=microseconds" in str(created.logical_type)
    table = pq.read_table(io.BytesIO(data))
    assert table.schema.equals(ARROW_SCHEMA)
    assert table.schema.metadata[b"harvester.schema_version"] == str(SCHEMA_VERSION).encode()
    assert table["createDateTime"].to_pylist() == [dt.datetime(2025, 7, 15, 21, 22, 6)] * 3


def test_duckdb_reads_the_lake_with_hive_partitions(tmp_path: Path) -> None:
    lake = Lake.open(str(tmp_path / "lake"))
    write_shard(
        lake, name_of("2019-06-01..2019-06-30"), table_of({"2019-06-03": 7, "2019-06-20": 4})
    )
    write_shard(lake, name_of("2019-07-15/id[0-8)"), table_of({"2019-07-15": 5}, tag="a"))
    write_shard(
        lake, name_of("2019-07-15/id[8-)"), table_of({"2019-07-15": 6, "2020-01-02": 2}, tag="b")
    )
    lake.write_bytes("_harvest/plan.json", b"{}")  # state is not data: not read
    (tmp_path / "lake" / f".part-x.parquet.tmp-{uuid.uuid4().hex}").write_bytes(b"junk")
    glob = f"{lake.local_path}/**/*.parquet"
    expected = [(2019, 6, 11, 11), (2019, 7, 11, 11), (2020, 1, 2, 2)]
    con = duckdb.connect()

    # Declared partition types: year and month come back as integers.
    typed = f"read_parquet('{glob}', hive_partitioning = true, hive_types = {HIVE_TYPES})"
    rows = con.execute(
        f"SELECT year, month, count(*), count(DISTINCT id) FROM {typed} GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert rows == expected
    types = dict(
        con.execute(f"SELECT column_name, column_type FROM (DESCRIBE FROM {typed})").fetchall()
    )
    assert types["year"] == "INTEGER" and types["month"] == "INTEGER"
    assert types["submissionDate"] == "DATE"
    assert types["createDateTime"] == "TIMESTAMP"
    assert types["claimNumberArrayDocument"] == "VARCHAR[]"
    assert types["hasRej103"] == "BOOLEAN" and types["cite103Max"] == "INTEGER"
    assert types["unknownFields"] == "VARCHAR"

    # The plain call: months are written unpadded (month=7) precisely so that DuckDB infers
    # both partition columns as integers without hive_types (a padded '07' stays VARCHAR).
    plain = f"read_parquet('{glob}', hive_partitioning = true)"
    types = dict(
        con.execute(f"SELECT column_name, column_type FROM (DESCRIBE FROM {plain})").fetchall()
    )
    assert types["year"] == "BIGINT" and types["month"] == "BIGINT"
    rows = con.execute(
        f"SELECT year, month, count(*), count(DISTINCT id) FROM {plain} GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert rows == expected
    assert con.execute(f"SELECT count(*) FROM {plain} WHERE month = 7").fetchone() == (11,)


# --- whole partitions --------------------------------------------------------------------
def test_write_and_read_partition_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = Lake.open(str(tmp_path))
    monkeypatch.setattr(writer, "PARTITION_FILE_ROWS", 4)
    table = table_of({"2019-07-01": 5, "2019-07-31": 5})
    run = "20240102T030405Z-compact-a1b2"
    part = "year=2019/month=7"
    hidden = write_rewrite_files(lake, part, table, new_file_paths(part, run, "compact", set()))
    # Cut where a day begins (a day bigger than a file is cut too): no file mixes days
    # here, so a refresh that changes 2019-07-31 rewrites its files alone.
    assert [(h.file.path, h.file.rows) for h in hidden] == [
        (f"year=2019/month=7/part-{run}-compact-00000.parquet", 4),
        (f"year=2019/month=7/part-{run}-compact-00001.parquet", 1),
        (f"year=2019/month=7/part-{run}-compact-00002.parquet", 4),
        (f"year=2019/month=7/part-{run}-compact-00003.parquet", 1),
    ]
    # Written hidden: nothing a reader lists until they are published.
    assert lake.list_files("year=2019/month=7") == []
    assert read_partition(lake, "year=2019/month=7").num_rows == 0
    for item in hidden:
        lake.publish(item.temp, item.file.path)
    assert lake.temp_files() == []
    back = read_partition(lake, "year=2019/month=7")
    assert back.schema == ARROW_SCHEMA
    assert sorted(back["id"].to_pylist()) == sorted(table["id"].to_pylist())
    assert read_partition(lake, "year=2019/month=8").num_rows == 0
    with pytest.raises(ValueError, match="rows of year=2019/month=7"):
        other = "year=2019/month=8"
        write_rewrite_files(lake, other, table, new_file_paths(other, run, "x", set()))
    for run_id, step in (("../x", "days"), (run, "../x"), (run, "_x"), (run, "a/b"), (run, "")):
        with pytest.raises(ValueError, match="rewrite file name"):
            write_rewrite_files(lake, part, table, new_file_paths(part, run_id, step, set()))


def test_compact_files_cuts_a_month_into_day_runs_of_bounded_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shard-like files that each span the whole month become files of at most
    PARTITION_FILE_ROWS rows (a bigger day alone), each a run of whole days in day order,
    with the same rows: the memory of a compaction is one such file, not the month."""
    from harvester.storage.rewrite import compact_files, plan_compaction

    lake = Lake.open(str(tmp_path))
    part = "year=2019/month=7"
    days = {f"2019-07-{d:02d}": (d % 4) + 1 for d in range(1, 29)}
    days["2019-07-30"] = 11  # a day bigger than a file
    shards = [table_of(days, tag=f"s{n}-") for n in range(3)]
    files = []
    for n, table in enumerate(shards):
        names = new_file_paths(part, "20240102T030405Z-harvest-a1b2", "shard" + "abc"[n], set())
        for item in write_rewrite_files(lake, part, table, names):
            lake.publish(item.temp, item.file.path)
            files.append(item.file.path)
    monkeypatch.setattr(writer, "PARTITION_FILE_ROWS", 20)
    plan = plan_compaction(lake, files)
    assert plan.rows == 3 * sum(days.values()) and plan.worth_it
    hidden = compact_files(lake, part, plan, "20240102T030405Z-compact-a1b2", "compact")
    assert len(hidden) == plan.files_after
    spans = []
    for item in hidden:
        table = pq.read_table(pa.BufferReader(lake.read_bytes(item.temp)))
        dates = table.column("submissionDate").to_pylist()
        assert item.file.rows == table.num_rows and dates == sorted(dates)
        spans.append((min(dates), max(dates), table.num_rows))
    assert all(rows <= 20 for _, _, rows in spans), spans
    for (_, last, _), (first, _, _) in itertools.pairwise(spans):
        # Whole days, in order: a day lies in one file unless it is bigger than a file.
        assert last < first or last == first == dt.date(2019, 7, 30), spans
    got = pa.concat_tables(
        pq.read_table(pa.BufferReader(lake.read_bytes(h.temp))) for h in hidden
    ).sort_by("id")
    want = pa.concat_tables(shards).select(got.schema.names).cast(got.schema).sort_by("id")
    assert got.equals(want)  # the same rows, every field
    assert len(hidden) >= 3 * sum(days.values()) // 20
    # Once published and committed in their place, the same partition is left alone.
    for item in hidden:
        lake.publish(item.temp, item.file.path)
    again = plan_compaction(lake, [h.file.path for h in hidden])
    assert not again.worth_it and again.files_after == len(hidden)


# --- the same against S3 (moto's real server over HTTP) --------------------------------------
def test_s3_lake_round_trip(moto_s3: MotoS3, s3_lake_uri: str) -> None:
    lake = Lake.open(s3_lake_uri, moto_s3.storage_options())
    assert lake.list_files("") == []
    assert not lake.exists("_harvest/plan.json")
    lake.write_bytes("_harvest/plan.json", b"{}")
    lake.write_bytes("_harvest/shards/a.json", b"1")
    lake.write_bytes("_harvest/shards2/b.json", b"2")  # a sibling prefix, not inside shards/
    assert lake.exists("_harvest/plan.json")
    assert lake.read_bytes("_harvest/plan.json") == b"{}"
    assert lake.list_files("_harvest/shards", suffix=".json") == ["_harvest/shards/a.json"]
    assert lake.read_many(["_harvest/shards2/b.json", "_harvest/shards/a.json"]) == [b"2", b"1"]
    lake.write_bytes("_harvest/plan.json", b'{"v": 2}')
    assert lake.read_bytes("_harvest/plan.json") == b'{"v": 2}'

    written = write_shard(lake, name_of("2019-07-15"), table_of({"2019-07-15": 6, "2019-08-01": 3}))
    assert sorted((w.path, w.rows) for w in written) == [
        ("year=2019/month=7/part-2019-07-15.parquet", 6),
        ("year=2019/month=8/part-2019-07-15.parquet", 3),
    ]
    again = write_shard(lake, name_of("2019-07-15"), table_of({"2019-07-15": 2}, tag="new"))
    assert lake.list_files("year=2019/month=7") == [again[0].path]
    july = read_partition(lake, "year=2019/month=7")
    assert july.schema == ARROW_SCHEMA
    assert july.num_rows == 2 and all(i.startswith("new") for i in july["id"].to_pylist())
    assert read_partition(lake, "year=2019/month=8").num_rows == 3

    lake.delete("year=2019/month=8/part-2019-07-15.parquet")
    lake.delete("year=2019/month=8/part-2019-07-15.parquet")  # missing is fine
    assert lake.list_files("", suffix=".parquet") == [again[0].path]  # listing not stale
    assert lake.cleanup_temp_files() == 0

    # A second Lake on the same prefix (another machine) sees the same files.
    other = Lake.open(s3_lake_uri, moto_s3.storage_options())
    assert other.list_files("", suffix=".parquet") == [again[0].path]
