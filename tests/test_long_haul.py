"""The long haul (issue 13): a weekly quota, outages, signals and a request budget, each
met by the real command against a real simulator process, and each ending with the lake
equal to the simulator's truth, row by row.

The simulator's quota has no clock: its "Sunday" is ``POST /_sim/quota-reset``. The outages
last three minutes (503s) and 20 seconds (refused connections), not the hours the real
service has had: what is tested is that requests failing during an outage use up no attempts,
which ``HARVESTER_MAX_ATTEMPTS=3`` makes bite (without the breaker, three failures would fail
the shard long before the outage ends), and that the waits between probes stay capped.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harvester.errors import EXIT_BUDGET, EXIT_HANGUP, EXIT_QUOTA, EXIT_TERMINATED
from harvester.sim.testing import SimHandle, run_simulator_process
from harvester.storage.store import Lake
from tests.support.cli import reports
from tests.support.harvest import (
    DATES,
    RANGE,
    WINDOW,
    harvest_cmd,
    harvest_env,
    run_harvest,
    signals_as_in_a_terminal,
)
from tests.support.lakecheck import assert_lake_equals_truth

SIM = ("--records", "6000", *RANGE, "--max-window", WINDOW, "--seed", "13", "--admin")
# Outages: three failed attempts would fail a shard; the breaker probes every <= 0.5 s.
OUTAGE_ENV = {"HARVESTER_MAX_ATTEMPTS": "3", "HARVESTER_OUTAGE_WAIT_MAX": "0.5"}
QUOTA_ENV = {"HARVESTER_QUOTA_PROBE": "0.3"}


def _markers(out: Path) -> list[dict[str, Any]]:
    folder = out / "_harvest" / "shards"
    if not folder.exists():
        return []
    return [json.loads(p.read_text()) for p in folder.glob("*.json")]


def _failed(out: Path) -> list[str]:
    return [m["key"] for m in _markers(out) if m.get("status") == "failed"]


def _last_report(out: Path, command: str = "harvest") -> dict[str, Any]:
    found = reports(out, command)
    assert found, f"no {command} report in {out}"
    return max(found, key=lambda r: r.get("finished_at") or "")


def _wait_until(check: Any, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- the weekly quota -----------------------------------------------------------------------


def test_a_spent_quota_stops_cleanly_and_the_same_command_finishes_after_the_reset(
    tmp_path: Path,
) -> None:
    out = tmp_path / "lake"
    # The whole harvest takes ~113 requests here. A week of 80 stops the first run, and the
    # second week must hold the rest plus the second run's own cost (preflight, the counts
    # of shards not committed, the closing check): with 60 it held them only by luck
    # (58-61 requests were measured), and the test failed on CI when it did not.
    with run_simulator_process(*SIM, "--weekly-quota", "80") as sim:
        stopped = run_harvest(sim.url, str(out), *DATES, env=harvest_env(**QUOTA_ENV))
        assert stopped.returncode == EXIT_QUOTA, stopped.stdout + stderr_of(stopped)
        lines = [line for line in stopped.stderr.splitlines() if line.startswith("harvester:")]
        assert "weekly quota is spent" in lines[0] and "resets" in lines[0], lines
        assert "Traceback" not in stopped.stderr
        assert _failed(out) == []  # stopped, not failed: no shard is marked failed
        report = _last_report(out)
        assert report["status"] == "stopped" and "weekly quota" in report["extra"]["ended_by"]
        assert report["quota_spent_at"]
        # The lake counts what this week cost, and status shows it.
        ledger = json.loads((out / "_harvest" / "quota.json").read_text())
        assert sum(ledger["requests"].values()) == report["requests"]
        status = subprocess.run(
            [*harvest_cmd(sim.url, str(out))[:3], "status", "--out", str(out)],
            capture_output=True, text=True, check=False, env=harvest_env(),
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        assert f"{report['requests']:,} of 5,000,000 requests" in status.stdout
        assert "quota found spent" in status.stdout
        # plan turns the quota into calendar time, counting what this week has spent.
        plan = subprocess.run(
            [*harvest_cmd(sim.url, str(out))[:3], "plan", "--api-url", sim.url, "--out",
             str(out), *DATES],
            capture_output=True, text=True, check=False,
            env=harvest_env(HARVESTER_WEEKLY_QUOTA="100"),
        )  # fmt: skip
        assert plan.returncode == 0, plan.stdout + plan.stderr
        spent = f"{report['requests']:,} spent this week by runs on this lake"
        assert f"quota: 100 requests a week per key, {spent}" in plan.stdout, plan.stdout
        assert "spends it" in plan.stdout and "ends" in plan.stdout

        sim.quota_reset()  # Sunday
        again = run_harvest(sim.url, str(out), *DATES, env=harvest_env(**QUOTA_ENV))
        assert again.returncode == 0, again.stdout + again.stderr
        assert_lake_equals_truth(Lake.open(str(out)), sim.truth())


def test_wait_for_quota_waits_for_the_reset_and_finishes_in_one_command(
    tmp_path: Path,
) -> None:
    out = tmp_path / "lake"
    with run_simulator_process(*SIM, "--weekly-quota", "60") as sim:
        resetter = threading.Thread(target=_reset_once_spent, args=(sim,), daemon=True)
        resetter.start()
        result = run_harvest(
            sim.url, str(out), *DATES, "--wait-for-quota", env=harvest_env(**QUOTA_ENV)
        )
        resetter.join(5)
        assert result.returncode == 0, result.stdout + result.stderr
        assert_lake_equals_truth(Lake.open(str(out)), sim.truth())
    report = _last_report(out)
    waits = [h for h in report["outages"] if h["kind"] == "quota"]
    assert len(waits) == 1 and waits[0]["ended_at"], report["outages"]
    assert "waited for the weekly quota" in result.stdout
    assert _failed(out) == []


def _reset_once_spent(sim: SimHandle) -> None:
    """The quota's Sunday, a moment after the harvest met the spent quota."""
    _wait_until(lambda: sim.stats()["throttled_by"].get("quota", 0) > 0, what="a spent quota")
    time.sleep(1.0)  # a few probes see it still spent
    sim.quota_reset()


