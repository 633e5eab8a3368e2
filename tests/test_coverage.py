"""A lake keeps exactly the range it covers equal to the service: refresh fills it, never
writes outside it, reconciles all of it, takes its watermark from the service before
fetching (so it cannot run ahead of the data), and never lets one empty answer delete a day.
Every check is row for row against the simulator's truth."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from harvester.sim.testing import run_simulator_process
from harvester.storage.store import Lake
from tests.support.cli import cli, ok, printed_report
from tests.support.harvest import (
    RANGE,
    WINDOW,
    harvest_cmd,
    harvest_env,
    run_harvest,
    start_harvest,
)
from tests.support.lakecheck import assert_lake_equals_truth, within

SIM = ("--records", "12000", *RANGE, "--max-window", WINDOW, "--admin")


def refresh(url: str, out: Path, *extra: str) -> dict[str, Any]:
    return printed_report(
        ok(cli("refresh", "--api-url", url, "--out", str(out), "--rate", "0", *extra))
    )


def test_a_closed_range_stays_closed_and_an_open_one_follows_the_service(tmp_path: Path) -> None:
    closed, open_ended = tmp_path / "closed", tmp_path / "open"
    with run_simulator_process(*SIM, "--seed", "21") as sim:
        dates = ("--from", "2019-01-01", "--to", "2019-01-31")
        assert run_harvest(sim.url, str(closed), *dates).returncode == 0
        assert run_harvest(sim.url, str(open_ended), "--from", "2019-01-01").returncode == 0
        sim.mutate(add=400, late=300, modify=200, delete=60, seed=1)
        refresh(sim.url, closed)
        refresh(sim.url, open_ended)
        truth = sim.truth()
        # Not a row outside January, and every row of January.
        assert_lake_equals_truth(Lake.open(str(closed)), within(truth, "2019-01-01", "2019-01-31"))
        assert_lake_equals_truth(Lake.open(str(open_ended)), truth)  # new days included
        second = refresh(sim.url, closed)
        assert second["extra"]["no_op"], second["events"]
    status = json.loads(ok(cli("status", "--out", str(closed), "--json")))
    assert status["coverage"] == ["2019-01-01", "2019-01-31"]
    assert status["holds"] == ["year=2019/month=1", "year=2019/month=1"]
    assert json.loads(ok(cli("status", "--out", str(open_ended), "--json")))["coverage"][1] is None


def _wait_for_markers(out: Path, count: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(list((out / "_harvest" / "shards").glob("*.json"))) >= count:
            return
        time.sleep(0.05)
    raise AssertionError("the harvest committed no shards")


def test_rows_changed_during_a_harvest_are_found_by_the_next_refresh(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    with run_simulator_process(*SIM, "--seed", "22") as sim:
        proc = start_harvest(sim.url, out, "--from", "2019-01-01", "--to", "2019-02-28",
                             "--rate", "40", "--concurrency", "1")  # fmt: skip
        _wait_for_markers(out, 6)
        sim.mutate(modify=300, seed=2)  # rows of shards already committed change now
        stdout, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stdout + stderr
        # No lookback: only the watermark decides what the refresh asks for.
        refresh(sim.url, out, "--lookback", "0")
        assert_lake_equals_truth(Lake.open(str(out)), sim.truth())


def test_a_killed_refresh_resumed_days_later_misses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    with run_simulator_process(*SIM, "--seed", "23") as sim:
        assert run_harvest(sim.url, str(out), "--from", "2019-01-01").returncode == 0
        sim.mutate(add=300, modify=300, seed=3)
        args = harvest_cmd(sim.url, str(out))
        args[args.index("harvest")] = "refresh"
        args += ["--lookback", "0"]
        proc = subprocess.Popen(args, env=harvest_env(HARVESTER_RATE="30"), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        run_file = out / "_harvest" / "refresh" / "run.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not run_file.exists():
            time.sleep(0.02)
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        for day in (4, 5, 6):  # simulated days pass while nothing runs
            sim.mutate(add=100, modify=150, late=50, seed=day)
        refresh(sim.url, out, "--lookback", "0")  # finishes the killed run first
        refresh(sim.url, out, "--lookback", "0")
        assert_lake_equals_truth(Lake.open(str(out)), sim.truth())


def test_deletions_in_every_month_go_in_one_refresh(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    with run_simulator_process(*SIM, "--seed", "24") as sim:
        assert run_harvest(sim.url, str(out), "--from", "2019-01-01").returncode == 0
        summary = sim.mutate(delete=120, seed=4)
        report = refresh(sim.url, out)
        truth = sim.truth()
        assert_lake_equals_truth(Lake.open(str(out)), truth)
    assert report["extra"]["rows_deleted"] >= 100, (summary, report["extra"])
    months = {d[:7] for d in report["extra"]["days_repaired"]}
    assert months == {"2019-01", "2019-02"}, months


def _faulty(sim_args: tuple[str, ...]) -> tuple[str, ...]:
    return (*sim_args, "--faults", "flaky", "--fault-rate", "1", "--fault-kinds", "spurious-empty")


def test_an_empty_answer_never_deletes_a_day(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    args = (*SIM, "--seed", "25")
    with run_simulator_process(*args) as sim:
        assert run_harvest(sim.url, str(out), "--from", "2019-01-01").returncode == 0
        truth = sim.truth()
    # The same service, now answering every query the first time it is asked as if it
    # matched nothing (a transient 404, an empty replica).
    with run_simulator_process(*_faulty(args)) as spurious:
        first = refresh(spurious.url, out)
        assert_lake_equals_truth(Lake.open(str(out)), truth)  # no row lost
        # Each day that counted empty was counted again in the same run: the second count
        # (the real one) equals the lake, so nothing was held, nothing fetched again.
        assert first["extra"]["days_held"] == {}, first["extra"]
        assert first["extra"]["days_repaired"] == {}, first["extra"]["days_repaired"]
        second = refresh(spurious.url, out)
        assert_lake_equals_truth(Lake.open(str(out)), truth)
    assert not second["extra"]["days_repaired"], second["extra"]["days_repaired"]
    assert json.loads(ok(cli("status", "--out", str(out), "--json")))["pending_drops"] == {}


def test_a_row_stamped_in_the_future_does_not_blind_later_refreshes(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    with run_simulator_process(*SIM, "--seed", "26") as sim:
        assert run_harvest(sim.url, str(out), "--from", "2019-01-01").returncode == 0
        sim.mutate(future=3, seed=7)
        first = refresh(sim.url, out)
        assert any("the future" in e for e in first["events"]), first["events"]
        assert first["extra"]["watermark"] < "9999"
        sim.mutate(add=200, modify=150, seed=8)  # later changes must still be found
        refresh(sim.url, out, "--lookback", "0")
        assert_lake_equals_truth(Lake.open(str(out)), sim.truth())
