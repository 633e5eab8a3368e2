"""Meeting a service that differs from our defaults: its limits and query semantics are
discovered, proven against its own answers, remembered in the lake, and the lake still ends
equal to the truth, row for row."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from harvester.sim.testing import SimHandle, run_simulator_process
from harvester.storage.store import Lake
from tests.support.cli import cli, ok, printed_report, reports, snapshot
from tests.support.harvest import (
    DATES,
    RANGE,
    harvest_env,
    harvest_through_drift,
    run_harvest,
    start_harvest,
)
from tests.support.lakecheck import assert_lake_equals_truth

# An open end: the lake follows the service's newest data (the test adds days later).
OPEN = ("--from", "2019-01-01")


def untold_env(**extra: str) -> dict[str, str]:
    """The fast test settings, but nothing told of the service's limits: the defaults'
    window (10,000), shard size and page-size ceiling (1,000)."""
    env = harvest_env(**extra)
    for name in ("HARVESTER_MAX_WINDOW", "HARVESTER_SHARD_SIZE"):
        env.pop(name, None)
    return env


def service_of(report: dict[str, Any]) -> dict[str, Any]:
    service: dict[str, Any] = report["extra"]["service"]
    return service


@pytest.mark.parametrize("window_error", ["400", "500"])
def test_an_undisclosed_window_and_page_cap_are_learned(window_error: str, tmp_path: Path) -> None:
    out = tmp_path / "lake"
    args = ("--records", "20000", *RANGE, "--max-window", "700", "--max-rows", "37")
    with run_simulator_process(*args, "--window-error", window_error, "--admin") as sim:
        # A 500 is retried before it is read as the window: keep those retries short.
        result = run_harvest(sim.url, str(out), env=untold_env(HARVESTER_MAX_ATTEMPTS="3"))
        assert result.returncode == 0, result.stdout + result.stderr
        assert_lake_equals_truth(Lake.open(str(out)), sim.truth())
    service = service_of(reports(out, "harvest")[-1])
    assert service["page_size"] == 37  # the silent cap, found by the probe
    assert service["window"] is not None and service["window"] <= 700
    if window_error == "400":
        assert service["window"] == 700  # the number the error states
    assert any("paging window learned" in e for e in service["learned"])


def test_a_payload_cap_settles_on_the_largest_page_that_fits(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    args = ("--records", "8000", *RANGE, "--max-rows", "1000", "--max-response-bytes", "300000")
    with run_simulator_process(*args, "--seed", "4", "--admin") as sim:
        result = run_harvest(sim.url, str(out), env=untold_env())
        assert result.returncode == 0, result.stdout + result.stderr
        assert_lake_equals_truth(Lake.open(str(out)), sim.truth())
    page_size = service_of(reports(out, "harvest")[-1])["page_size"]
    # ~800 bytes a row: a page of ~370 rows fits in 300,000 bytes. The climb (100, 200,
    # 400) met the 413 at 400 and narrowed down between 200 and 400.
    assert 300 <= page_size < 400, page_size


def test_sort_honoured_pages_by_key_through_index_drift(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    args = ("--records", "20000", *RANGE, "--sort", "honour", "--seed", "11", "--admin")
    with run_simulator_process(*args) as sim:
        result = harvest_through_drift(sim, out)
        assert result.returncode == 0, result.stdout + result.stderr
        assert_lake_equals_truth(Lake.open(str(out)), sim.truth())
    service = service_of(reports(out, "harvest")[-1])
    assert service["sort"] == "honoured" and service["paging"] == "by key"


def test_sort_ignored_pages_by_offset(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    with run_simulator_process("--records", "6000", *RANGE, "--sort", "ignore", "--admin") as sim:
        result = run_harvest(sim.url, str(out), env=untold_env())
        assert result.returncode == 0, result.stdout + result.stderr
        assert_lake_equals_truth(Lake.open(str(out)), sim.truth())
    service = service_of(reports(out, "harvest")[-1])
    assert service["sort"] == "ignored" and service["paging"] == "by offset"


def test_dates_compared_as_strings_the_shipped_config_still_gets_every_first_day(
    tmp_path: Path,
) -> None:
    out = tmp_path / "lake"
    config = str(Path(__file__).resolve().parent.parent / "configs" / "default.toml")
    args = ("--records", "8000", *RANGE, "--date-field", "string", "--admin")
    with run_simulator_process(*args) as sim:
        result = run_harvest(
            sim.url, str(out), "--config", config, *DATES, "--rate", "0", env=untold_env()
        )
        assert result.returncode == 0, result.stdout + result.stderr
        truth = sim.truth()
        assert_lake_equals_truth(Lake.open(str(out)), truth)
    assert any(r["submissionDate"].startswith("2019-02-01") for r in truth)  # a first day
    service = service_of(reports(out, "harvest")[-1])
    # The shipped form ends in Z: compared as text it misses every T00:00:00 row.
    assert service["date_template"] == "submissionDate:[{start}T00:00:00 TO {end}T23:59:59]"
    assert service["stamp_form"] == "{stamp}"


def test_a_template_that_cannot_be_proven_stops_at_preflight(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    wrong = "createDateTime:[{start}T00:00:00Z TO {end}T23:59:59Z]"
    with run_simulator_process("--records", "3000", *RANGE, "--date-field", "string") as sim:
        result = run_harvest(
            sim.url, str(out), *DATES, env=untold_env(HARVESTER_DATE_TEMPLATE=wrong)
        )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "date_template" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() or snapshot(out) == {}  # nothing written: no lake, no _harvest/


def test_counts_that_do_not_add_up_fail_loudly_naming_the_range(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    with run_simulator_process("--records", "3000", *RANGE, "--count-drift", "5") as sim:
        result = run_harvest(sim.url, str(out), *DATES, env=untold_env())
    assert result.returncode == 3, result.stdout + result.stderr
    assert "do not add up for 2019-01-01..2019-02-28" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def _kill_after_some_shards(sim: SimHandle, out: Path, *extra: str) -> None:
    proc = start_harvest(sim.url, out, *OPEN, "--rate", "30", "--concurrency", "1", *extra)
    shards = out / "_harvest" / "shards"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(shards.glob("*.json"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


def test_learned_limits_are_shown_reused_on_resume_and_relearned_when_contradicted(
    tmp_path: Path,
) -> None:
    out = tmp_path / "lake"
    args = ("--records", "6000", *RANGE, "--max-rows", "37", "--seed", "9")
    with run_simulator_process(*args, "--max-window", "700", "--admin") as sim:
        _kill_after_some_shards(sim, out)
        profile = json.loads((out / "_harvest" / "service.json").read_text())
        assert profile["page_size"] == 37
        plan = json.loads(ok(cli("plan", "--api-url", sim.url, "--out", str(out), "--json")))
        assert plan["service"]["page_size"] == 37 and plan["rows_per_request"] == 37
        before = sim.stats()["requests"]
        resumed = run_harvest(sim.url, str(out), *OPEN, env=untold_env())
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        spent = sim.stats()["requests"] - before
        assert_lake_equals_truth(Lake.open(str(out)), sim.truth())
    report = printed_report(resumed.stdout)
    assert service_of(report)["probed_now"] is False and service_of(report)["probe_requests"] == 0
    assert spent == report["requests"]  # the report accounts for every request the run made
    assert (
        json.loads((out / "_harvest" / "service.json").read_text())["probed_at"]
        == (profile["probed_at"])
    )
    status = ok(cli("status", "--out", str(out)))
    assert "pages of 37 rows" in status

    # The same corpus behind a smaller window, and 600 new rows to page through: refresh
    # learns the window, without probing again, and the lake still equals the truth.
    with run_simulator_process(*args, "--max-window", "250", "--admin") as smaller:
        smaller.mutate(add=600, seed=1)
        refreshed = ok(
            cli("refresh", "--api-url", smaller.url, "--out", str(out), "--rate", "0",
                "--reconcile-days", "120", env=untold_env())
        )  # fmt: skip
        assert_lake_equals_truth(Lake.open(str(out)), smaller.truth())
    report = printed_report(refreshed)
    assert service_of(report)["probed_now"] is False
    stored = json.loads((out / "_harvest" / "service.json").read_text())
    assert stored["probed_at"] == profile["probed_at"]
    assert stored["window"] == 250, stored  # the number the window error states
    assert "paging window 250" in ok(cli("status", "--out", str(out)))
