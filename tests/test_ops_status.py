"""``harvester status``: what ``_harvest/`` says, read from the lake alone, never the API."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from harvester.config import Settings
from harvester.jobs.report import RunReport
from harvester.ops.status import latest_run
from harvester.sim.testing import SimHandle, run_simulator_process
from harvester.storage.store import Lake
from tests.support.cli import cli, ok, refresh_all_days, snapshot
from tests.support.harvest import DATES, RANGE, WINDOW, harvest_env, run_harvest
from tests.support.lakecheck import is_decodable, read_lake, read_quarantine


@pytest.fixture(scope="module")
def sim_and_lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimHandle, Path]]:
    out = tmp_path_factory.mktemp("status") / "lake"
    with run_simulator_process(
        "--records",
        "3000",
        *RANGE,
        "--max-window",
        WINDOW,
        "--seed",
        "31",
        "--bad-rows",
        "4",
        "--admin",
    ) as sim:
        result = run_harvest(sim.url, str(out), *DATES)
        assert result.returncode == 0, result.stdout + result.stderr
        yield sim, out


def test_status_reads_only_the_lake_and_makes_no_api_call(
    sim_and_lake: tuple[SimHandle, Path],
) -> None:
    sim, out = sim_and_lake
    lake_rows = len(read_lake(Lake.open(str(out))))
    before, files = sim.stats()["requests"], snapshot(out)
    # The API URL is configured, and live: status must still not use it.
    env = harvest_env(HARVESTER_API_URL=sim.url)
    text = ok(cli("status", "--out", str(out), env=env))
    data = json.loads(ok(cli("status", "--out", str(out), "--json", env=env)))
    assert sim.stats()["requests"] == before, "status called the API"
    assert snapshot(out) == files, "status wrote to the lake"

    assert "harvest: complete 2019-01-01..2019-02-28" in text
    # The vocabulary of progress and the run's summary (docs/operations.md).
    assert f"rows: {lake_rows:,} in the lake, in" in text
    assert data["rows"] == lake_rows
    assert data["shards_done"] == data["shards_total"] > 0 and data["shards_pending"] == 0
    assert data["shards_failed"] == {}
    assert (
        f"shards {data['shards_total']:,}/{data['shards_total']:,} done, 0 failed, 0 pending"
        in text
    )
    quarantined = len(
        {json.dumps(q["doc"], sort_keys=True) for q in read_quarantine(Lake.open(str(out)))}
    )
    assert quarantined == 4 and data["quarantined_rows"] == 4
    assert "quarantined rows: 4 (" in text
    assert data["watermark"] and f"watermark: {data['watermark']}" in text
    run = data["last_run"]
    assert run["command"] == "harvest" and run["status"] == "complete"
    assert run["shards_done"] == data["shards_done"] and run["rows_in_lake"] == lake_rows
    assert (
        f"last run: harvest complete {run['run_id']}, finished {run['finished_at']},"
        f" {run['rows_written']:,} rows written, {run['shards_fetched']:,} shards fetched,"
        f" {run['requests']:,} requests (1 run recorded)" in text
    )


def test_status_names_pending_and_failed_shards_with_their_causes(
    sim_and_lake: tuple[SimHandle, Path], tmp_path: Path
) -> None:
    _, source = sim_and_lake
    out = tmp_path / "lake"
    shutil.copytree(source, out)
    (out / "_harvest" / "complete.json").unlink()
    markers = sorted((out / "_harvest" / "shards").glob("*.json"))
    with_rows = [p for p in markers if json.loads(p.read_text())["rows"] > 0]
    failed, pending = with_rows[0], with_rows[1]
    lost = sum(json.loads(p.read_text())["rows"] for p in (failed, pending))
    record = json.loads(failed.read_text())
    record.update(status="failed", cause="http 503 after 8 attempts", files=[], rows=0)
    failed.write_text(json.dumps(record))
    pending.unlink()
    total_before = json.loads(ok(cli("status", "--out", str(source), "--json")))["rows"]

    text = ok(cli("status", "--out", str(out)))
    data = json.loads(ok(cli("status", "--out", str(out), "--json")))
    assert "harvest: in progress" in text
    assert data["shards_pending"] == 1 and data["shards_done"] == data["shards_total"] - 2
    total = data["shards_total"]
    assert f"shards {total - 2:,}/{total:,} done, 1 failed, 1 pending" in text
    assert data["shards_failed"] == {record["key"]: "http 503 after 8 attempts"}
    assert f"failed {record['key']}: http 503 after 8 attempts" in text
    assert data["rows"] == total_before - lost
    # Files of those shards are still on disk but no longer committed: status says so.
    assert data["uncommitted_files"] >= 2 and "uncommitted files:" in text


def test_status_after_a_refresh_counts_rewritten_partitions_exactly(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    with run_simulator_process(
        "--records", "2000", *RANGE, "--max-window", WINDOW, "--seed", "32", "--admin"
    ) as sim:
        ok(run_harvest(sim.url, str(out), *DATES))
        sim.mutate(late=60, delete=40, modify=30, seed=1)
        refresh_all_days(sim.url, str(out))
        truth = sim.truth()
    data = json.loads(ok(cli("status", "--out", str(out), "--json")))
    assert data["rewritten_partitions"] > 0
    assert (
        data["rows"]
        == len(read_lake(Lake.open(str(out))))
        == sum(1 for d in truth if is_decodable(d))
    )
    watermark = json.loads((out / "_harvest" / "watermark.json").read_text())["watermark"]
    assert data["watermark"] == watermark
    assert data["last_run"]["command"] == "refresh"


def test_the_last_run_is_the_one_that_finished_last_even_within_one_second() -> None:
    # CI once saw a harvest and the refresh after it finish in the same second, and status
    # named the harvest as the last run: report times are to the microsecond for this.
    first = RunReport.begin("harvest", Settings())
    first.finish("complete")
    second = RunReport.begin("refresh", Settings())
    second.finish("complete")
    reports = [second.to_json(), first.to_json()]
    assert latest_run(reports) == second.to_json()
    assert latest_run(list(reversed(reports))) == second.to_json()
    assert first.finished_at < second.finished_at
    assert latest_run([]) is None
