"""``harvester plan``: the job's shards, requests and time at the rate; it writes nothing."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harvester.sim.testing import SimHandle, run_simulator_process
from tests.support.cli import cli, ok, reports, snapshot
from tests.support.harvest import DATES, RANGE, WINDOW, run_harvest


@pytest.fixture(scope="module")
def plan_sim() -> Iterator[SimHandle]:
    """One simulator shared by the module's plans (the last test mutates it)."""
    with run_simulator_process(
        "--records", "3000", *RANGE, "--max-window", WINDOW, "--seed", "41", "--admin"
    ) as handle:
        yield handle


def test_plan_of_a_new_harvest_writes_nothing_and_predicts_its_requests(
    plan_sim: SimHandle, tmp_path: Path
) -> None:
    out = tmp_path / "lake"
    args = ("plan", "--api-url", plan_sim.url, "--out", str(out), *DATES, "--rate", "400")
    text = ok(cli(*args))
    plan = json.loads(ok(cli(*args, "--json")))
    assert not out.exists(), "plan created the lake"
    assert text.startswith("plan: new harvest of 2019-01-01..2019-02-28")
    assert f"shards: {plan['shards']:,}, {plan['rows']:,} rows" in text
    assert f"requests: {plan['requests']:,} = " in text and "time at 400 requests/s:" in text
    assert plan["job"] == "harvest" and plan["rows"] == len(plan_sim.truth())
    assert plan["seconds"] == pytest.approx(plan["requests"] / 400, abs=0.1)
    listed = ok(
        cli("plan", "--api-url", plan_sim.url, "--out", str(out), *DATES, "--shards", "--rate", "0")
    )
    for shard in plan["shard_list"]:
        assert f"  {shard['key']}: {shard['rows']:,} rows, {shard['requests']} requests" in listed

    # The harvest then spends what the plan said (a calm service: nothing moves), but for
    # the pieces of months cut by id range, whose sizes are estimates: a piece's last page
    # may be one more or one fewer than estimated.
    ok(run_harvest(plan_sim.url, str(out), *DATES))
    report = reports(out, "harvest")[-1]
    estimated = sum(1 for s in plan["shard_list"] if "/id[" in s["key"])
    assert estimated > 0 and any("estimates" in note for note in plan["notes"])
    assert abs(report["requests"] - plan["requests"]) <= estimated
    assert report["shards_fetched"] == sum(1 for s in plan["shard_list"] if s["requests"] > 0)


def test_plan_of_a_harvest_under_way_lists_only_the_shards_not_done(
    plan_sim: SimHandle, tmp_path: Path
) -> None:
    out = tmp_path / "lake"
    ok(run_harvest(plan_sim.url, str(out), *DATES))
    (out / "_harvest" / "complete.json").unlink()
    markers = [
        p
        for p in sorted((out / "_harvest" / "shards").glob("*.json"))
        if json.loads(p.read_text())["rows"]
    ]
    keys = sorted(json.loads(p.read_text())["key"] for p in markers[:2])
    for path in markers[:2]:
        path.unlink()
    before, files = plan_sim.stats()["requests"], snapshot(out)
    plan = json.loads(
        ok(cli("plan", "--api-url", plan_sim.url, "--out", str(out), "--rate", "0", "--json"))
    )
    assert sorted(s["key"] for s in plan["shard_list"]) == keys
    assert "under way" in plan["what"]
    # The stored plan knows the shards: no request now; the harvest will spend one preflight.
    assert plan_sim.stats()["requests"] == before and plan["planning_requests"] == 1
    assert snapshot(out) == files


def _refresh_plan(url: str, out: Path) -> dict[str, Any]:
    """``harvester plan --json`` for a refresh of ``out`` reconciling every mail day."""
    args = ("plan", "--api-url", url, "--out", str(out), "--reconcile-days", "120")
    return dict(json.loads(ok(cli(*args, "--rate", "0", "--json"))))


def test_plan_of_a_refresh_sees_changes_and_writes_nothing(
    plan_sim: SimHandle, tmp_path: Path
) -> None:
    source = tmp_path / "lake"
    ok(run_harvest(plan_sim.url, str(source), *DATES))
    out = tmp_path / "copy"
    shutil.copytree(source, out)
    files = snapshot(out)
    quiet = _refresh_plan(plan_sim.url, out)
    assert quiet["job"] == "refresh" and "refresh of rows changed since" in quiet["what"]
    assert "0 mail days whose counts differ" in quiet["what"]

    plan_sim.mutate(delete=30, late=20, seed=7)
    changed = _refresh_plan(plan_sim.url, out)
    assert changed["rows"] > quiet["rows"] and changed["fetch_requests"] > quiet["fetch_requests"]
    assert "0 mail days" not in changed["what"]
    assert snapshot(out) == files, "plan wrote to the lake"
    # A plan for a harvest of a finished lake is empty, not an error.
    done = ok(
        cli("plan", "--api-url", plan_sim.url, "--out", str(out), "--job", "harvest", "--rate", "0")
    )
    assert "the harvest of this lake is complete" in done
