"""Files the harvester did not write (issue 12): a lake is a declared thing.

A new lake is only created where nothing lives yet (a directory, an S3 prefix, or a whole
bucket); inside a lake only files of the harvester's own naming scheme in its own
partitions are ever deleted or replaced (``commit.is_own_file``). Everything else survives
harvest (resume), refresh, compact and ``verify --repair``, and ``verify`` names it.
"""

from __future__ import annotations

import io
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harvester.sim.testing import SimHandle, run_simulator_process
from harvester.storage.commit import is_own_data_file, is_own_file
from harvester.storage.datafile import DataFileName, is_data_file_name
from harvester.storage.shard import Shard
from harvester.storage.store import Lake
from tests.support.cli import cli, ok, snapshot
from tests.support.harvest import DATES, RANGE, WINDOW, harvest_env, run_harvest
from tests.support.lakecheck import assert_lake_equals_truth, is_decodable
from tests.support.s3server import MotoS3
from tests.support.sharedsim import ReadOnlySim

EXIT_LAKE = 4
EXIT_MISMATCH = 6
TEMP = uuid.UUID(int=7).hex  # 32 hex digits, as Lake.write_bytes names its temp files
# Shards of at most 100 rows: partitions of many files, so compact has work to do.
SMALL_SHARDS = {"HARVESTER_SHARD_SIZE": "100"}


def ledger_bytes() -> bytes:
    """An unrelated dataset's Parquet file (another team's ledger)."""
    table = pa.table({"account": ["a-1", "b-2"], "amount": [12.5, -3.0]})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


# Foreign files planted inside a lake: at the root, in a subdirectory, inside a partition,
# and names that look like temp files (of a foreign name) in a partition and at the root.
FOREIGN_INSIDE = {
    "other.parquet": ledger_bytes(),
    "sub/mydata.parquet": ledger_bytes(),
    "year=2019/month=1/theirs.parquet": ledger_bytes(),
    f"year=2019/month=2/.theirs.parquet.tmp-{TEMP}": b"their half-written file",
    f".notes.tmp-{TEMP}": b"someone's editor swap file",
}


# -- the predicate -------------------------------------------------------------------------
def test_only_the_harvesters_own_names_in_its_own_partitions_are_owned() -> None:
    for key in ("2019-07-15", "2019-07-01..2019-07-09", "2019-07-15/id[0-8)", "undated"):
        shard = Shard.parse_key(key)
        assert Shard.parse_slug(shard.slug) == shard
        name = DataFileName.of_shard(shard).name
        assert is_data_file_name(name) and DataFileName.parse(name) == DataFileName.of_shard(shard)
        assert is_own_data_file(f"year=2019/month=7/{name}")
    for key in ("2019-07-15/id[8-)", "2019-07-15/id[-8)"):
        assert is_data_file_name(DataFileName.of_shard(Shard.parse_key(key)).name)
    rewrite = "part-20240102T030405Z-refresh-a1b2c3-changed-00000.parquet"
    compacted = "part-20240102T030405Z-compact-a1b2c3-compact-00012.parquet"
    assert is_data_file_name(rewrite) and is_data_file_name(compacted)
    # Every step a rewrite names, a reload's and a repair's included, is the harvester's.
    for step in ("changed", "days", "reload", "compact", "repair"):
        name = DataFileName.of_rewrite("20240102T030405Z-refresh-a1b2c3", step, 3).name
        assert DataFileName.parse(name) == DataFileName.of_rewrite(
            "20240102T030405Z-refresh-a1b2c3", step, 3
        )
        assert is_own_file(f"year=2019/month=7/{name}")
    assert is_own_file(f"year=2019/month=7/{rewrite}")
    assert is_own_file(f"year=2019/month=12/.{compacted}.tmp-{TEMP}")
    assert is_own_file(f"year=2019/month=7/.part-2019-07-15.parquet.tmp-{TEMP}")
    assert is_own_file("_harvest/lake.json") and is_own_file(f"_harvest/shards/.x.json.tmp-{TEMP}")
    foreign = [
        "other.parquet",
        "part-2019-07-15.parquet",  # our name, but not in a partition
        "sub/year=2019/month=7/part-2019-07-15.parquet",
        "year=2019/month=7/theirs.parquet",
        "year=2019/month=7/part-a.parquet",  # no shard key reads back from "a"
        "year=2019/month=7/part-2019-07-15_to_2019-07-15.parquet",  # no key makes this slug
        "year=2019/month=7/part-2019-02-30.parquet",  # no such day
        "year=2019/month=13/part-2019-07-15.parquet",  # no such partition
        "year=2019/month=07/part-2019-07-15.parquet",  # not how we spell a partition
        "year=2019/month=7/part-2019-07-15.parquet.bak",
        "year=2019/month=7/compact-1-00000.parquet",
        "year=2019/month=7/part-20240102T030405Z-refresh-a1b2c3-Mine-00000.parquet",
        "year=2019/month=7/part-20240102T030405Z-refresh-a1b2c3-mine-0000.parquet",
        "year=2019/month=7/part-2019-07-15.staged.parquet",
        f"year=2019/month=7/.theirs.parquet.tmp-{TEMP}",
        f".notes.tmp-{TEMP}",
        "sub/mydata.parquet",
        "harvest/lake.json",
    ]
    assert [p for p in foreign if is_own_file(p)] == []


