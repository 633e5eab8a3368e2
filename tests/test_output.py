"""What a run says, and that it says it one way: ISO 8601 UTC times on every log and
progress line, the closing summary as one JSON object under ``--log-format json``, the
report of an interrupted run, one vocabulary of shards and rows across progress, summary,
report and ``status`` (docs/operations.md, "Shards and rows"), strict dates, and the
warning for a range the service holds no data of yet.

Every run is the real command in a subprocess against a real simulator over loopback; the
counts are checked against the lake's own markers and files, not against each other only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from harvester.cli import JsonFormatter, TextFormatter
from harvester.jobs.harvest import SERVICE_LAG_DAYS, range_warning
from harvester.sim.testing import SimHandle, run_simulator_process
from harvester.storage.state import HarvestState
from harvester.storage.store import Lake
from tests.support.cli import cli, ok
from tests.support.harvest import (
    RANGE,
    WINDOW,
    harvest_cmd,
    harvest_env,
    run_harvest,
    start_harvest,
)
from tests.support.lakecheck import assert_lake_equals_truth, is_decodable, read_lake

ISO_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
BAD_ROWS = 3
# The simulator's two months and an empty third: its shard is planned empty, committed at
# once without a request, so "done" and "fetched by this run" differ even in one run.
DATES = ("--from", "2019-01-01", "--to", "2019-03-31")


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    # ~3,000 rows over two months, a paging window of 300: a few dozen shards, some of them
    # cut by id range, and a few undecodable rows (quarantined, not in the lake).
    with run_simulator_process(
        "--records", "3000", *RANGE, "--max-window", WINDOW, "--seed", "51",
        "--bad-rows", str(BAD_ROWS), "--admin",
    ) as handle:  # fmt: skip
        yield handle


def loud_env(**extra: str) -> dict[str, str]:
    """The fast test settings with progress on (a line every 0.2 s)."""
    env = harvest_env(HARVESTER_PROGRESS_INTERVAL="0.2", **extra)
    del env["HARVESTER_QUIET"]
    return env


@dataclass
class Markers:
    """A plan's shards as the lake's markers say them (what ``status`` reads)."""

    total: int
    done: int
    failed: int
    fetched: int  # done markers of a fetch (planned-empty ones are written with no attempt)
    rows: int

    @classmethod
    def of(cls, out: Path) -> Markers:
        state = HarvestState(Lake.open(str(out)))
        plan = state.load_plan()
        assert plan is not None
        markers = state.load_markers()
        ended = [markers.get(leaf.key) for leaf in state.leaves(plan, markers)]
        done = [m for m in ended if m is not None and m.done]
        return cls(
            total=len(ended),
            done=len(done),
            failed=sum(1 for m in ended if m is not None and m.status == "failed"),
            fetched=sum(1 for m in done if m.attempts > 0),
            rows=sum(m.rows for m in done),
        )


def committed_rows(out: Path) -> int:
    """The rows of the files the done markers name, from their footers: an interrupted run
    may leave written files no marker owns yet, which are not the lake's."""
    state = HarvestState(Lake.open(str(out)))
    return sum(
        pq.ParquetFile(out / path).metadata.num_rows
        for marker in state.load_markers().values()
        if marker.done
        for path in marker.files
    )


def lake_rows(sim: SimHandle) -> int:
    return sum(1 for doc in sim.truth() if is_decodable(doc))


def only_report(out: Path) -> dict[str, Any]:
    (path,) = (out / "_harvest" / "runs").glob("*.json")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def status_of(out: Path) -> tuple[str, dict[str, Any]]:
    text = ok(cli("status", "--out", str(out)))
    return text, json.loads(ok(cli("status", "--out", str(out), "--json")))


def number(text: str) -> int:
    return int(text.replace(",", ""))


# -- times -----------------------------------------------------------------------------


