"""Progress: a line at a steady interval (even when no shard finishes), JSON lines for
machines, a rich bar on a terminal, nothing with --quiet; and it works in a real run."""

from __future__ import annotations

import io
import json
import subprocess
import time
from pathlib import Path

from rich.console import Console

from harvester.progress import LineProgress, Progress, RichProgress, make_progress
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
    assert "INFO harvester.progress: shards 2/10 (failed 0), rows 1,000" in lines[0]
    assert all("requests 42" in line and "retries 5, 429s 3" in line for line in lines)
    # Lines are about evenly spaced: counting them twice as long gives about twice as many.
    assert len(lines) <= 12


def test_json_lines_are_log_records_with_the_figures() -> None:
    stream = io.StringIO()
    progress = LineProgress(interval=60, json_lines=True, stream=stream)
    progress.bind_stats(lambda: (7, 1, 2))
    progress.start(4, 0, 0)
    progress.shard_finished(250)
    progress.shard_finished(0, failed=True)
    progress.stop()
    (line,) = stream.getvalue().splitlines()  # interval not reached: only the final line
    record = json.loads(line)
    assert record["level"] == "info" and record["logger"] == "harvester.progress"
    assert record["event"] == "progress" and record["message"].startswith("shards 2/4")
    assert record["shards_done"] == 2 and record["shards_failed"] == 1 and record["rows"] == 250
    assert (record["requests"], record["throttled"], record["retries"]) == (7, 1, 2)
    assert record["requests_per_s"] > 0 and record["eta_s"] is not None


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
    progress = RichProgress(console=Console(file=out, force_terminal=True, width=200))
    progress.bind_stats(lambda: (120, 4, 9))
    progress.start(8, 0, 0)
    for _ in range(3):
        progress.shard_finished(1_500)
    progress.stop()
    text = out.getvalue()
    for piece in ("shards", "3/8", "rows 4,500", "req/s (120)", "retries 9", "429s 4", "eta"):
        assert piece in text, (piece, text)


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
