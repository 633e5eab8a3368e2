"""Refresh's acceptance points: after mutations of every kind the lake equals the truth.

A real simulator process with ``--admin`` is mutated between runs of the real command.
The reconcile window covers the whole corpus here because the simulator deletes rows on
random old days; in production it is the last ``--reconcile-days`` of mail dates.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harvester.sim.testing import SimHandle, run_simulator_process
from harvester.storage.store import Lake
from tests.support.harvest import RANGE, WINDOW, harvest_cmd, harvest_env, run_harvest
from tests.support.lakecheck import assert_lake_equals_truth
from tests.support.sharedsim import ReadOnlySim

RECONCILE = ("--reconcile-days", "120")


def refresh_cmd(url: str, out: str, *extra: str) -> list[str]:
    cmd = harvest_cmd(url, out, *RECONCILE, *extra)
    cmd[cmd.index("harvest")] = "refresh"
    return cmd


def run_refresh(
    url: str, out: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        refresh_cmd(url, out, *extra),
        env=env or harvest_env(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def latest_report(lake: Lake) -> dict[str, Any]:
    runs = sorted(lake.list_files("_harvest/runs", suffix=".json"))
    return dict(json.loads(lake.read_bytes(runs[-1])))


@pytest.fixture()
def lake_to_refresh(tmp_path: Path) -> Iterator[tuple[SimHandle, str]]:
    """A fresh simulator and a lake harvested from it, for one test to mutate and refresh."""
    out = str(tmp_path / "lake")
    with run_simulator_process(
        "--records",
        "6000",
        *RANGE,
        "--max-window",
        WINDOW,
        "--seed",
        "21",
        "--admin",
    ) as sim:
        result = run_harvest(sim.url, out)
        assert result.returncode == 0, result.stdout + result.stderr
        yield sim, out


MUTATION = {"add": 150, "late": 120, "modify": 100, "delete": 80, "reorder": True}


def test_refresh_after_every_kind_of_change_equals_truth_and_then_is_a_no_op(
    lake_to_refresh: tuple[SimHandle, str],
) -> None:
    sim, out = lake_to_refresh
    summary = sim.mutate(**MUTATION, seed=1)
    result = run_refresh(sim.url, out)
    assert result.returncode == 0, result.stdout + result.stderr
    lake = Lake.open(out)
    assert_lake_equals_truth(lake, sim.truth())
    first = latest_report(lake)
    assert first["extra"]["rows_added"] >= 150, (first["extra"], summary)
    assert first["extra"]["rows_updated"] > 0 and first["extra"]["rows_deleted"] > 0
    assert first["extra"]["days_repaired"], "deletions must be found by reconciliation"
    assert "rows added" in result.stdout and "repaired 2019-" in result.stdout

    again = run_refresh(sim.url, out)
    assert again.returncode == 0, again.stdout + again.stderr
    second = latest_report(lake)
    assert second["extra"]["no_op"] is True, second["extra"]
    # Nothing written into the lake, though the lookback re-read the last run's rows (a
    # no-change refresh said "590 rows written" beside "0 added, 0 updated, 0 deleted").
    assert second["rows_written"] == 0 and "0 rows written" in again.stdout
    assert second["extra"]["partitions_rewritten"] == []
    assert second["extra"]["days_repaired"] == {}
    assert second["requests"] < first["requests"]
    assert "no change" in again.stdout
    assert_lake_equals_truth(lake, sim.truth())


def test_several_rounds_keep_the_lake_equal_to_truth(
    lake_to_refresh: tuple[SimHandle, str],
) -> None:
    sim, out = lake_to_refresh
    for round_seed in (2, 3, 4):
        sim.mutate(add=60, late=50, modify=40, delete=30, reorder=True, seed=round_seed)
        result = run_refresh(sim.url, out)
        assert result.returncode == 0, result.stdout + result.stderr
        assert_lake_equals_truth(Lake.open(out), sim.truth())


def _watermark(out: str) -> str | None:
    path = Path(out) / "_harvest" / "watermark.json"
    return json.loads(path.read_text())["watermark"] if path.exists() else None


def test_refresh_killed_at_random_moments_then_rerun_equals_truth(
    lake_to_refresh: tuple[SimHandle, str],
) -> None:
    sim, out = lake_to_refresh
    sim.mutate(**MUTATION, seed=5)
    truth = sim.truth()
    rng = random.Random(5)
    before = _watermark(out)
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen(
            refresh_cmd(sim.url, out, "--rate", "40", "--concurrency", "1"),
            env=harvest_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.5, 3.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if _watermark(out) != before:
            # The watermark moved, so everything it covers must already be committed.
            assert_lake_equals_truth(Lake.open(out), truth)
    assert kills >= 2, "refresh finished before it could be killed: slow it down"
    result = run_refresh(sim.url, out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_lake_equals_truth(Lake.open(out), truth)
    assert not Path(out, "_harvest", "refresh", "run.json").exists()


def test_refresh_refuses_a_lake_without_a_completed_harvest(
    shared_sim: ReadOnlySim, tmp_path: Path
) -> None:
    result = run_refresh(shared_sim.url, str(tmp_path / "empty"))
    assert result.returncode == 4
    assert "no completed harvest" in result.stderr


def test_refresh_on_s3_equals_truth(moto_s3: Any, s3_lake_uri: str) -> None:
    env = harvest_env(HARVESTER_S3_ENDPOINT_URL=moto_s3.endpoint_url)
    with run_simulator_process(
        "--records",
        "4000",
        *RANGE,
        "--max-window",
        WINDOW,
        "--seed",
        "8",
        "--admin",
    ) as sim:
        result = run_harvest(sim.url, s3_lake_uri, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        sim.mutate(**MUTATION, seed=9)
        result = run_refresh(sim.url, s3_lake_uri, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        lake = Lake.open(s3_lake_uri, moto_s3.storage_options())
        assert_lake_equals_truth(lake, sim.truth())
        again = run_refresh(sim.url, s3_lake_uri, env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert latest_report(lake)["extra"]["no_op"] is True


@pytest.mark.parametrize("reload", [False, True], ids=["refresh", "reload"])
def test_a_row_that_lands_before_the_first_harvested_month_is_found_and_fetched(
    tmp_path: Path, reload: bool
) -> None:
    """A harvest without --from keeps every mail date, not only those from the first day it
    found rows on: a late load on an older day is counted by verify and fetched by the next
    refresh, also when that refresh is a reload (soak seeds 1202 and 1302 lost such a row)."""
    out = str(tmp_path / "lake")
    # Seed 5 leaves the corpus's first weekend (2019-03-30, -31) empty: the harvest's probe
    # finds 2019-04-01 first, and a late row on the 30th lands in a month the lake lacks.
    sim_args = ("--records", "3000", "--start", "2019-03-30", "--end", "2019-05-31")
    with run_simulator_process(*sim_args, "--seed", "5", "--admin") as sim:
        assert run_harvest(sim.url, out).returncode == 0
        first_found = min(doc["submissionDate"] for doc in sim.truth())[:10]
        assert first_found == "2019-04-01", first_found
        coverage = json.loads((Path(out) / "_harvest" / "coverage.json").read_text())
        assert (coverage["first"], coverage["open_start"]) == (first_found, True)
        sim.mutate(late=3, late_on="2019-03-30", reload=reload, seed=5)

        verify = subprocess.run(
            [*harvest_cmd(sim.url, out)[:3], "verify", "--api-url", sim.url, "--out", out],
            env=harvest_env(), capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
        assert verify.returncode != 0, verify.stdout + verify.stderr
        assert "every mail date to" in verify.stdout and "2019-03-30" in verify.stdout
        result = run_refresh(sim.url, out)
        assert result.returncode == 0, result.stdout + result.stderr
        lake = Lake.open(out)
        assert_lake_equals_truth(lake, sim.truth())
        assert (latest_report(lake)["extra"].get("reload") is not None) == reload
        status = subprocess.run(
            [*harvest_cmd(sim.url, out)[:3], "status", "--out", out],
            env=harvest_env(), capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert "every mail date (harvested from 2019-04-01)" in status.stdout, status.stdout
