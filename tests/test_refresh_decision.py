"""One refresh decision, and the findings of the season issue that single-feature tests
missed: a refresh after a reload fetches what changed since (finding 1); a reload's files
are the harvester's own (2); ``plan`` prints what the refresh then does (6); ``verify
--repair`` works with verify's own client, not a second probe (6); a deletion goes in the
run that counts it (4). Each against a real simulator, the lake compared row by row.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harvester.jobs.decision import (
    ChangedScope,
    StampFacts,
    confirm_drops,
    decide_changed,
    decide_exclusions,
    decide_repairs,
    month_verdict,
    settled,
)
from harvester.sim.testing import SimHandle, run_simulator_process
from harvester.storage.state import PendingDrop
from harvester.storage.store import Lake
from tests.support.cli import cli, ok, printed_report
from tests.support.harvest import WINDOW, harvest_env, run_harvest
from tests.support.lakecheck import assert_lake_equals_truth

RANGE = ("--start", "2019-01-01", "--end", "2019-02-28")


def refresh(url: str, out: str, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ("refresh", "--api-url", url, "--out", out, "--rate", "0", *extra)
    return cli(*args, env=harvest_env())


def verify(url: str, out: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("verify", "--api-url", url, "--out", out, "--rate", "0", *extra)


@pytest.fixture()
def harvested(tmp_path: Path) -> Iterator[tuple[SimHandle, str]]:
    out = str(tmp_path / "lake")
    with run_simulator_process(
        "--records", "5000", *RANGE, "--max-window", WINDOW, "--seed", "61", "--admin"
    ) as sim:
        ok(run_harvest(sim.url, out))
        yield sim, out


# -- the pure decisions ---------------------------------------------------------------------
def test_a_load_the_lake_holds_is_left_out_only_when_the_service_proves_it() -> None:
    facts = StampFacts("2026-11-28T00:00:00", {"2026-11-29T01:02:03": 5000, "x": 10}, 5000)
    assert facts.bulk(2000) == ["2026-11-29T01:02:03"]
    # The service holds as many or fewer rows of that load (some changed since): left out.
    assert decide_exclusions(facts, {"2026-11-29T01:02:03": 4700}) == ("2026-11-29T01:02:03",)
    # More than the lake: some of the load is missing from the lake, so it is fetched.
    assert decide_exclusions(facts, {"2026-11-29T01:02:03": 5001}) == ()
    scope = ChangedScope("2026-11-28T00:00:00", ("2026-11-29T01:02:03",))
    assert scope.query("{stamp}") == (
        "createDateTime:[2026-11-28T00:00:00 TO 2026-11-29T01:02:03}"
        " OR createDateTime:{2026-11-29T01:02:03 TO *]"
    )
    # The narrowed query's count must be the window's less the load's, or nothing is left out.
    proven = decide_changed("s", 5400, ("l",), {"l": 4700}, 700, 5000, 0.5)
    assert proven.scope.excluded == ("l",) and proven.changed == 700 and not proven.is_reload
    refused = decide_changed("s", 5400, ("l",), {"l": 4700}, 0, 5000, 0.5)
    assert refused.scope.excluded == () and refused.changed == 5400 and refused.is_reload
    assert refused.notes  # said in the report


def test_drops_are_confirmed_by_counts_that_agree_within_the_run() -> None:
    differing = {dt.date(2019, 1, 2): (10, 0), dt.date(2019, 1, 3): (10, 9)}
    repairs = decide_repairs(differing, {}, 0.25)
    assert set(repairs.repair) == {"2019-01-03"} and repairs.suspects == {"2019-01-02": [10, 0]}
    # An earlier run's pending drop with the same count confirms it at once.
    earlier = {"2019-01-02": PendingDrop(10, 0, "2026-11-30T00:00:00Z", "r1")}
    assert "2019-01-02" in decide_repairs(differing, earlier, 0.25).repair
    assert settled([0, 0]) == 0 and settled([0, 10, 10]) == 10 and settled([0, 10, 3]) is None
    assert settled([2, 0, 2]) == 2  # a transient empty answer at the second asking
    now = "2026-12-01T00:00:00Z"
    agreed = confirm_drops({"d": [10, 0]}, {"d": [0]}, "r", now)
    assert set(agreed.repair) == {"d"} and agreed.counts == {"d": 0} and not agreed.pending
    transient = confirm_drops({"d": [10, 0]}, {"d": [10, 10]}, "r", now)
    assert not transient.repair and not transient.held  # the first answer was the odd one
    unsettled = confirm_drops({"d": [10, 0]}, {"d": [10, 4]}, "r", now)
    assert set(unsettled.held) == {"d"} and unsettled.pending["d"].service == 4
    # A reload's fetched rows are replaced only when the counts settle on what was fetched.
    fetched = confirm_drops({"d": [10, 0]}, {"d": [10, 10]}, "r", now, fetched=True)
    assert not fetched.repair and "d" not in fetched.held
    assert set(confirm_drops({"d": [10, 0]}, {"d": [4, 4]}, "r", now, fetched=True).held) == {"d"}
    assert month_verdict(0, 100, 100).fetch is False and month_verdict(3, None, 100).fetch


# -- against the simulator -------------------------------------------------------------------
def test_a_refresh_after_a_reload_fetches_what_changed_since_and_verify_agrees(
    harvested: tuple[SimHandle, str],
) -> None:
    """Finding 1: harvest, reload, refresh, modify 300 and add 100, refresh: the 300
    modified rows stayed stale with exit 0, and verify named 41 days. Finding 2: verify
    after a reload named every reloaded file "not written by the harvester"."""
    sim, out = harvested
    reload = sim.mutate(reload=True, seed=1)
    first = printed_report(ok(refresh(sim.url, out)))
    assert first["extra"]["reload"] is not None
    assert_lake_equals_truth(Lake.open(out), sim.truth())
    files = [p.name for p in Path(out).glob("year=*/month=*/*.parquet")]
    assert files and all("-reload-" in name for name in files)  # the reload's own names
    ok(verify(sim.url, out))  # finding 2: its files are its own

    sim.mutate(modify=300, add=100, seed=2)
    second = printed_report(ok(refresh(sim.url, out)))
    extra = second["extra"]
    assert extra["reload"] is None and extra["excluded_loads"] == [reload["stamp"]]
    assert (extra["rows_updated"], extra["rows_added"]) == (300, 100)
    assert_lake_equals_truth(Lake.open(out), sim.truth())
    ok(verify(sim.url, out))


def test_plan_prints_what_the_refresh_then_does(harvested: tuple[SimHandle, str]) -> None:
    """Finding 6: plan re-implemented the refresh's decision and had drifted from it. Days
    that differ only by deletions (modifications keep every count) are decided the same
    before and after the merge, so plan and refresh agree on days, shards and requests."""
    sim, out = harvested
    sim.mutate(modify=150, delete=25, seed=3)
    plan = json.loads(
        ok(cli("plan", "--api-url", sim.url, "--out", out, "--rate", "0", "--json", "--shards"))
    )
    report = printed_report(ok(refresh(sim.url, out)))
    days = {s["key"] for s in plan["shard_list"] if "/" not in s["key"] and ".." not in s["key"]}
    days = {d for d in days if len(d) == 10}
    assert days == set(report["extra"]["days_repaired"]) != set()
    assert plan["requests"] == report["requests"], (plan, report["requests"])
    assert plan["rows"] == report["extra"]["rows_fetched"]
    assert_lake_equals_truth(Lake.open(out), sim.truth())


def test_verify_repair_uses_verifys_client_and_profile(harvested: tuple[SimHandle, str]) -> None:
    """Finding 6: ``verify --repair`` built a second refresher that opened a client of its
    own and proved the service again. Now one client serves both: the simulator's count of
    requests is verify's, and the repair's report names the profile as reused."""
    sim, out = harvested
    sim.mutate(delete=12, seed=4)
    before = sim.stats()["requests"]
    result = verify(sim.url, out, "--repair")
    ok(result)
    mine = printed_report(result.stdout)
    assert sim.stats()["requests"] - before == mine["requests"]
    repair_path = mine["extra"]["repair_report"]
    repair: dict[str, Any] = json.loads(Path(repair_path).read_text())
    assert repair["extra"]["service"]["probed_now"] is False
    assert 0 < repair["requests"] < mine["requests"]
    assert repair["extra"]["rows_deleted"] == 12
    assert_lake_equals_truth(Lake.open(out), sim.truth())


def test_deletions_go_in_the_refresh_that_counts_them(harvested: tuple[SimHandle, str]) -> None:
    """Finding 4: a day losing all or most of its rows waited for the next refresh's count,
    so after a normal refresh the lake still held deleted rows."""
    sim, out = harvested
    truth = sim.truth()
    day = truth[0]["submissionDate"][:10]
    on_day = sum(1 for d in truth if d["submissionDate"][:10] == day)
    # Every row deleted everywhere but a few: each day loses most of its rows.
    sim.mutate(delete=len(truth) - 40, seed=5)
    report = printed_report(ok(refresh(sim.url, out, "--reconcile-days", "0")))
    assert report["extra"]["days_held"] == {}
    assert report["extra"]["rows_deleted"] == len(truth) - 40
    assert on_day > 0
    assert_lake_equals_truth(Lake.open(out), sim.truth())
    assert not (Path(out) / "_harvest" / "pending-drops.json").exists()
