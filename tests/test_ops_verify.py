"""``harvester verify``: exit 0 on a lake equal to the source; otherwise exit 6 naming each
difference; ``--repair`` makes the lake equal to the source again."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harvester.sim.testing import SimHandle, run_simulator_process
from harvester.storage.quarantine import settle
from harvester.storage.schema import ARROW_SCHEMA
from harvester.storage.store import Lake
from tests.support.cli import cli, ok, printed_report, refresh_all_days, reports
from tests.support.harvest import RANGE, WINDOW, run_harvest
from tests.support.lakecheck import assert_lake_equals_truth, within

EXIT_MISMATCH = 6


@pytest.fixture()
def lake_to_verify(tmp_path: Path) -> Iterator[tuple[SimHandle, Path]]:
    """A fresh simulator and a lake harvested from it, for one test to break and verify."""
    out = tmp_path / "lake"
    with run_simulator_process(
        "--records", "4000", *RANGE, "--max-window", WINDOW, "--seed", "51", "--admin"
    ) as sim:
        ok(run_harvest(sim.url, str(out), "--from", "2019-01-01", "--to", "2019-02-28"))
        yield sim, out


def verify(sim: SimHandle, out: Path, *extra: str) -> tuple[int, str]:
    result = cli(
        "verify",
        "--api-url",
        sim.url,
        "--out",
        str(out),
        "--rate",
        "0",
        "--concurrency",
        "4",
        *extra,
    )
    assert result.returncode in (0, EXIT_MISMATCH), result.stdout + result.stderr
    return result.returncode, result.stdout


def test_verify_passes_on_a_lake_equal_to_the_source_and_writes_a_report(
    lake_to_verify: tuple[SimHandle, Path],
) -> None:
    sim, out = lake_to_verify
    code, text = verify(sim, out)
    assert code == 0 and "verify: ok" in text and "problem:" not in text
    report = printed_report(text)
    assert report["status"] == "ok" and report["requests"] > 0 and report["duration_s"] > 0
    assert report["rows_in_lake"] == len(sim.truth())
    assert report["extra"]["check"]["problems"] == []
    assert "api_key" not in report["settings"]


def test_deleted_and_late_rows_are_named_per_day_and_repair_fixes_them(
    lake_to_verify: tuple[SimHandle, Path],
) -> None:
    sim, out = lake_to_verify
    watermark_before = json.loads((out / "_harvest" / "complete.json").read_text())["watermark"]
    summary = sim.mutate(delete=40, late=30, seed=3)
    code, text = verify(sim, out)
    assert code == EXIT_MISMATCH, text
    check = printed_report(text)["extra"]["check"]
    differing, changed = check["days_differing"], check["days_changed_differing"]
    # A day where one row went and a late one came keeps its count: only the second check,
    # rows created since the watermark, sees it. Together they name every day touched.
    named = set(differing) | set(changed)
    assert named == set(summary["days"]), (named, summary["days"])
    shown = re.findall(r"problem: day (\S+): lake has (\d+) rows, service has (\d+)", text)
    assert shown and all(differing[d] == [int(a), int(b)] for d, a, b in shown)
    assert len(shown) == min(len(differing), 10)  # the terminal shows 10, the report has all
    if len(differing) > 10:
        assert f"... and {len(differing) - 10} more days" in text
    assert f"verify: {len(differing) + len(changed)} problems" in text

    # The range narrows what is compared: only January's days are named.
    code, january = verify(sim, out, "--from", "2019-01-01", "--to", "2019-01-31")
    in_january = printed_report(january)["extra"]["check"]  # the terminal caps its lines
    january_days = set(in_january["days_differing"]) | set(in_january["days_changed_differing"])
    assert january_days == {d for d in named if d.startswith("2019-01")}

    code, text = verify(sim, out, "--repair")
    assert code == 0 and "after repair: ok" in text, text
    repaired = printed_report(text)
    assert_lake_equals_truth(Lake.open(str(out)), sim.truth())
    assert verify(sim, out)[0] == 0
    # A repair fetched some days only: the watermark must not move past unseen changes.
    assert not (out / "_harvest" / "watermark.json").exists()
    assert (
        json.loads((out / "_harvest" / "complete.json").read_text())["watermark"]
        == watermark_before
    )
    assert repaired["status"] == "repaired" and repaired["extra"]["repair_days"]
    assert sorted(repaired["extra"]["repair_days"]) == sorted(named)


def _stray_table(like: pa.Table) -> pa.Table:
    """Two rows no source holds, with one column of another type than the lake's."""
    rows = like.slice(0, 2).to_pylist()
    for n, row in enumerate(rows):
        row["id"] = f"{n:032x}"
    schema = ARROW_SCHEMA.set(
        ARROW_SCHEMA.get_field_index("cite103Max"), pa.field("cite103Max", pa.int64())
    )
    return pa.Table.from_pylist(rows, schema=schema)


