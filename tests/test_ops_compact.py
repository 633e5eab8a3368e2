"""``harvester compact``: few files per partition, the same rows, and refresh still works."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from harvester.sim.testing import run_simulator_process
from harvester.storage.store import Lake
from tests.support.cli import cli, ok, refresh_all_days, reports
from tests.support.harvest import RANGE, WINDOW, harvest_env, run_harvest
from tests.support.lakecheck import assert_lake_equals_truth, within

# Shards of at most 60 rows: each month's partition holds dozens of small files.
SMALL_SHARDS = harvest_env(HARVESTER_SHARD_SIZE="60")


def files_per_partition(out: Path) -> Counter[str]:
    return Counter(
        p.parent.relative_to(out).as_posix() for p in out.glob("year=*/month=*/*.parquet")
    )


def all_rows(out: Path) -> pa.Table:
    """Every row readers see, in one canonical order, to compare lakes cell by cell."""
    tables = [pq.read_table(p) for p in sorted(out.glob("year=*/month=*/*.parquet"))]
    return pa.concat_tables(tables).sort_by("id")


def test_compact_leaves_few_files_the_same_rows_and_refresh_still_works(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    with run_simulator_process(
        "--records", "3000", *RANGE, "--max-window", WINDOW, "--seed", "61", "--admin"
    ) as sim:
        ok(
            run_harvest(
                sim.url, str(out), "--from", "2019-01-01", "--to", "2019-02-28", env=SMALL_SHARDS
            )
        )
        before = files_per_partition(out)
        assert min(before.values()) >= 10, before
        rows_before = all_rows(out)
        # A leftover of a killed run: compaction sweeps it instead of keeping it as data.
        shutil.copyfile(
            next(out.glob("year=2019/month=1/*.parquet")),
            out / "year=2019/month=1/part-20260101T000000Z-compact-abcdef-compact-00000.parquet",
        )

        text = ok(cli("compact", "--out", str(out)))
        after = files_per_partition(out)
        assert set(after) == set(before) and max(after.values()) == 1, after
        assert all_rows(out).equals(rows_before), "compaction changed the data"
        assert_lake_equals_truth(Lake.open(str(out)), sim.truth())
        assert f"{len(before)} of {len(before)} partitions rewritten" in text
        report = reports(out, "compact")[-1]
        assert report["status"] == "complete" and report["swept_files"] == 1
        assert report["extra"]["files_before"] == sum(before.values())
        assert report["extra"]["files_after"] == len(after)
        assert report["rows_in_lake"] == rows_before.num_rows
        manifests = sorted((out / "_harvest" / "partitions").glob("*.json"))
        assert [json.loads(p.read_text())["files"] for p in manifests] == [
            sorted(f"{part}/{f.name}" for f in (out / part).glob("*.parquet"))
            for part in sorted(after)
        ]

        # A second compaction has nothing to do and rewrites nothing.
        again = ok(cli("compact", "--out", str(out)))
        assert (
            f"0 of {len(after)} partitions rewritten" in again and files_per_partition(out) == after
        )

        # The compacted lake is a normal lake: refresh and verify work on it.
        sim.mutate(add=80, late=60, modify=40, delete=30, seed=2)
        refresh_all_days(sim.url, str(out))
        # The harvest covered January and February: rows added on later days are not ours.
        covered = within(sim.truth(), "2019-01-01", "2019-02-28")
        assert_lake_equals_truth(Lake.open(str(out)), covered)
        ok(cli("compact", "--out", str(out)))
        assert max(files_per_partition(out).values()) == 1
        assert_lake_equals_truth(Lake.open(str(out)), covered)
        verified = cli("verify", "--api-url", sim.url, "--out", str(out), "--rate", "0")
        assert verified.returncode == 0, verified.stdout + verified.stderr


def test_compact_refuses_an_unfinished_harvest_and_an_interrupted_refresh(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    with run_simulator_process(
        "--records", "500", *RANGE, "--max-window", WINDOW, "--seed", "62"
    ) as sim:
        ok(
            run_harvest(
                sim.url, str(out), "--from", "2019-01-01", "--to", "2019-02-28", env=SMALL_SHARDS
            )
        )
    files = files_per_partition(out)
    complete = out / "_harvest" / "complete.json"
    saved = complete.read_bytes()
    complete.unlink()
    result = cli("compact", "--out", str(out))
    assert result.returncode == 4 and "the harvest is not complete" in result.stderr, result.stderr
    complete.write_bytes(saved)
    run = out / "_harvest" / "refresh" / "run.json"
    run.parent.mkdir(parents=True)
    run.write_text(
        json.dumps({"run_id": "x", "since": "2019-01-01T00:00:00", "phase": "merge-days"})
    )
    result = cli("compact", "--out", str(out))
    assert result.returncode == 4 and "a refresh was interrupted" in result.stderr, result.stderr
    assert files_per_partition(out) == files
