"""Progress that fits (issue 21, item 3): the terminal line keeps what is being done,
shards done of total, the rate and the ETA at 80 columns and drops detail first; planning
shows its own progress; shards planned empty are not counted as work done; the ETA comes
from rates observed over a recent window, not from the time since the program started."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from harvester.jobs.harvest import planned_empty
from harvester.progress import (
    LineProgress,
    Progress,
    RateMeter,
    RichProgress,
    fit,
    line_pieces,
    progress_line,
    progress_text,
)
from harvester.sim.testing import run_simulator_process
from harvester.storage.shard import Shard
from harvester.storage.state import ShardMarker
from tests.support.harvest import harvest_cmd, harvest_env


class Clock:
    """A clock the test moves: rates are measured by it."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def busy_run(clock: Clock) -> Progress:
    """A run 30 s into its fetching: 141 shards, 93 planned empty, 12 of 48 fetched, with a
    failure, 429s and retries, and the 117 requests of the client."""
    progress = Progress(clock=clock)
    requests = [0]
    progress.bind_stats(lambda: (requests[0], 4, 9))
    clock.now += 8  # probing and planning
    requests[0] = 40
    progress.start(141, 93, 0)
    progress.planned_empty(93)
    for _ in range(12):
        clock.now += 2.5
        requests[0] += 6
        progress.shard_finished(1_500)
    progress.shard_finished(0, failed=True)
    return progress


def test_the_line_at_80_columns_keeps_label_count_rate_and_eta() -> None:
    clock = Clock()
    progress = busy_run(clock)
    f = progress.figures()
    line = progress_line(f, 80, "harvest")
    assert len(line) <= 80, line
    assert line.startswith("harvest ")
    assert "12/48 shards" in line, line  # done of total, the planned-empty months apart
    assert re.search(r"eta \d+:\d\d:\d\d", line), line
    assert re.search(r"[\d,]+ rows/s", line), line
    assert "failed 1" in line  # a failure is not detail
    assert "…" not in line and "..." not in line
    # Detail is what goes: at 80 columns, the elapsed time and the fetches count.
    assert "elapsed" not in line and "fetched" not in line
    wide = progress_line(f, 200, "harvest")
    for detail in ("elapsed", "fetched 12", "93 planned empty", "retries 9", "429s 4", "req/s"):
        assert detail in wide, (detail, wide)
    # Narrower still, the ETA and the count stay longest.
    narrow = progress_line(f, 36, "harvest")
    assert len(narrow) <= 36 and "12/48 shards" in narrow and "eta" in narrow, narrow


@pytest.mark.parametrize("width", [200, 120, 100, 80, 60, 40, 24, 10, 3])
def test_the_line_never_exceeds_the_width(width: int) -> None:
    f = busy_run(Clock()).figures()
    segments = fit(line_pieces(f, "refresh"), width)
    assert sum(len(text) for text, _ in segments) <= width


def test_zero_counters_go_before_anything_else() -> None:
    progress = Progress(clock=Clock())
    progress.start(10, 0, 0)
    progress.shard_finished(10)
    f = progress.figures()
    # Room for all but one piece: a zero counter is left out, not the bar or the rows.
    full = progress_line(f, 500, "harvest")
    assert "retries 0" in full and "failed 0" in full
    line = progress_line(f, 80, "harvest")
    assert "failed 0" not in line and "1/10 shards" in line and "━" in line


def test_the_rich_line_at_80_columns_is_laid_out_not_ellipsised() -> None:
    clock = Clock()
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80, color_system=None)
    progress = RichProgress(console=console, label="harvest", clock=clock)
    progress.bind_stats(lambda: (117, 0, 0))
    progress.start(141, 93, 0)
    progress.planned_empty(93)
    for _ in range(3):
        clock.now += 2
        progress.shard_finished(500)
    text = progress.render(80)
    # 3 shards in 6 s: 45 pending at 0.5/s.
    assert text.cell_len <= 80 and "3/48 shards" in text.plain and "eta 0:01:30" in text.plain
    progress.stop()
    progress.stop()  # a second stop draws nothing more
    # The last frame on the "terminal": the same line, whole.
    last = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()).splitlines()[-1]
    assert last.strip() == text.plain.strip() and len(last) <= 80, repr(last)
    assert "…" not in out.getvalue()


def test_planning_shows_counts_and_months() -> None:
    clock = Clock()
    requests = [12]  # the probe's requests, before the months are counted
    stream = io.StringIO()
    progress = LineProgress(interval=60, stream=stream, clock=clock)
    progress.bind_stats(lambda: (requests[0], 0, 0))
    progress.planning(92)
    requests[0] = 57
    clock.now += 3
    f = progress.figures()
    assert (f["plan_months"], f["plan_counts"]) == (92, 45)
    assert progress_text(f).startswith("planning: 45 counts, 92 months, requests 57")
    line = progress_line(f, 80, "harvest")
    assert line.startswith("harvest  planning: 45 counts, 92 months") and len(line) <= 80
    progress.stop()
    assert "planning: 45 counts, 92 months" in stream.getvalue()


