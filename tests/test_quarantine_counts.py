"""Quarantined rows are counted by one rule: refresh, verify and status agree day by day."""

from __future__ import annotations

import json
from pathlib import Path

from harvester.sim.testing import run_simulator_process
from tests.support.cli import cli, ok, printed_report, refresh_all_days
from tests.support.harvest import DATES, RANGE, WINDOW, run_harvest


def test_refresh_verify_and_status_count_the_same_quarantined_rows_per_day(
    tmp_path: Path,
) -> None:
    out = str(tmp_path / "lake")
    with run_simulator_process(
        "--records", "4000", *RANGE, "--max-window", WINDOW, "--seed", "5",
        "--bad-rows", "25", "--admin",
    ) as sim:  # fmt: skip
        harvested = run_harvest(sim.url, out, *DATES)
        assert harvested.returncode == 0, harvested.stdout + harvested.stderr
        status = json.loads(ok(cli("status", "--out", out, "--json")))
        verified = printed_report(ok(cli("verify", "--api-url", sim.url, "--out", out)))
        refreshed = printed_report(refresh_all_days(sim.url, out))

    by_status = status["quarantined_per_day"]
    by_verify = verified["extra"]["check"]["quarantined_per_day"]
    by_refresh = refreshed["extra"]["quarantined_per_day"]
    # Bad rows with a readable day, and rows whose date is unreadable but whose shard names
    # the day: both kinds are on some day, or the test proves nothing.
    assert sum(by_status.values()) >= 10, by_status
    assert by_status == by_verify == by_refresh
    assert status["quarantined_rows"] == verified["extra"]["check"]["quarantined"]