def test_a_stray_file_and_a_duplicated_file_are_named_and_repair_removes_them(
    lake_to_verify: tuple[SimHandle, Path],
) -> None:
    sim, out = lake_to_verify
    # Leftovers of killed runs, named as the harvester names its files (foreign files are
    # left alone: tests/test_foreign_files.py).
    january = sorted((out / "year=2019" / "month=1").glob("*.parquet"))
    copy = out / "year=2019" / "month=1" / "part-20260101T000000Z-refresh-abcdef-days-00000.parquet"
    shutil.copyfile(january[0], copy)
    stray = (
        out / "year=2019" / "month=2" / "part-20260101T000000Z-compact-abcdef-compact-00000.parquet"
    )
    pq.write_table(_stray_table(pq.read_table(january[0])), stray)
    copied_rows = pq.read_metadata(january[0]).num_rows

    code, text = verify(sim, out)
    assert code == EXIT_MISMATCH, text
    assert (
        "file not part of the committed lake (readers see it): year=2019/month=1/part-20260101T000000Z-refresh-abcdef-days-00000.parquet"
        in text
    )
    assert (
        "file not part of the committed lake (readers see it): year=2019/month=2/part-20260101T000000Z-compact-abcdef-compact-00000.parquet"
        in text
    )
    assert (
        f"{copied_rows} ids appear more than once, in {january[0].relative_to(out).as_posix()},"
        " year=2019/month=1/part-20260101T000000Z-refresh-abcdef-days-00000.parquet (uncommitted)"
        in text
    )
    assert (
        "schema differs in year=2019/month=2/part-20260101T000000Z-compact-abcdef-compact-00000.parquet: column cite103Max is int64"
        in text
    )
    assert (
        "rows of year=2019/month=2/part-20260101T000000Z-compact-abcdef-compact-00000.parquet belong to another month's partition"
        in text
    )
    assert "problem: day" not in text  # committed files still hold exactly the source's rows

    code, text = verify(sim, out, "--repair")
    assert code == 0 and "after repair: ok" in text, text
    assert not copy.exists() and not stray.exists()
    assert_lake_equals_truth(Lake.open(str(out)), sim.truth())


def test_duplicates_inside_the_committed_lake_are_repaired_by_fetching_their_days(
    lake_to_verify: tuple[SimHandle, Path],
) -> None:
    sim, out = lake_to_verify
    # A committed file that holds some of its rows twice (as a buggy writer would leave it).
    target = sorted((out / "year=2019" / "month=2").glob("*.parquet"))[0]
    table = pq.read_table(target)
    pq.write_table(pa.concat_tables([table, table.slice(0, 3)]), target)
    code, text = verify(sim, out)
    assert code == EXIT_MISMATCH
    assert f"3 ids appear more than once, in {target.relative_to(out).as_posix()} x2" in text
    code, text = verify(sim, out, "--repair")
    assert code == 0, text
    assert_lake_equals_truth(Lake.open(str(out)), sim.truth())


def test_quarantined_rows_count_in_their_day_even_without_a_readable_date(tmp_path: Path) -> None:
    # Undecodable rows (no id, dates like "07/15/2019") are quarantined, yet the service
    # counts them in a day: verify must not call those days different, also when their
    # month differs for another reason and is compared day by day.
    out = tmp_path / "lake"
    sim_args = ("--records", "3000", *RANGE, "--max-window", WINDOW, "--seed", "52")
    with run_simulator_process(*sim_args, "--bad-rows", "60", "--admin") as sim:
        ok(run_harvest(sim.url, str(out), "--from", "2019-01-01", "--to", "2019-02-28"))
        code, text = verify(sim, out)
        assert code == 0 and "60 quarantined" in text, text
        summary = sim.mutate(delete=4, seed=5)
        code, text = verify(sim, out)
    assert code == EXIT_MISMATCH
    named = set(printed_report(text)["extra"]["check"]["days_differing"])
    assert named == set(summary["days"]), text


def test_settle_moves_floating_rows_to_the_days_that_lack_them() -> None:
    jan = [dt.date(2019, 1, d) for d in range(1, 6)]
    # Two floating rows of a shard over Jan 1..5 were counted on Jan 1; they belong to
    # Jan 3 and Jan 4. Jan 5 differs for a reason of its own and stays.
    differing = {jan[0]: (12, 10), jan[2]: (7, 8), jan[3]: (4, 5), jan[4]: (9, 6)}
    assert settle(differing, {(jan[0], jan[4]): 2}) == {jan[4]: (9, 6)}
    # A floating row no day lacks is one the service deleted since: it is not counted.
    assert settle({jan[0]: (11, 10), jan[1]: (5, 4)}, {(jan[0], jan[4]): 1}) == {jan[1]: (5, 4)}
    # The first day agreeing means the rows are there: nothing moves.
    assert settle({jan[2]: (7, 8)}, {(jan[0], jan[4]): 1}) == {jan[2]: (7, 8)}


def test_an_interrupted_repair_is_finished_first_by_the_next_refresh(
    lake_to_verify: tuple[SimHandle, Path],
) -> None:
    sim, out = lake_to_verify
    sim.mutate(add=30, late=20, modify=10, delete=10, seed=4)
    # What a verify --repair killed before its fetch leaves behind.
    run = out / "_harvest" / "refresh" / "run.json"
    run.parent.mkdir(parents=True)
    run.write_text(
        json.dumps(
            {
                "run_id": "20260101T000000Z-repair-abcdef",
                "since": "",
                "phase": "reconcile",
                "repair_days": {"2019-01-05": "lake has 1 rows, service 2"},
                "kind": "repair",
            }
        )
    )
    refresh_all_days(sim.url, str(out))
    assert not run.exists()
    report = reports(out, "refresh")[-1]
    assert any(
        "finished interrupted repair 20260101T000000Z-repair-abcdef" in e for e in report["events"]
    )
    # The lake covers January and February (harvested with --to): the rows added on new
    # days after it are not the lake's to hold.
    covered = within(sim.truth(), "2019-01-01", "2019-02-28")
    assert_lake_equals_truth(Lake.open(str(out)), covered)
    # The refresh proper ran after it, and moved the watermark as a refresh does.
    assert (
        json.loads((out / "_harvest" / "watermark.json").read_text())["run_id"] == report["run_id"]
    )