# -- outages --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "seconds", "wait_max"),
    [
        ("503", 180, "5"),  # three minutes of empty-body 503s; probes up to 5 s apart
        ("refuse", 20, "0.5"),  # the port closed, then listening again
    ],
)
def test_a_harvest_through_an_outage_fails_no_shard_and_equals_the_truth(
    kind: str, seconds: int, wait_max: str, tmp_path: Path
) -> None:
    out = tmp_path / "lake"
    outage = ("--outage-after", "80", "--outage-seconds", str(seconds), "--outage-kind", kind)
    env = harvest_env(**{**OUTAGE_ENV, "HARVESTER_OUTAGE_WAIT_MAX": wait_max})
    with run_simulator_process(*SIM, *outage) as sim:
        result = run_harvest(sim.url, str(out), *DATES, env=env, timeout=seconds + 240)
        assert result.returncode == 0, result.stdout + result.stderr
        assert_lake_equals_truth(Lake.open(str(out)), sim.truth())
    assert _failed(out) == []
    report = _last_report(out)
    outages = [h for h in report["outages"] if h["kind"] == "outage"]
    assert outages, report["outages"]
    first = outages[0]
    assert first["ended_at"] and first["seconds"] >= seconds * 0.8, first  # most of it
    assert first["failed_requests"] >= 1
    # One probe at a time, waits doubling to the cap: a handful of requests, not a storm.
    assert first["probes"] <= seconds / float(wait_max) + 20, first
    assert any(line.startswith("outage: ") for line in result.stdout.splitlines())


