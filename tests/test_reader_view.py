"""What a reader sees while the lake is refreshed: the query docs/querying.md prints, run by
real DuckDB during a refresh's fetch, after that refresh is SIGKILLed, and all through a
reload. Each answer must be the committed rows exactly: the staging area (``_harvest/``)
is never read, and a partition is either its old rows or its new ones.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harvester.sim.testing import SimHandle, run_simulator_process
from harvester.storage.store import Lake
from tests.support.harvest import WINDOW, harvest_env, refresh_cmd, refresh_phase, run_harvest
from tests.support.lakecheck import assert_lake_equals_truth

duckdb = pytest.importorskip("duckdb")

# docs/querying.md, "Local lake": the query every example builds on.
DOCS_QUERY = (
    "SELECT id, createDateTime, year, month FROM read_parquet('{root}/**/*.parquet',"
    " hive_partitioning = true, hive_types = {{'year': INTEGER, 'month': INTEGER}})"
)
RANGE = ("--start", "2019-01-01", "--end", "2019-03-31")

Rows = dict[tuple[int, int], set[tuple[str, str]]]  # (year, month) -> {(id, stamp)}


def read(root: str) -> tuple[Rows, int]:
    """The documented query's answer by partition, and its row count (duplicates count)."""
    out: Rows = defaultdict(set)
    rows = duckdb.sql(DOCS_QUERY.format(root=root)).fetchall()
    for row_id, stamp, year, month in rows:
        out[(year, month)].add((row_id, stamp.isoformat()))
    return dict(out), len(rows)


def truth_rows(truth: list[dict[str, Any]]) -> Rows:
    out: Rows = defaultdict(set)
    for doc in truth:
        day = doc["submissionDate"]
        out[(int(day[:4]), int(day[5:7]))].add((doc["id"], doc["createDateTime"]))
    return dict(out)


def _staged(out: str) -> list[Path]:
    return list((Path(out) / "_harvest" / "refresh").rglob("*.parquet.staged"))


def _refresh(url: str, out: str, *extra: str) -> list[str]:
    return refresh_cmd(url, out, "--reconcile-days", "0", *extra)


@pytest.fixture()
def lake(tmp_path: Path) -> Iterator[tuple[SimHandle, str]]:
    out = str(tmp_path / "lake")
    with run_simulator_process(
        "--records", "6000", *RANGE, "--max-window", WINDOW, "--seed", "41", "--admin"
    ) as sim:
        result = run_harvest(sim.url, out)
        assert result.returncode == 0, result.stdout + result.stderr
        yield sim, out


def test_the_docs_query_reads_committed_rows_during_a_refresh_and_after_a_sigkill(
    lake: tuple[SimHandle, str],
) -> None:
    sim, out = lake
    before = truth_rows(sim.truth())
    count_before = sum(len(v) for v in before.values())
    sim.mutate(add=400, late=300, modify=600, delete=60, seed=7)
    proc = subprocess.Popen(
        _refresh(sim.url, out, "--rate", "6", "--concurrency", "1"),
        env=harvest_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checked = 0
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline and checked < 3:
            if refresh_phase(out) == "fetch-changed" and _staged(out):
                # Rows are staged, none merged: readers must see the lake as it was.
                assert read(out) == (before, count_before)
                checked += 1
            time.sleep(0.1)
        assert checked == 3, "the refresh left its fetch phase before it could be read"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert _staged(out), "killed in its fetch phase: staged files are left behind"
    assert read(out) == (before, count_before)  # ... and no reader sees them

    result = subprocess.run(
        _refresh(sim.url, out), env=harvest_env(), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    after = truth_rows(sim.truth())
    assert read(out) == (after, sum(len(v) for v in after.values()))
    assert_lake_equals_truth(Lake.open(out), sim.truth())


def test_the_docs_query_sees_each_month_old_or_new_all_through_a_reload(
    lake: tuple[SimHandle, str],
) -> None:
    sim, out = lake
    before = truth_rows(sim.truth())
    sim.mutate(reload=True, modify=30, delete=20, add=40, seed=8)
    after = truth_rows(sim.truth())
    proc = subprocess.Popen(
        _refresh(sim.url, out, "--rate", "40", "--concurrency", "1"),
        env=harvest_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    answers, failed, torn = 0, 0, 0
    seen_new = set()
    try:
        while proc.poll() is None:
            try:
                rows, count = read(out)
            except duckdb.IOException:
                failed += 1  # a file listed, then deleted by a swap before it was read
                continue
            answers += 1
            # Inside a swap's window (docs/querying.md: between its first publish and its
            # last delete) a listing holds old and new files together: rows read twice, or
            # a month that is the union of its two versions. Never anything else.
            both = count != sum(len(v) for v in rows.values())
            for month in before.keys() | after.keys():
                got = rows.get(month, set())
                old, new = before.get(month, set()), after.get(month, set())
                assert got <= old | new, f"rows of {month} that neither version holds"
                if got == new and got != old:
                    seen_new.add(month)
                elif got != old:
                    both = True
            torn += both
    finally:
        proc.wait(timeout=240)
    assert proc.returncode == 0
    assert answers >= 5 and len(seen_new) >= 1, (answers, seen_new)
    # The window is microseconds per file against a query's milliseconds: rare, never wrong.
    assert failed + torn <= answers // 5, (failed, torn, answers)
    assert read(out) == (after, sum(len(v) for v in after.values()))
