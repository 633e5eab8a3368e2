"""The change feed and the report of a resumed refresh: what a refresh added, updated and
deleted, id by id, equals the truth's difference however the run was stopped and resumed.

A real simulator process is mutated between harvest and refresh; the refresh is stopped
(SIGKILL at a random moment, or Ctrl-C once it reconciles) and the same command run again.
The feed is read three ways: ``harvester changes --json``, ``--parquet``, and the DuckDB
query docs/querying.md prints.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harvester.sim.testing import SimHandle, run_simulator_process
from harvester.storage import changes
from harvester.storage.state import HarvestState
from harvester.storage.store import Lake
from tests.support.cli import cli, ok, printed_report, reports
from tests.support.harvest import WINDOW, harvest_env, refresh_cmd, refresh_phase, run_harvest
from tests.support.lakecheck import assert_lake_equals_truth, expected_row, is_decodable
from tests.support.sharedsim import ReadOnlySim

RANGE = ("--start", "2019-01-01", "--end", "2019-03-31")
RUN_JSON = Path("_harvest", "refresh", "run.json")
KINDS = ("added", "updated", "deleted")


def _truth(sim: SimHandle) -> dict[str, Any]:
    return {d["id"]: expected_row(d) for d in sim.truth() if is_decodable(d)}


def _diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, set[str]]:
    common = before.keys() & after.keys()
    return {
        "added": set(after) - set(before),
        "updated": {i for i in common if before[i] != after[i]},
        "deleted": set(before) - set(after),
    }


def _refresh(url: str, out: str, *extra: str) -> list[str]:
    return refresh_cmd(url, out, "--reconcile-days", "0", *extra)


def _feed(out: str, *extra: str) -> dict[str, set[str]]:
    lines = ok(cli("changes", "--out", out, "--json", *extra)).splitlines()
    got: dict[str, set[str]] = {k: set() for k in KINDS}
    for line in lines:
        row = json.loads(line)
        got[row["change"]].add(row["id"])
    return got


@pytest.fixture()
def lake(tmp_path: Path) -> Iterator[tuple[SimHandle, str]]:
    out = str(tmp_path / "lake")
    with run_simulator_process(
        "--records", "6000", *RANGE, "--max-window", WINDOW, "--seed", "51", "--admin"
    ) as sim:
        ok(run_harvest(sim.url, out))
        yield sim, out


def test_a_sigkilled_refresh_run_again_feeds_exactly_the_truths_difference(
    lake: tuple[SimHandle, str], tmp_path: Path
) -> None:
    sim, out = lake
    before = _truth(sim)
    sim.mutate(add=300, late=150, modify=400, delete=90, reorder=True, seed=3)
    after = _truth(sim)
    want = _diff(before, after)
    assert all(want.values())
    proc = subprocess.Popen(
        _refresh(sim.url, out, "--rate", "20", "--concurrency", "1"),
        env=harvest_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while refresh_phase(out) not in ("reconcile", "confirm-drops", "merge"):
        assert proc.poll() is None and time.monotonic() < deadline, "it ended before the kill"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # its changed rows fetched, the feed not yet whole
    proc.wait()
    running = json.loads((Path(out) / RUN_JSON).read_text())["run_id"]
    # A run in progress is left out: its feed is whole only once it ends.
    assert _feed(out) == {k: set() for k in KINDS}
    assert f"run {running} is still in progress" in ok(cli("changes", "--out", out))

    result = subprocess.run(
        _refresh(sim.url, out), env=harvest_env(), capture_output=True, text=True, check=False
    )
    report = printed_report(ok(result))
    assert_lake_equals_truth(Lake.open(out), sim.truth())
    assert report["run_id"] == running  # the same run, finished
    assert {k: report["extra"][f"rows_{k}"] for k in KINDS} == {k: len(v) for k, v in want.items()}
    assert _feed(out) == want
    # --since a run: the runs after it (none); --since a day: the runs begun on it or later.
    assert _feed(out, "--since", running) == {k: set() for k in KINDS}
    assert _feed(out, "--since", running[:4] + "-" + running[4:6] + "-" + running[6:8]) == want
    # --parquet: one file, the same ids.
    path = tmp_path / "changes.parquet"
    ok(cli("changes", "--out", out, "--parquet", str(path)))
    table = pq.read_table(path)
    assert {k: {r["id"] for r in table.to_pylist() if r["change"] == k} for k in KINDS} == want

    # The docs' DuckDB query over the feed (docs/querying.md, "The change feed").
    duckdb = pytest.importorskip("duckdb")
    rows = duckdb.sql(
        f"SELECT change, id FROM read_parquet('{out}/_harvest/changes/*/*.pq')"
        f" WHERE run_id > '{running[:16]}'"
    ).fetchall()
    assert {k: {i for c, i in rows if c == k} for k in KINDS} == want


def test_a_refresh_interrupted_in_reconcile_reports_all_its_work_when_resumed(
    lake: tuple[SimHandle, str],
) -> None:
    """Finding 5 of the season issue: the resumed run's report said ``rows_added 0,
    rows_updated 0, rows_deleted 300``; the interrupted run's merge was recorded nowhere.
    (Since one merge a refresh, nothing is merged before reconciling: the interrupted run's
    report says so, and the resumed run's counts every row.)"""
    sim, out = lake
    before = _truth(sim)
    sim.mutate(add=300, late=50, modify=200, delete=30, seed=4)
    want = _diff(before, _truth(sim))
    proc = subprocess.Popen(
        _refresh(sim.url, out, "--rate", "20", "--concurrency", "1"),
        env=harvest_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while refresh_phase(out) != "reconcile":
        assert proc.poll() is None and time.monotonic() < deadline, "it ended before Ctrl-C"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    (interrupted,) = reports(Path(out), "refresh")  # its report, saved on the way out
    assert interrupted["status"] == "interrupted"
    # Its changed rows are staged, not merged: its report counts no row as changed yet.
    assert {k: interrupted["extra"][f"rows_{k}"] for k in KINDS} == dict.fromkeys(KINDS, 0)

    result = subprocess.run(
        _refresh(sim.url, out), env=harvest_env(), capture_output=True, text=True, check=False
    )
    report = printed_report(ok(result))
    assert report["run_id"] == interrupted["run_id"]
    assert {k: report["extra"][f"rows_{k}"] for k in KINDS} == {k: len(v) for k, v in want.items()}
    # The run's requests over both processes: the interrupted one's are counted too.
    assert report["extra"]["run_requests"] >= interrupted["requests"] + report["requests"]
    assert_lake_equals_truth(Lake.open(out), sim.truth())


def test_changes_bad_input_gets_one_line_and_an_exit_code(
    shared_sim: ReadOnlySim, tmp_path: Path
) -> None:
    empty = tmp_path / "none"
    result = cli("changes", "--out", str(empty))
    assert result.returncode == 4 and "Traceback" not in result.stderr
    lake = tmp_path / "lake"
    ok(run_harvest(shared_sim.url, str(lake)))
    assert "no changes recorded" in ok(cli("changes", "--out", str(lake)))
    for args in (("--since", "last tuesday"), ("--parquet", str(tmp_path / "no" / "x.parquet"))):
        result = cli("changes", "--out", str(lake), *args)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_feed_of_many_pieces_is_written_a_slice_at_a_time_sorted_and_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A merge's feed is one piece per rewritten file and kind; the write sorts positions,
    # not the rows, and copies one slice at a time (``_SLICE`` rows, here 7).
    monkeypatch.setattr(changes, "_SLICE", 7)
    state = HarvestState(Lake.open(str(tmp_path / "lake")))
    rng = random.Random(20)
    day, stamp = dt.datetime(2019, 7, 3), dt.datetime(2019, 7, 4, 12, 30)
    schema = changes.SCHEMA.remove(0)  # without run_id, as the merge hands it over
    pieces = [
        pa.Table.from_pylist(
            [
                {
                    "change": kind,
                    "id": f"id-{rng.randrange(10_000):05d}-{n}",
                    "submissionDate": day,
                    "createDateTime": None if kind == "deleted" and n % 2 else stamp,
                }
                for n in range(rng.randrange(1, 9))
            ],
            schema=schema,
        )
        for kind in rng.choices(changes.KINDS, k=12)
    ]
    feed = pa.concat_tables(pieces)
    assert feed.column("id").num_chunks == 12
    changes.write(state, "run-1", "year=2019/month=7", "days", feed)
    written = changes.read(state, ["run-1"])
    expected = sorted(
        ({"run_id": "run-1", **row} for row in feed.to_pylist()),
        key=lambda r: (r["change"], r["id"]),
    )
    assert written.to_pylist() == expected
    path = tmp_path / "lake" / state.change_path("run-1", "year=2019/month=7", "days")
    assert pq.ParquetFile(path).metadata.num_row_groups == -(-feed.num_rows // 7)
    assert changes.totals(state, "run-1") == {
        kind: sum(1 for row in expected if row["change"] == kind) for kind in changes.KINDS
    }
