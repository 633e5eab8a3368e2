"""Progress: a line at a steady interval (even when no shard finishes), JSON lines for
machines, a rich bar on a terminal, nothing with --quiet; the vocabulary of shards and rows
(docs/operations.md, "Shards and rows"); and it works in a real run."""

from __future__ import annotations

import io
import json
import re
import subprocess
import time
from pathlib import Path

from rich.console import Console

from harvester.progress import LineProgress, Progress, RichProgress, make_progress, utc_stamp
from harvester.sim.testing import run_simulator_process
from tests.support.harvest import RANGE, WINDOW, harvest_cmd, harvest_env


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_line_progress_prints_on_a_clock_not_on_events() -> None:
    stream = io.StringIO()
    progress = LineProgress(interval=0.05, stream=stream)
    progress.bind_stats(lambda: (42, 3, 5))
    progress.start(10, 2, 1_000)
    time.sleep(0.4)  # no shard finishes: lines must come anyway
    progress.stop()
    progress.stop()  # a second stop prints nothing more
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 4, lines
    stamp, rest = lines[0].split(" ", 1)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", stamp), stamp
    # The rows the lake held before are not this run's: only rows written count.
    assert rest.startswith(
        "INFO harvester.progress: shards 2/10 done (0 fetched by this run), 0 failed,"
        " rows written 0 (0/s)"
    ), rest
    assert all("requests 42" in line and "retries 5, 429s 3" in line for line in lines)
    # Lines are about evenly spaced: counting them twice as long gives about twice as many.
    assert len(lines) <= 12


def test_json_lines_are_log_records_with_the_figures() -> None:
    stream = io.StringIO()
    now = [100.0]  # the clock rates are measured by: two shards end in 4 s
    progress = LineProgress(interval=60, json_lines=True, stream=stream, clock=lambda: now[0])
    progress.bind_stats(lambda: (7, 1, 2))
    progress.start(4, 0, 0)
    now[0] += 2
    progress.shard_finished(250)
    now[0] += 2
    progress.shard_finished(0, failed=True)
    progress.stop()
    (line,) = stream.getvalue().splitlines()  # interval not reached: only the final line
    record = json.loads(line)
    assert record["level"] == "info" and record["logger"] == "harvester.progress"
    assert record["event"] == "progress" and record["message"].startswith(
        "shards 1/4 done (1 fetched by this run), 1 failed, rows written 250"
    )
    assert (record["shards_done"], record["shards_failed"], record["shards_pending"]) == (1, 1, 2)
    assert record["shards_fetched"] == 1 and record["rows_written"] == 250
    assert (record["requests"], record["throttled"], record["retries"]) == (7, 1, 2)
    assert record["requests_per_s"] > 0 and record["eta_s"] == 4  # 2 pending at 0.5/s


def test_make_progress_picks_the_display() -> None:
    assert type(make_progress(True, "text", stream=Tty())) is Progress  # --quiet
    for chosen in (
        make_progress(False, "json", stream=Tty()),
        make_progress(False, "text", stream=io.StringIO()),
    ):
        assert isinstance(chosen, LineProgress)
        chosen.stop()
    rich = make_progress(False, "text", stream=Tty())
    assert isinstance(rich, RichProgress)
    rich.stop()


def test_rich_bar_shows_shards_rows_rate_retries_429s_and_eta() -> None:
    out = io.StringIO()
    progress = RichProgress(
        console=Console(file=out, force_terminal=True, width=200), label="harvest"
    )
    progress.bind_stats(lambda: (120, 4, 9))
    progress.start(8, 0, 0)
    for _ in range(3):
        progress.shard_finished(1_500)
    progress.stop()
    text = out.getvalue()
    for piece in (
        "harvest", "3/8 shards", "fetched 3", "rows 4,500", "req/s", "retries 9", "429s 4",
        "eta",
    ):  # fmt: skip
        assert piece in text, (piece, text)
    assert "None" not in text


def test_planning_shows_no_total_yet() -> None:
    stream = io.StringIO()
    progress = LineProgress(interval=60, stream=stream)
    progress.bind_stats(lambda: (12, 0, 1))
    assert re.fullmatch(
        r"INFO harvester\.progress: planning: requests 12 \([\d.]+/s\), retries 1, 429s 0",
        progress.line().split(" ", 1)[1],
    ), progress.line()
    progress.stop()
    out = io.StringIO()
    bar = RichProgress(console=Console(file=out, force_terminal=True, width=200))
    bar.stop()
    assert "planning" in out.getvalue() and "None" not in out.getvalue(), out.getvalue()


def test_counts_follow_resumes_splits_failures_refetches_and_staging_areas() -> None:
    progress = Progress()
    progress.start(10, 4, 5_000)  # a resume: 4 of 10 committed before (rows not this run's)
    for rows in (100, 0, 50):
        progress.shard_finished(rows)
    progress.add_shards(2)  # one shard split into three
    progress.shard_finished(0, failed=True)
    f = progress.figures()
    assert (f["shards_total"], f["shards_done"], f["shards_failed"], f["shards_pending"]) == (
        12, 7, 1, 4,
    )  # fmt: skip
    assert (f["shards_fetched"], f["rows_written"], f["planning"]) == (3, 150, False)
    # The closing check fetches a done shard and the failed one again: pending, not more.
    progress.refetch(done=1, failed=1)
    f = progress.figures()
    assert (f["shards_total"], f["shards_done"], f["shards_failed"], f["shards_pending"]) == (
        12, 6, 0, 6,
    )  # fmt: skip
    progress.shard_finished(20)
    progress.shard_finished(30)
    # A refresh adds its next staging area's plan (2 shards, 1 planned empty).
    progress.start(2, 1, 0)
    f = progress.figures()
    assert (f["shards_total"], f["shards_done"], f["shards_pending"]) == (14, 9, 5)
    assert (f["shards_fetched"], f["rows_written"]) == (5, 200)


def test_utc_stamp() -> None:
    assert utc_stamp(0.5) == "1970-01-01T00:00:00.500Z"
    assert utc_stamp(1_000_000_000.123) == "2001-09-09T01:46:40.123Z"


def test_a_real_harvest_logs_steady_json_progress_and_quiet_logs_none(tmp_path: Path) -> None:
    with run_simulator_process(
        "--records", "1500", *RANGE, "--max-window", WINDOW, "--seed", "81"
    ) as sim:
        env = harvest_env(HARVESTER_PROGRESS_INTERVAL="0.2")
        del env["HARVESTER_QUIET"]
        cmd = harvest_cmd(
            sim.url, f"{tmp_path}/a", "--rate", "60", "--concurrency", "1", "--log-format", "json"
        )
        loud = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert loud.returncode == 0, loud.stderr
        records = [json.loads(line) for line in loud.stderr.splitlines()]
        progress = [r for r in records if r.get("event") == "progress"]
        assert len(progress) >= 5, loud.stderr
        assert progress[-1]["shards_done"] == progress[-1]["shards_total"] > 0
        quiet = subprocess.run(
            [*harvest_cmd(sim.url, f"{tmp_path}/b"), "--quiet"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert quiet.returncode == 0 and "progress" not in quiet.stderr, quiet.stderr