# -- a new lake is only created where nothing lives ----------------------------------------
@pytest.fixture
def sim(shared_sim: ReadOnlySim) -> SimHandle:
    """The tests that take ``sim`` only read from it (``exercise``'s start their own)."""
    return shared_sim


def assert_refused(result: Any, uri: str, example: str) -> None:
    assert result.returncode == EXIT_LAKE, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"harvester: error: {uri} already holds files that are not a harvester lake"
        f" (e.g. {example}): harvest into an empty directory or a new prefix"
    ], result.stderr


@pytest.mark.parametrize("foreign", ["other.parquet", "sub/mydata.parquet"])
def test_harvest_or_refresh_into_a_directory_holding_foreign_files_is_refused(
    sim: SimHandle, tmp_path: Path, foreign: str
) -> None:
    out = tmp_path / "shared"
    (out / foreign).parent.mkdir(parents=True, exist_ok=True)
    (out / foreign).write_bytes(ledger_bytes())
    before = snapshot(out)
    requests = sim.stats()["requests"]

    assert_refused(run_harvest(sim.url, str(out), *DATES), str(out), foreign)
    assert sim.stats()["requests"] == requests  # refused before a request is spent
    for command in (
        ("refresh", "--api-url", sim.url, "--rate", "0"),
        ("verify", "--api-url", sim.url, "--rate", "0", "--repair"),
        ("compact",),
        ("status",),
    ):
        result = cli(*command, "--out", str(out))
        assert result.returncode == EXIT_LAKE, (command, result.stdout + result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert snapshot(out) == before
    assert not (out / "_harvest").exists()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == sorted(
        [foreign] + (["sub"] if "/" in foreign else [])
    )


def s3_env(moto_s3: MotoS3) -> dict[str, str]:
    env = harvest_env(HARVESTER_S3_ENDPOINT_URL=moto_s3.endpoint_url, **SMALL_SHARDS)
    return env


def objects(moto_s3: MotoS3, bucket: str) -> dict[str, bytes]:
    import boto3

    client = boto3.client("s3", endpoint_url=moto_s3.endpoint_url, region_name="us-east-1")
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def test_harvest_into_an_s3_prefix_or_bucket_holding_other_data_is_refused(
    sim: SimHandle, moto_s3: MotoS3, s3_lake_uri: str
) -> None:
    import boto3

    env = s3_env(moto_s3)
    client = boto3.client("s3", endpoint_url=moto_s3.endpoint_url, region_name="us-east-1")
    # A prefix that holds an unrelated dataset further down.
    prefix = s3_lake_uri.removeprefix(f"s3://{moto_s3.bucket}/")
    ledger = f"{prefix}/finance/2024/ledger.parquet"
    client.put_object(Bucket=moto_s3.bucket, Key=ledger, Body=ledger_bytes())
    result = run_harvest(sim.url, s3_lake_uri, *DATES, env=env)
    assert_refused(result, s3_lake_uri, "finance/2024/ledger.parquet")
    result = cli("refresh", "--api-url", sim.url, "--out", s3_lake_uri, "--rate", "0", env=env)
    assert result.returncode == EXIT_LAKE and "Traceback" not in result.stderr
    under = {k: v for k, v in objects(moto_s3, moto_s3.bucket).items() if k.startswith(prefix)}
    assert under == {ledger: ledger_bytes()}

    # A whole bucket, shared with another team: its root is no place for a new lake.
    shared = f"shared-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=shared)
    client.put_object(Bucket=shared, Key="finance/2024/ledger.parquet", Body=ledger_bytes())
    result = run_harvest(sim.url, f"s3://{shared}", *DATES, env=env)
    assert_refused(result, f"s3://{shared}", "finance/2024/ledger.parquet")
    assert objects(moto_s3, shared) == {"finance/2024/ledger.parquet": ledger_bytes()}

    # An empty bucket's root is fine.
    empty = f"empty-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=empty)
    ok(run_harvest(sim.url, f"s3://{empty}", *DATES, env=env))
    lake = Lake.open(f"s3://{empty}", moto_s3.storage_options())
    assert lake.exists("_harvest/lake.json")
    assert_lake_equals_truth(lake, sim.truth())


def test_a_lake_accepts_its_own_resume_and_an_empty_or_missing_directory(
    sim: SimHandle, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    ok(run_harvest(sim.url, str(empty), *DATES))
    ok(run_harvest(sim.url, str(tmp_path / "missing" / "lake"), *DATES))
    assert_lake_equals_truth(Lake.open(str(empty)), sim.truth())


def test_plan_refresh_and_verify_agree_with_harvest_on_a_directory_of_other_files(
    sim: SimHandle, tmp_path: Path
) -> None:
    """Issue 21, finding 5: ``plan`` says that a harvest there would be refused (exit 4,
    harvest's own words), and refresh and verify say that it is no lake and that a harvest
    needs an empty directory, not "run `harvester harvest` first" (which is refused)."""
    out = tmp_path / "foreign"
    out.mkdir()
    (out / "notes.txt").write_text("someone else's\n")
    before = snapshot(out)
    requests = sim.stats()["requests"]
    refused = (
        f"{out} already holds files that are not a harvester lake (e.g. notes.txt): harvest"
        " into an empty directory or a new prefix"
    )
    no_lake = (
        f"{out} is not a harvester lake: it holds other files (e.g. notes.txt) and no"
        " _harvest/lake.json; `harvester harvest` needs an empty directory or a new prefix"
    )
    said = {
        ("plan",): f"the harvest would be refused: {refused}",
        ("plan", "--job", "refresh"): f"the refresh would be refused: {no_lake}",
        ("refresh",): no_lake,
        ("verify",): no_lake,
        ("verify", "--repair"): no_lake,
    }
    for args, line in said.items():
        result = cli(*args, "--api-url", sim.url, "--out", str(out), "--rate", "0")
        assert result.returncode == EXIT_LAKE, (args, result.stdout + result.stderr)
        assert result.stderr.splitlines() == [f"harvester: error: {line}"], result.stderr
        assert result.stdout == ""
    assert sim.stats()["requests"] == requests  # refused before a request is spent
    assert snapshot(out) == before


# -- foreign files inside a lake survive every command ------------------------------------
def own_leftovers(lake: Lake) -> dict[str, bytes]:
    """Files of ours that nothing commits (a killed run's): the sweep must remove these."""
    committed = sorted(
        p for p in lake.list_files("year=2019/month=1", suffix=".parquet") if is_own_file(p)
    )[0]
    data = lake.read_bytes(committed)
    return {
        "year=2019/month=1/part-20190101T000000Z-compact-abcdef-compact-00000.parquet": data,
        f"year=2019/month=1/.part-2019-01-15.parquet.tmp-{TEMP}": b"partial",
    }


def plant(lake: Lake, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        if lake.is_local:
            full = Path(lake.full_path(path))
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_bytes(data)  # not write_bytes: it would name its own temp files
        else:
            lake.fs.pipe_file(lake.full_path(path), data)


def assert_intact(lake: Lake) -> None:
    for path, data in FOREIGN_INSIDE.items():
        assert lake.read_bytes(path) == data, path


class OwnFiles(Lake):
    """The lake as its own files show it: foreign files listed by nobody."""

    def list_files(self, prefix: str = "", suffix: str | None = None) -> list[str]:
        return [p for p in super().list_files(prefix, suffix) if is_own_file(p)]


def assert_equals_truth(lake: Lake, truth: list[dict[str, Any]]) -> None:
    """The lake's own files hold exactly the truth (the foreign ones are not its rows)."""
    assert_lake_equals_truth(OwnFiles(lake.fs, lake.root, lake.uri, lake.is_local), truth)


def report_of(lake: Lake, stdout: str) -> dict[str, Any]:
    """The run report whose place the command printed last (``report: <uri>/<path>``)."""
    saved = [line[len("report: ") :] for line in stdout.splitlines() if line.startswith("report: ")]
    assert saved, stdout
    data: dict[str, Any] = json.loads(lake.read_bytes(saved[-1].removeprefix(lake.uri + "/")))
    return data


def reopen_harvest(lake: Lake) -> None:
    """Make the harvest unfinished again (one shard to fetch), so a resume runs its sweep."""
    lake.delete("_harvest/complete.json")
    markers = lake.list_files("_harvest/shards", suffix=".json")
    lake.delete(markers[len(markers) // 2])


def exercise(sim: SimHandle, lake: Lake, env: dict[str, str]) -> None:
    uri = lake.uri
    ok(run_harvest(sim.url, uri, *DATES, env=env))
    plant(lake, FOREIGN_INSIDE)
    leftovers = own_leftovers(lake)
    plant(lake, leftovers)

    # harvest (resume): its sweep takes our leftovers, never their files
    reopen_harvest(lake)
    report = report_of(lake, ok(run_harvest(sim.url, uri, *DATES, env=env)))
    assert report["swept_files"] >= len(leftovers), report
    assert not any(lake.exists(p) for p in leftovers)
    assert_intact(lake)
    assert_equals_truth(lake, sim.truth())

    # refresh
    sim.mutate(delete=20, late=15, modify=10, seed=5)
    refresh = ["refresh", "--api-url", sim.url, "--out", uri, "--rate", "0"]
    ok(cli(*refresh, "--reconcile-days", "120", env=env))
    assert_intact(lake)
    assert_equals_truth(lake, sim.truth())

    # compact
    ok(cli("compact", "--out", uri, env=env))
    assert_intact(lake)
    assert_equals_truth(lake, sim.truth())

    # verify names every foreign file; --repair leaves them all where they are
    args = ("verify", "--api-url", sim.url, "--out", uri, "--rate", "0")
    result = cli(*args, env=env)
    assert result.returncode == EXIT_MISMATCH, result.stdout + result.stderr
    text = result.stdout
    note = {
        "other.parquet": "a reader globbing the lake for *.parquet reads it",
        "sub/mydata.parquet": "a reader globbing the lake for *.parquet reads it",
        "year=2019/month=1/theirs.parquet": "DuckDB and Spark read its rows as the lake's",
    }
    for path in FOREIGN_INSIDE:
        why = note.get(path, "readers skip it")
        assert f"problem: file not written by the harvester (left alone; {why}): {path}" in text
    assert "file not part of the committed lake" not in text  # they are not leftovers of ours
    assert "problem: day" not in text  # and their rows are not the lake's
    check = report_of(lake, text)["extra"]["check"]
    kinds = {p["kind"] for p in check["problems"]}
    assert kinds == {"foreign", "schema"}, check["problems"]
    assert check["rows"] == len([d for d in sim.truth() if is_decodable(d)])

    result = cli(*args, "--repair", env=env)
    assert result.returncode == EXIT_MISMATCH, result.stdout + result.stderr
    assert "after repair: " in result.stdout
    assert_intact(lake)
    assert_equals_truth(lake, sim.truth())


def test_foreign_files_inside_a_local_lake_survive_every_command(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    with run_simulator_process(
        "--records", "2000", *RANGE, "--max-window", WINDOW, "--seed", "123", "--admin"
    ) as sim:
        exercise(sim, Lake.open(str(out)), harvest_env(**SMALL_SHARDS))
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted(
        [".notes.tmp-" + TEMP, "other.parquet"]
    )


def test_foreign_files_inside_an_s3_lake_survive_every_command(
    moto_s3: MotoS3, s3_lake_uri: str
) -> None:
    with run_simulator_process(
        "--records", "800", *RANGE, "--max-window", WINDOW, "--seed", "124", "--admin"
    ) as sim:
        exercise(sim, Lake.open(s3_lake_uri, moto_s3.storage_options()), s3_env(moto_s3))


def test_a_copied_lake_keeps_its_foreign_files_too(tmp_path: Path) -> None:
    """``shutil.copytree`` of a lake (a user's backup) carries foreign files along; the
    copy is a lake (lake.json travels with it), so harvesting into it is not refused."""
    with run_simulator_process(
        "--records", "600", *RANGE, "--max-window", WINDOW, "--seed", "125"
    ) as sim:
        source = tmp_path / "lake"
        ok(run_harvest(sim.url, str(source), *DATES))
        (source / "README.parquet").write_bytes(ledger_bytes())
        copy = tmp_path / "copy"
        shutil.copytree(source, copy)
        (copy / "_harvest" / "complete.json").unlink()
        ok(run_harvest(sim.url, str(copy), *DATES))
        assert (copy / "README.parquet").read_bytes() == ledger_bytes()
