"""Reloads: the source re-stamps every row at once, and refresh streams the coverage again
month by month instead of pulling the whole dataset as changed rows.

A real simulator process with ``--admin`` reloads (``{"reload": true}``, with a few content
changes, deletions and additions in the same call) between runs of the real command; the
lake is compared with the truth row by row.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harvester.jobs.decision import ChangedDecision, decide_changed, reload_requests
from harvester.sim.testing import SimHandle, run_simulator_process
from harvester.storage.state import HarvestState
from harvester.storage.store import Lake
from tests.support.cli import cli, ok, printed_report
from tests.support.harvest import WINDOW, harvest_cmd, harvest_env, run_harvest
from tests.support.lakecheck import assert_lake_equals_truth, read_lake

# Four months, so a reload has months to be killed between.
RANGE = ("--start", "2019-01-01", "--end", "2019-04-30")
RUN_JSON = Path("_harvest", "refresh", "run.json")


def refresh(url: str, out: str, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    args = ("refresh", "--api-url", url, "--out", out, "--rate", "0", *extra)
    return cli(*args, env=harvest_env(**env))


@pytest.fixture()
def harvested(tmp_path: Path) -> Iterator[tuple[SimHandle, str]]:
    """A fresh simulator and a lake harvested from it, for one test to reload and refresh."""
    out = str(tmp_path / "lake")
    with run_simulator_process(
        "--records", "8000", *RANGE, "--max-window", WINDOW, "--seed", "31", "--admin"
    ) as sim:
        ok(run_harvest(sim.url, out))
        yield sim, out


def test_the_threshold_tells_a_reload_from_a_daily_refresh() -> None:
    def check(changed: int, lake: int, share: float = 0.5) -> ChangedDecision:
        return decide_changed("2019-06-01T00:00:00", changed, (), {}, None, lake, share)

    assert not check(120, 100_000).is_reload  # a day's changes
    assert not check(49_999, 100_000).is_reload
    assert check(50_000, 100_000).is_reload
    assert check(100_500, 100_000).is_reload  # everything re-stamped, and some rows added
    assert not check(5_000, 0).is_reload  # nothing held yet: nothing to reload
    assert check(10, 100_000, share=0.0).is_reload  # 0: always month by month
    # The cost: a page per 1000 rows of the larger count, two counts a month.
    assert reload_requests(100_500, 100_000, months=12, page_size=1000) == 101 + 24


def test_a_reload_is_fetched_month_by_month_and_then_is_not_fetched_again(
    harvested: tuple[SimHandle, str],
) -> None:
    sim, out = harvested
    lake = Lake.open(out)

    # A daily refresh is not a reload.
    sim.mutate(add=40, modify=15, seed=1)
    daily = printed_report(ok(refresh(sim.url, out)))
    assert daily["extra"]["reload"] is None
    assert not any("reload" in event for event in daily["events"])
    assert_lake_equals_truth(lake, sim.truth())

    summary = sim.mutate(reload=True, modify=6, delete=5, add=30, seed=2)
    assert summary["reloaded"] is True
    truth = sim.truth()
    assert {row["createDateTime"] for row in truth} == {summary["stamp"]}

    result = refresh(sim.url, out)
    report = printed_report(ok(result))
    reload = report["extra"]["reload"]
    assert reload is not None, report["extra"]
    assert reload["changed_rows"] == len(truth) and reload["lake_rows"] > 0
    months = {row["submissionDate"][:7] for row in truth}  # added rows reach into May
    assert reload["months_fetched"] == len(months) == 5
    assert reload["months_done"] == reload["months"]
    assert reload["estimated_requests"] > len(truth) // 100
    assert "the source reloaded" in result.stderr  # the warning, naming the cost
    assert (
        "requests" in result.stderr and f"{reload['changed_rows']:,} rows changed" in result.stderr
    )
    assert any(e.startswith("reload: the source reloaded") for e in report["events"])
    assert f"reload: {len(truth):,} of the lake's" in result.stdout  # the closing summary
    assert report["extra"]["rows_updated"] >= len(truth) - 30  # every row has a new stamp
    assert report["extra"]["rows_deleted"] == 5 and report["extra"]["rows_added"] == 30
    assert report["extra"]["days_repaired"] == {} and "reconcile_window" not in report["extra"]
    assert not (Path(out) / RUN_JSON).exists()
    assert_lake_equals_truth(lake, truth)

    # The next refresh re-reads the reload's stamp through its lookback: the lake holds
    # those rows already, so the load is left out by one count, and nothing is fetched.
    again = refresh(sim.url, out)
    second = printed_report(ok(again))
    assert second["extra"]["reload"] is None, second["extra"]
    assert second["extra"]["excluded_loads"] == [summary["stamp"]]
    assert second["extra"]["no_op"] is True
    assert "the source reloaded" not in again.stderr
    assert second["rows_written"] == 0 and second["requests"] < report["requests"] // 3
    assert_lake_equals_truth(lake, truth)


DATA_MONTHS = ("2019-01", "2019-02", "2019-03", "2019-04", "2019-05")  # "add" reaches May


def _months_done(out: str) -> list[str]:
    """The months of RANGE a running reload has committed (the empty months after them,
    up to today's, are done at once by one count)."""
    try:
        data: dict[str, Any] = json.loads((Path(out) / RUN_JSON).read_text())
    except (OSError, ValueError):
        return []
    return [m for m in data.get("months_done") or [] if m in DATA_MONTHS]


def test_a_reload_killed_between_months_resumes_at_the_next_and_equals_truth(
    harvested: tuple[SimHandle, str],
) -> None:
    sim, out = harvested
    summary = sim.mutate(reload=True, modify=8, delete=6, add=25, late=10, seed=3)
    truth = sim.truth()
    cmd = harvest_cmd(sim.url, out, "--rate", "30", "--concurrency", "1")
    cmd[cmd.index("harvest")] = "refresh"
    proc = subprocess.Popen(
        cmd, env=harvest_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and len(_months_done(out)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the reload finished before it could be killed: slow it down"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _months_done(out)
    assert 2 <= len(done) < len(DATA_MONTHS), done  # killed in the middle of the reload

    # Readable meanwhile: the months committed hold the truth's rows, newly stamped.
    lake = Lake.open(out)
    in_done = [r for r in read_lake(lake) if r["submissionDate"].isoformat()[:7] in done]
    want = {d["id"] for d in truth if d["submissionDate"][:7] in done}
    assert sorted(r["id"] for r in in_done) == sorted(want)
    stamp = dt.datetime.fromisoformat(summary["stamp"])
    assert {r["createDateTime"] for r in in_done} == {stamp}

    result = refresh(sim.url, out)
    report = printed_report(ok(result))
    assert any(e.startswith("resumed refresh") for e in report["events"]), report["events"]
    assert any(e.startswith("resumed reload: ") for e in report["events"])
    reload = report["extra"]["reload"]
    assert reload["months_done"] == reload["months"]
    assert reload["months_fetched"] == len(DATA_MONTHS)  # over both runs: each once
    assert_lake_equals_truth(lake, truth)
    assert not (Path(out) / RUN_JSON).exists()


def test_a_reload_that_would_empty_days_counts_them_again_and_drops_them_in_the_run(
    harvested: tuple[SimHandle, str],
) -> None:
    """Three rows in five gone in a reload: every day loses more than drop_share of its
    rows, so each is counted again after its month is fetched; the counts agree, so the
    rows go in the same run (no pending drop, no second refresh needed)."""
    sim, out = harvested
    total = len(sim.truth())
    sim.mutate(reload=True, delete=total * 3 // 5, seed=4)
    truth = sim.truth()
    report = printed_report(ok(refresh(sim.url, out, HARVESTER_RELOAD_SHARE="0.3")))
    assert report["extra"]["reload"] is not None
    assert report["extra"]["days_held"] == {}
    assert report["extra"]["rows_deleted"] == total * 3 // 5
    assert_lake_equals_truth(Lake.open(out), truth)
    assert not (Path(out) / "_harvest" / "pending-drops.json").exists()


def test_plan_shows_that_the_next_refresh_is_a_reload_and_its_cost(
    harvested: tuple[SimHandle, str],
) -> None:
    sim, out = harvested
    # Unlimited rate: at the default 4 requests/s plan's own probes and counts would take
    # ~12 s a run. The time at a rate (requests / rate) is shown by plan's own tests.
    args = ("plan", "--api-url", sim.url, "--out", out, "--rate", "0")
    plain = json.loads(ok(cli(*args, "--json")))
    assert "reload" not in plain["what"]
    sim.mutate(reload=True, seed=5)
    text = ok(cli(*args))
    plan = json.loads(ok(cli(*args, "--json")))
    assert plan["what"].startswith("refresh that is a reload: 8,000 rows changed since")
    assert plan["rows"] == 8000 and plan["fetch_requests"] == 80
    assert plan["check_requests"] == 2 * int(plan["what"].split("(")[-1].split()[0])
    assert "month counts (a reload)" in text


def test_the_reload_bench_scenario_checks_and_measures_both_refreshes(tmp_path: Path) -> None:
    """Scenario 8 on a tiny corpus: correctness of its code path only, never its figures."""
    pytest.importorskip("psutil")
    pytest.importorskip("duckdb")
    from bench import report
    from bench.scenarios import Bench, Sizes, scenario_reload_rss

    sizes = replace(Sizes.quick(), reload_records=5000)
    outcome = scenario_reload_rss(Bench(tmp_path, sizes, log=lambda _: None))
    runs = outcome["runs"]
    assert [r["step"] for r in runs] == ["reload", "refresh"]
    assert all(r["ok"] for r in runs), [r["problems"] for r in runs]
    assert runs[0]["months_fetched"] == runs[0]["months"] == 12
    # The refresh after it leaves the reload's load out (one count): no reload, no row.
    assert runs[1]["reload"] == {} and runs[1]["rows_written"] == 0
    assert all(t["met"] is not None for t in outcome["targets"])
    assert "| refresh | wall s |" in "\n".join(report.render_scenario("reload_rss", outcome))


def test_a_run_json_written_before_reloads_still_parses(tmp_path: Path) -> None:
    old = {
        "run_id": "20260101T000000Z-refresh-abcdef",
        "since": "2019-04-01T00:00:00",
        "phase": "merge-days",
        "repair_days": {"2019-01-02": "lake has 3 rows, service 2"},
        "stats": {},
        "partitions_rewritten": ["year=2019/month=1"],
        "kind": "refresh",
        "watermark": "2019-04-03T00:00:00",
    }
    lake = Lake.open(str(tmp_path / "lake"))
    lake.write_bytes(str(RUN_JSON), json.dumps(old).encode())
    run = HarvestState(lake).load_refresh_run()
    assert run is not None and run.phase == "merge-days" and run.watermark == old["watermark"]
    assert run.reload_span is None and run.months_done == [] and run.lake_months == {}