def test_log_times_are_iso_8601_utc_with_milliseconds_whatever_the_local_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A zone far from UTC: logging's own asctime would print local time here.
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        record = logging.LogRecord(
            "harvester.x", logging.WARNING, __file__, 1, "hi %s", ("you",), None
        )
        record.created = 1_000_000_000.123  # 2001-09-09 01:46:40.123 UTC, 07:16:40 in Kolkata
        payload = json.loads(JsonFormatter().format(record))
        text = TextFormatter().format(record)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert payload == {
        "time": "2001-09-09T01:46:40.123Z",
        "level": "warning",
        "logger": "harvester.x",
        "message": "hi you",
    }
    assert text == "2001-09-09T01:46:40.123Z WARNING harvester.x: hi you"


# -- the JSON summary and consistent counts -------------------------------------------


def test_json_logs_and_a_json_summary_whose_counts_are_the_lakes(
    sim: SimHandle, tmp_path: Path
) -> None:
    out = tmp_path / "lake"
    before = time.time()
    result = subprocess.run(
        harvest_cmd(sim.url, str(out), *DATES, "--rate", "150", "--log-format", "json", "-v"),
        env=loud_env(), capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    after = time.time()
    assert result.returncode == 0, result.stderr

    # stderr: every line a JSON record stamped in UTC, ISO 8601 with milliseconds.
    records = [json.loads(line) for line in result.stderr.splitlines()]
    for record in records:
        assert ISO_UTC.fullmatch(record["time"]), record
        moment = dt.datetime.fromisoformat(record["time"])
        assert moment.utcoffset() == dt.timedelta(0)
        assert before - 1 <= moment.timestamp() <= after + 1, record
    assert any(r["logger"] == "harvester.jobs.harvest" for r in records), "no -v log line"
    assert not [r for r in records if r["level"] == "warning"], "an old range warned"
    progress = [r for r in records if r.get("event") == "progress"]
    assert progress[0]["planning"] and progress[0]["message"].startswith("planning:")
    assert "None" not in result.stderr

    # stdout: one JSON object on one line, the report as saved plus its path.
    (line,) = result.stdout.splitlines()
    summary = json.loads(line)
    saved = Path(summary.pop("saved_to"))
    assert saved.parent == out / "_harvest" / "runs"
    assert json.loads(saved.read_text()) == summary

    # Its counts are the lake's: markers, files, the simulator's truth.
    markers = Markers.of(out)
    assert summary["status"] == "complete"
    assert summary["rows_in_lake"] == summary["rows_written"] == markers.rows
    assert markers.rows == len(read_lake(Lake.open(str(out)))) == lake_rows(sim)
    assert summary["quarantined"] == BAD_ROWS
    assert (summary["shards_total"], summary["shards_done"], summary["shards_failed"]) == (
        markers.total, markers.done, 0,
    )  # fmt: skip
    assert summary["shards_fetched"] == markers.fetched < markers.total  # some planned empty

    # The last progress line says what the summary says; so does status.
    last = progress[-1]
    for name in ("shards_total", "shards_done", "shards_failed", "shards_fetched", "rows_written"):
        assert last[name] == summary[name], name
    assert last["shards_pending"] == 0
    _, status = status_of(out)
    assert (status["shards_total"], status["shards_done"], status["rows"]) == (
        markers.total, markers.done, markers.rows,
    )  # fmt: skip
    assert status["last_run"]["run_id"] == summary["run_id"]


def test_a_refresh_reports_the_rows_in_the_lake_after_its_merge(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    with run_simulator_process(
        "--records", "2000", *RANGE, "--max-window", WINDOW, "--seed", "52", "--admin"
    ) as sim:  # fmt: skip
        ok(run_harvest(sim.url, str(out), *DATES))
        sim.mutate(late=60, delete=40, modify=30, seed=1)
        result = subprocess.run(
            [sys.executable, "-m", "harvester", "refresh", "--api-url", sim.url, "--out",
             str(out), "--rate", "0", "--reconcile-days", "120", "--log-format", "json"],
            env=loud_env(), capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
        truth = sim.truth()
        checked = cli(
            "verify", "--api-url", sim.url, "--out", str(out), "--rate", "0",
            "--log-format", "json",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert_lake_equals_truth(Lake.open(str(out)), truth)
    held = len(read_lake(Lake.open(str(out))))
    assert summary["rows_in_lake"] == held == sum(1 for d in truth if is_decodable(d))
    assert summary["extra"]["rows_added"] > 0 and summary["rows_written"] > 0
    # The refresh's shards: those of its staging areas, all done, as progress ended.
    assert summary["shards_done"] == summary["shards_total"] > 0 and summary["shards_failed"] == 0
    last = [json.loads(x) for x in result.stderr.splitlines() if '"progress"' in x][-1]
    for name in ("shards_total", "shards_done", "shards_fetched"):
        assert last[name] == summary[name], name
    # Progress counts the rows fetched into the staging areas; the report's rows written
    # are those written into the lake's partitions (docs/operations.md, Shards and rows).
    assert last["rows_written"] == summary["extra"]["rows_fetched"]
    text, status = status_of(out)
    assert status["rows"] == held and f"rows: {held:,} in the lake" in text
    assert status["last_run"]["rows_in_lake"] == held

    # verify and compact close the same way: one JSON object, their report as saved.
    compacted = cli("compact", "--out", str(out), "--log-format", "json")
    for command, run in (("verify", checked), ("compact", compacted)):
        assert run.returncode == 0, run.stdout + run.stderr
        (line,) = run.stdout.splitlines()
        closing = json.loads(line)
        saved = Path(closing.pop("saved_to"))
        assert json.loads(saved.read_text()) == closing
        assert closing["command"] == command and closing["rows_in_lake"] == held


# -- an interrupted run ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_an_interrupted_run_leaves_its_report_and_the_resume_counts_agree(
    sim: SimHandle, tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    out = tmp_path / "lake"
    # One request at a time, 20 a second: the signal comes once a few shards with rows are
    # committed, seconds before the end.
    slow = (*DATES, "--rate", "20", "--concurrency", "1")
    proc = start_harvest(sim.url, out, *slow)
    shards = out / "_harvest" / "shards"
    deadline = time.monotonic() + 60
    while sum(1 for p in shards.glob("*.json") if json.loads(p.read_text()).get("rows")) < 3:
        assert time.monotonic() < deadline and proc.poll() is None, "no shard was committed"
        time.sleep(0.05)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "run the same `harvester harvest` command" in stderr
    assert stdout == "", "an interrupted run printed a summary"

    report = only_report(out)
    markers = Markers.of(out)
    assert report["status"] == "interrupted" and report["extra"]["ended_by"] == signum.name
    assert report["finished_at"] and report["requests"] > 0
    assert 0 < markers.done < markers.total, "the run was not interrupted half way"
    assert (report["shards_total"], report["shards_done"], report["shards_failed"]) == (
        markers.total, markers.done, markers.failed,
    )  # fmt: skip
    assert report["shards_fetched"] == markers.fetched
    assert report["rows_in_lake"] == report["rows_written"] == markers.rows == committed_rows(out)
    text, status = status_of(out)
    assert status["last_run"]["run_id"] == report["run_id"]
    assert f"last run: harvest interrupted {report['run_id']}" in text
    assert f"({signum.name})" in text
    assert f"shards {markers.done:,}/{markers.total:,} done," in text

    # The resume: progress, summary, report and status count the same shards and rows, and
    # say which of them this run fetched.
    result = subprocess.run(
        [*harvest_cmd(sim.url, str(out), *DATES), "-v"],
        env=loud_env(), capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert_lake_equals_truth(Lake.open(str(out)), sim.truth())
    for line in result.stderr.splitlines():  # text logs are stamped as JSON ones are
        stamp, level, _ = line.split(" ", 2)
        assert ISO_UTC.fullmatch(stamp) and level in ("INFO", "WARNING"), line
    after = Markers.of(out)
    resumed = json.loads(Path(re.findall(r"^report: (.+)$", result.stdout, re.M)[0]).read_text())
    assert resumed["status"] == "complete"
    assert (resumed["shards_total"], resumed["shards_done"]) == (after.total, after.done)
    assert resumed["shards_fetched"] == after.total - markers.done  # the rest, each once
    assert resumed["rows_written"] == after.rows - markers.rows
    assert resumed["rows_in_lake"] == after.rows == lake_rows(sim)

    # Progress counts shards planned empty apart ("N planned empty"): done/total are the
    # shards with rows to fetch, and with the empty ones they are the markers' total.
    progress = re.findall(
        r"shards ([\d,]+)/([\d,]+) done \(([\d,]+) fetched by this run\), ([\d,]+) failed,"
        r"(?: ([\d,]+) planned empty,)? rows written ([\d,]+)",
        result.stderr,
    )
    done, total, fetched, failed, empty, written = progress[-1]
    assert done == total and number(total) + number(empty or "0") == after.total
    assert [number(fetched), number(failed), number(written)] == [
        resumed["shards_fetched"], 0, resumed["rows_written"],
    ]  # fmt: skip
    assert (
        f"harvest complete: {resumed['rows_written']:,} rows written, {after.rows:,} rows in"
        f" the lake, {resumed['quarantined']:,} rows quarantined" in result.stdout
    ), result.stdout
    assert (
        f"shards {after.total:,}/{after.total:,} done ({resumed['shards_fetched']:,} fetched by"
        " this run), 0 failed, 0 pending" in result.stdout
    ), result.stdout
    text, status = status_of(out)
    assert f"shards {after.total:,}/{after.total:,} done, 0 failed, 0 pending" in text
    assert f"rows: {after.rows:,} in the lake" in text
    assert status["last_run"]["run_id"] == resumed["run_id"]


def interrupt_while_planning(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Ctrl-C once the run logs that it plans (``-v``); its output to the end."""
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # the first log lines come long before the run can end
        seen.append(line)
        if "harvester.jobs.harvest: planning " in line:
            break
    assert seen and "planning" in seen[-1], "".join(seen)
    proc.send_signal(signal.SIGINT)
    stdout, rest = proc.communicate(timeout=60)
    return stdout, "".join(seen) + rest


def test_ctrl_c_while_planning_a_new_lake_says_nothing_was_saved(
    sim: SimHandle, tmp_path: Path
) -> None:
    """Stopped before anything was written (finding 4): no claim of a report under a
    _harvest/ that is not there, nor of a `status` that would find no lake."""
    out = tmp_path / "lakeD"
    proc = start_harvest(sim.url, out, *DATES, "--rate", "2", "-v")
    stdout, stderr = interrupt_while_planning(proc)
    assert proc.returncode == 130, stderr
    assert stdout == "" and "Traceback" not in stderr
    assert not out.exists()
    assert stderr.splitlines()[-2:] == [
        "harvester: stopped by Ctrl-C (SIGINT)",
        f"nothing was saved: the run stopped before it wrote to {out};"
        " run the same `harvester harvest` command again",
    ], stderr
    # Which starts it, as said.
    ok(run_harvest(sim.url, str(out), *DATES))
    assert_lake_equals_truth(Lake.open(str(out)), sim.truth())


def test_ctrl_c_during_plan_says_plan_writes_nothing(sim: SimHandle, tmp_path: Path) -> None:
    out = tmp_path / "planned"
    command = [
        sys.executable, "-m", "harvester", "plan", "--api-url", sim.url, "--out", str(out),
        *DATES, "--rate", "2", "-v",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, env=harvest_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    )  # fmt: skip
    _, stderr = interrupt_while_planning(proc)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert stderr.splitlines()[-1] == (
        "plan writes nothing; run the same `harvester plan` command again"
    ), stderr
    assert not out.exists()


# -- dates -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--from", "20190101"),
        ("--to", "2019-W09-4"),
        ("--from", "2019-1-1"),
        ("--to", "2019-02-30"),
    ],
)
def test_dates_are_yyyy_mm_dd_only(sim: SimHandle, tmp_path: Path, flag: str, value: str) -> None:
    out = tmp_path / "lake"
    before = sim.stats()["requests"]
    for command in ("harvest", "plan"):
        result = cli(command, "--api-url", sim.url, "--out", str(out), flag, value)
        assert result.returncode == 2 and result.stdout == "", result.stderr
        name = "date_from" if flag == "--from" else "date_to"
        # The right form but no such day is told apart from the wrong form (issue 21).
        why = (
            "does not exist (February 2019 has 28 days)"
            if value == "2019-02-30"
            else "must be a date as YYYY-MM-DD, like 2019-01-31"
        )
        assert result.stderr == f"harvester: error: invalid {name} from {flag}: {value!r} {why}\n"
    assert sim.stats()["requests"] == before and not out.exists()


def test_dates_from_the_environment_and_the_config_file(tmp_path: Path) -> None:
    refused = cli("config", env=harvest_env(HARVESTER_FROM="20190101"))
    assert refused.returncode == 2
    assert "invalid date_from from $HARVESTER_FROM: '20190101'" in refused.stderr
    # A TOML date and its text are both YYYY-MM-DD; a TOML string of another form is not.
    good = tmp_path / "good.toml"
    good.write_text('[harvest]\nfrom = 2019-01-01\nto = "2019-02-28"\n')
    shown = json.loads(ok(cli("config", "--config", str(good), "--json")))["settings"]
    assert (shown["date_from"], shown["date_to"]) == ("2019-01-01", "2019-02-28")
    bad = tmp_path / "bad.toml"
    bad.write_text('[harvest]\nfrom = "20190101"\n')
    result = cli("config", "--config", str(bad))
    assert result.returncode == 2
    assert f"invalid date_from from [harvest] from in {bad}: '20190101'" in result.stderr


# -- a range with no data yet ------------------------------------------------------------


def test_range_warning_boundaries() -> None:
    today = dt.date(2026, 11, 30)
    newest = today - dt.timedelta(days=SERVICE_LAG_DAYS)
    assert range_warning(dt.date(2019, 1, 1), today, today) is None
    assert range_warning(newest, today, today) is None
    recent = range_warning(newest + dt.timedelta(days=1), today, today)
    assert recent is not None and "may find few or no rows" in recent
    starting_today = range_warning(today, today, today)  # today is not the future yet
    assert starting_today is not None and "may find few or no rows" in starting_today
    future = range_warning(today + dt.timedelta(days=1), today + dt.timedelta(days=9), today)
    assert future == (
        "the range 2026-12-01..2026-12-09 lies entirely in the future: it will find no rows"
    )


def test_a_range_with_no_data_yet_is_warned_of_and_still_run(
    sim: SimHandle, tmp_path: Path
) -> None:
    today = dt.datetime.now(dt.UTC).date()
    later = (today + dt.timedelta(days=10)).isoformat(), (today + dt.timedelta(days=40)).isoformat()
    out = tmp_path / "future"
    result = run_harvest(sim.url, str(out), "--from", later[0], "--to", later[1])
    assert result.returncode == 0, result.stderr
    (warning,) = result.stderr.splitlines()
    stamp, rest = warning.split(" ", 1)
    assert ISO_UTC.fullmatch(stamp)
    assert rest == (
        f"WARNING harvester.jobs.harvest: the range {later[0]}..{later[1]} lies entirely in the"
        " future: it will find no rows"
    )
    assert result.stdout.startswith("harvest complete: 0 rows written, 0 rows in the lake")
    assert read_lake(Lake.open(str(out))) == []

    recent = (today - dt.timedelta(days=30)).isoformat(), today.isoformat()
    planned = cli(
        "plan", "--api-url", sim.url, "--out", str(tmp_path / "recent"), "--from", recent[0],
        "--to", recent[1], "--json",
    )  # fmt: skip
    assert planned.returncode == 0, planned.stderr
    (warning,) = planned.stderr.splitlines()
    assert warning.endswith(
        f"the range {recent[0]}..{recent[1]} starts after"
        f" {today - dt.timedelta(days=SERVICE_LAG_DAYS)}: the service holds mail dates up to"
        f" about {SERVICE_LAG_DAYS} days before today, so it may find few or no rows"
    )
    assert warning.split(" ", 1)[1] in {
        f"WARNING harvester.jobs.harvest: {note}" for note in json.loads(planned.stdout)["notes"]
    }