def test_planned_empty_shards_are_not_counted_as_done() -> None:
    progress = Progress(clock=Clock())
    progress.start(141, 93, 0)  # a new lake: 93 months up to today count 0
    progress.planned_empty(93)
    f = progress.figures()
    assert (f["work_done"], f["work_total"], f["shards_pending"]) == (0, 48, 48)
    text = progress_text(f)
    assert text.startswith("shards 0/48 done (0 fetched by this run), 0 failed, 93 planned empty")
    assert "93/141" not in text and "0/48 shards" in progress_line(f, 80, "harvest")
    # The vocabulary's totals (report, status) keep them: the end agrees with the markers.
    assert (f["shards_total"], f["shards_done"]) == (141, 93)
    for _ in range(48):
        progress.shard_finished(10)
    f = progress.figures()
    assert (f["work_done"], f["work_total"], f["shards_done"], f["eta_s"]) == (48, 48, 141, 0)


def test_which_leaves_are_planned_empty() -> None:
    jan = Shard(*_month(1)).with_expected(500)
    feb = Shard(*_month(2)).with_expected(0)
    mar = Shard(*_month(3)).with_expected(0)
    apr = Shard(*_month(4)).with_expected(0)
    undated = Shard(jan.first, apr.last, undated=True).with_expected(0)
    markers = {
        jan.key: ShardMarker(jan.key, "done", rows=500),
        mar.key: ShardMarker(mar.key, "done", rows=0),  # committed empty by an earlier run
        apr.key: ShardMarker(apr.key, "done", rows=3),  # the closing check found rows there
    }
    # feb (no marker yet) and mar are empty; the undated shard is always fetched: work.
    assert planned_empty([jan, feb, mar, apr, undated], markers) == 2


def _month(month: int) -> tuple[dt.date, dt.date]:
    first = dt.date(2019, month, 1)
    last = (first + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
    return first, last


def test_rate_meter_measures_a_recent_window() -> None:
    meter = RateMeter(window=60, min_span=2)
    assert meter.rate(0) is None  # nothing observed
    meter.add(0, 0)
    assert meter.rate(1) is None  # less than min_span observed: no rate yet
    for t in range(10, 101, 10):  # 1 shard every 10 s for 100 s
        meter.add(t, t / 10)
    assert meter.rate(100) == pytest.approx(0.1)
    for t in range(102, 121, 2):  # then 1 every 2 s: the window follows, not the average
        meter.add(t, 10 + (t - 100) / 2)
    assert meter.rate(120) == pytest.approx((20 - 6) / (120 - 60))
    # Nothing more ends: the rate falls, it does not stand still.
    late = meter.rate(400)
    assert late is not None and late < 0.1
    # A slow run (one end every 5 minutes) keeps a rate though samples are older than the window.
    slow = RateMeter(window=60, min_span=2)
    slow.add(0, 0)
    slow.add(300, 1)
    slow.add(600, 2)
    assert slow.rate(610) == pytest.approx(1 / 310)


def test_the_eta_comes_from_observed_rates_not_from_the_start() -> None:
    clock = Clock()
    progress = Progress(clock=clock)
    progress.bind_stats(lambda: (0, 0, 0))
    clock.now += 120  # two minutes of probing and planning: no part of the fetch rate
    progress.start(50, 0, 0)
    assert progress.figures()["eta_s"] is None  # nothing measured yet
    for _ in range(10):  # 10 shards in 10 s
        clock.now += 1
        progress.shard_finished(100)
    f = progress.figures()
    # 40 pending at 1 shard/s; the old guess (time since start / fetched) said 520 s.
    assert f["eta_s"] == 40 and f["rows_per_s"] == pytest.approx(100.0)
    # The pace drops to 1 shard per 10 s: after a window of it, the ETA follows.
    for _ in range(7):
        clock.now += 10
        progress.shard_finished(100)
    f = progress.figures()
    assert f["shards_pending"] == 33
    assert f["eta_s"] == pytest.approx(33 * 10, rel=0.15), f["eta_s"]
    # A stall: no end for an hour. The rate falls with it, so the ETA grows instead of
    # standing at what it said an hour ago.
    before = f["eta_s"]
    clock.now += 3_600
    assert progress.figures()["eta_s"] > 10 * before


def test_a_new_lake_with_empty_months_counts_only_the_work(tmp_path: Path) -> None:
    """The harvest's own progress lines: months the service holds nothing of are planned
    empty and shown apart, never as shards done before any fetch."""
    with run_simulator_process(
        "--records", "400", "--start", "2019-01-01", "--end", "2019-01-31", "--seed", "5"
    ) as sim:
        env = harvest_env(HARVESTER_PROGRESS_INTERVAL="0.05")
        del env["HARVESTER_QUIET"]
        cmd = harvest_cmd(
            sim.url, str(tmp_path / "lake"), "--from", "2019-01-01", "--to", "2019-06-30",
            "--log-format", "json",
        )  # fmt: skip
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stderr.splitlines()]
    lines = [r for r in records if r.get("event") == "progress" and not r["planning"]]
    assert lines, run.stderr
    for line in lines:
        # February to June are empty: 5 shards, never counted as work done.
        assert line["shards_empty"] == 5, line
        assert line["work_done"] <= line["shards_fetched"], line
        assert line["work_total"] == line["shards_total"] - 5
        assert "5 planned empty" in line["message"]
    last = lines[-1]
    assert last["work_done"] == last["work_total"] > 0
    assert last["shards_done"] == last["shards_total"]  # the report's and status' counts