# -- signals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, EXIT_TERMINATED), (signal.SIGHUP, EXIT_HANGUP)]
)
def test_a_signal_during_a_harvest_saves_the_report_and_the_rerun_equals_the_truth(
    signum: signal.Signals, code: int, tmp_path: Path
) -> None:
    out = tmp_path / "lake"
    with run_simulator_process(*SIM) as sim:
        proc = subprocess.Popen(
            harvest_cmd(sim.url, str(out), *DATES, "--rate", "40", "--concurrency", "1"),
            env=harvest_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=signals_as_in_a_terminal,
        )  # fmt: skip
        _wait_until(lambda: len(_markers(out)) >= 3, what="three committed shards")
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == code, stdout + stderr
        assert f"stopped by {signum.name}" in stderr
        assert "run the same `harvester harvest` command again to resume" in stderr
        assert "Traceback" not in stderr
        assert not (out / "_harvest" / "lock.json").exists()  # released on the way out
        report = _last_report(out)
        assert report["status"] == "interrupted" and report["extra"]["ended_by"] == signum.name
        assert report["requests"] > 0

        again = run_harvest(sim.url, str(out), *DATES)
        assert again.returncode == 0, again.stdout + again.stderr
        assert_lake_equals_truth(Lake.open(str(out)), sim.truth())


def _ignore_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as `nohup` starts a command


def test_a_sighup_ignored_at_start_stays_ignored_as_nohup_wants(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    with run_simulator_process(*SIM) as sim:
        proc = subprocess.Popen(
            harvest_cmd(sim.url, str(out), *DATES, "--rate", "40", "--concurrency", "1"),
            env=harvest_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_ignore_sighup,
        )  # fmt: skip
        _wait_until(lambda: len(_markers(out)) >= 3, what="three committed shards")
        proc.send_signal(signal.SIGHUP)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stdout + stderr  # went on to the end
        assert "stopped by" not in stderr
        assert_lake_equals_truth(Lake.open(str(out)), sim.truth())


def test_sigterm_during_a_refresh_saves_the_report_and_the_rerun_equals_the_truth(
    tmp_path: Path,
) -> None:
    out = tmp_path / "lake"
    with run_simulator_process(*SIM) as sim:
        first = run_harvest(sim.url, str(out))  # an open end: new days are refreshed too
        assert first.returncode == 0, first.stdout + first.stderr
        sim.mutate(add=400, late=200, modify=150, delete=60, seed=3)
        refresh = [*harvest_cmd(sim.url, str(out), "--rate", "40", "--concurrency", "1")]
        refresh[refresh.index("harvest")] = "refresh"
        proc = subprocess.Popen(
            refresh, env=harvest_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        run_file = out / "_harvest" / "refresh" / "run.json"
        _wait_until(run_file.exists, what="the refresh to start")
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == EXIT_TERMINATED, stdout + stderr
        assert "stopped by SIGTERM" in stderr and "`harvester refresh` command again" in stderr
        report = _last_report(out, "refresh")
        assert report["status"] == "interrupted"

        refresh[refresh.index("--rate") + 1] = "0"
        again = subprocess.run(
            refresh, env=harvest_env(), capture_output=True, text=True, timeout=240, check=False
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert_lake_equals_truth(Lake.open(str(out)), sim.truth())


# -- the request budget -------------------------------------------------------------------------


def test_max_requests_stops_cleanly_and_the_rerun_finishes(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    with run_simulator_process(*SIM) as sim:
        stopped = run_harvest(sim.url, str(out), *DATES, "--max-requests", "50")
        assert stopped.returncode == EXIT_BUDGET, stopped.stdout + stopped.stderr
        assert "--max-requests 50 reached" in stopped.stderr
        assert _failed(out) == []
        served = sim.stats()["requests"]
        assert served <= 50  # not one request over the budget
        report = _last_report(out)
        assert report["status"] == "stopped" and report["requests"] == served

        again = run_harvest(sim.url, str(out), *DATES)
        assert again.returncode == 0, again.stdout + again.stderr
        assert_lake_equals_truth(Lake.open(str(out)), sim.truth())


def stderr_of(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr
