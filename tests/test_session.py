"""The run session (``jobs.session.RunSession``): a command that writes takes the lake's
lock before it sends any request, and writes nothing outside it.

A running harvest is stood in for by holding its lock from this process (``LakeLock``
with the command "harvest", our live pid): a real one would change the lake itself, and
the claim is about what the *second* command does. Requests are counted by the simulator
(``/_sim/stats``), so a request sent and refused would count too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from harvester.config import DEFAULT_DATE_TEMPLATE, Settings
from harvester.errors import EXIT_LAKE
from harvester.jobs.harvest import make_plan
from harvester.jobs.session import RunSession
from harvester.sim.testing import SimHandle, run_simulator_process
from harvester.storage.lock import LakeLock
from harvester.storage.state import LOCK
from harvester.storage.store import Lake
from tests.support.cli import cli, ok, snapshot
from tests.support.harvest import RANGE, run_harvest


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    with run_simulator_process("--records", "1500", *RANGE, "--admin") as handle:
        yield handle


@pytest.fixture()
def harvested(sim: SimHandle, tmp_path: Path) -> Path:
    out = tmp_path / "lake"
    ok(run_harvest(sim.url, str(out), "--from", "2019-01-01", "--to", "2019-01-31"))
    return out


def requests_sent(sim: SimHandle) -> int:
    return int(sim.stats()["requests"])


def held_by_a_harvest(out: Path) -> LakeLock:
    lock = LakeLock(Lake.open(str(out)), "harvest")
    lock.acquire()
    return lock


def test_a_second_harvest_into_a_new_lake_in_use_exits_4_having_sent_no_request(
    sim: SimHandle, tmp_path: Path
) -> None:
    """Two harvests started into one new lake: the second is refused before planning (it
    used to spend its planning requests first, then be refused)."""
    out = tmp_path / "lake"
    out.mkdir()
    lock = held_by_a_harvest(out)  # the first harvest, still planning
    try:
        before = requests_sent(sim)
        result = run_harvest(sim.url, str(out), "--from", "2019-01-01", "--to", "2019-01-31")
        after = requests_sent(sim)
    finally:
        lock.release()
    assert result.returncode == EXIT_LAKE, result.stdout + result.stderr
    assert "in use by `harvester harvest`" in result.stderr
    assert after == before  # not one request: not the field list, not a probe, not a count
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        result.stderr.strip()
    ]  # one line


@pytest.mark.parametrize("command", ["harvest", "refresh", "verify"])
def test_a_command_on_a_lake_in_use_exits_4_sends_nothing_and_changes_no_file(
    sim: SimHandle, harvested: Path, command: str
) -> None:
    """A finished lake that a harvest holds: ``harvest``, ``refresh`` and ``verify`` (which
    writes its report, the quota ledger and the service's profile) all stop at the lock:
    no request, and every file of the lake byte for byte as it was."""
    lock = held_by_a_harvest(harvested)
    try:
        files = snapshot(harvested)
        before = requests_sent(sim)
        result = cli(command, "--api-url", sim.url, "--out", str(harvested), "--rate", "0")
        after = requests_sent(sim)
        assert snapshot(harvested) == files
    finally:
        lock.release()
    assert result.returncode == EXIT_LAKE, result.stdout + result.stderr
    assert "in use by `harvester harvest`" in result.stderr
    assert after == before


def test_verify_once_the_lock_is_free_writes_its_report_inside_it(
    sim: SimHandle, harvested: Path
) -> None:
    """The same verify once the harvest is gone: it runs, sends its requests, and what it
    writes (its report) is there; the lock it took is gone again. So the refusal above is
    the lock's doing, not a verify that never writes."""
    runs = harvested / "_harvest" / "runs"
    reports_before = set(runs.glob("*.json"))
    before = requests_sent(sim)
    result = cli("verify", "--api-url", sim.url, "--out", str(harvested), "--rate", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert requests_sent(sim) > before
    assert len(set(runs.glob("*.json")) - reports_before) == 1
    assert not (harvested / LOCK).exists()


def test_the_proven_date_form_is_the_sessions_and_the_settings_stay_as_resolved(
    tmp_path: Path,
) -> None:
    """A service that compares dates as text: the configured form (ending in Z) misses
    rows, so the session proves another. The plan and the planner use the proven form
    (``Service.date_template``); ``Settings`` is what the user resolved, before and after
    (it used to be rebuilt with the learned form mid-run). Read-only: nothing written."""
    out = tmp_path / "lake"
    out.mkdir()
    with run_simulator_process("--records", "1500", *RANGE, "--date-field", "string") as text:
        settings = Settings(
            api_url=text.url,
            out=str(out),
            rate=0.0,
            date_from=dt.date(2019, 1, 1),
            date_to=dt.date(2019, 1, 31),
        )

        async def plan_in_session() -> tuple[str, str, str]:
            async with RunSession(settings, "plan", write=False) as session:
                plan = await make_plan(settings, session.planner, session.client, session.known)
                return (
                    session.settings.date_template,
                    session.known.date_template,
                    plan.date_template,
                )

        configured, proven, planned = asyncio.run(plan_in_session())
    assert configured == DEFAULT_DATE_TEMPLATE == settings.date_template
    assert proven != configured and planned == proven
    assert snapshot(out) == {}
