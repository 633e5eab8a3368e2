"""Rough edges of issue 21 (findings 6, 7 and 8): expected situations end with one line
and their own exit code, mistyped names get a "did you mean", sample days hold rows, verify
names causes before symptoms, counts agree with their nouns, status says what its
watermark is, and `make demo`'s set-up stays quiet."""

from __future__ import annotations

import datetime as dt
import re
import shlex
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from harvester.errors import EXIT_CONFIG, EXIT_MISSING_EXTRA, MissingExtra
from harvester.humanize import did_you_mean, nearest, plural
from harvester.ops.deep import DeepOptions, choose_days, sample_population
from harvester.ops.scan import Scan
from harvester.ops.show import INSTALL_HINT
from harvester.ops.status import LakeStatus, _quota_lines
from harvester.ops.verify import SHOWN_PER_DAY_KIND, Check
from harvester.sim.config import SimConfig
from harvester.sim.testing import run_simulator_process
from tests.support.cli import cli, ok, printed_report
from tests.support.harvest import harvest_env, run_harvest

ROOT = Path(__file__).resolve().parents[1]


# -- finding 7: expected situations are not "unexpected errors" ---------------------------


def test_show_without_duckdb_is_a_missing_extra_with_pipx_and_pip_advice(tmp_path: Path) -> None:
    # The import fails as it does where DuckDB is not installed.
    code = (
        "import sys; sys.modules['duckdb'] = None; from harvester.cli import main; sys.exit(main())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "show", "--out", str(tmp_path)],
        env=harvest_env(TMPDIR=str(tmp_path)), capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == EXIT_MISSING_EXTRA == MissingExtra.exit_code == 11
    (line,) = result.stderr.splitlines()
    assert "pipx inject uspto-oa-harvester duckdb" in line
    assert "pip install 'uspto-oa-harvester[show]'" in line
    assert "unexpected" not in line and not list(tmp_path.glob("harvester-error_*"))
    # The hint names the distribution and the extra pyproject.toml declares.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "uspto-oa-harvester" and "show" in project["optional-dependencies"]
    assert (
        f"{project['name']}[show]" in INSTALL_HINT and f"inject {project['name']}" in INSTALL_HINT
    )


def test_exit_code_11_is_in_the_errors_table() -> None:
    import harvester.errors as errors

    assert errors.__doc__ is not None
    assert re.search(r"^11\s+``EXIT_MISSING_EXTRA``", errors.__doc__, re.M)
    assert "MissingExtra" in errors.__doc__


def test_simulate_on_a_port_in_use_is_one_line_and_writes_no_details_file(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "harvester", "simulate", "--port", str(port)],
            env=harvest_env(TMPDIR=str(tmp_path)), capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
    assert result.returncode == EXIT_CONFIG, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("harvester: error: ") and f"port {port} is already in use" in line
    assert "Traceback" not in result.stderr and "unexpected" not in line
    assert list(tmp_path.iterdir()) == []  # no harvester-error_*.log in the temp directory


def test_simulate_negative_records_is_one_clause() -> None:
    result = cli("simulate", "--records", "-5")
    assert result.returncode == EXIT_CONFIG
    assert result.stderr.strip() == "harvester: error: simulate: records must be >= 0, got -5"
    with pytest.raises(ValueError, match=r"^bad rows must be within 0\.\.records, got 9$"):
        SimConfig(records=5, bad_rows=9)  # the bad rows' own clause still stands alone


# -- finding 8: messages ------------------------------------------------------------------


def test_a_day_that_does_not_exist_is_called_so(tmp_path: Path) -> None:
    result = cli("harvest", "--out", str(tmp_path / "l"), "--from", "2019-02-30")
    assert result.returncode == EXIT_CONFIG
    assert result.stderr.strip() == (
        "harvester: error: invalid date_from from --from: '2019-02-30' does not exist"
        " (February 2019 has 28 days)"
    )
    assert "does not exist (there is no month 13)" in cli("plan", "--to", "2019-13-01").stderr
    # The wrong form keeps its own words.
    assert "must be a date as YYYY-MM-DD" in cli("plan", "--from", "2019-2-03").stderr


def test_did_you_mean_for_flags_commands_and_config_keys(tmp_path: Path) -> None:
    flag = cli("harvest", "--concurency", "3")
    assert flag.returncode == EXIT_CONFIG
    assert flag.stderr.splitlines()[-1] == (
        "harvester harvest: error: unrecognized arguments: --concurency 3"
        " (did you mean --concurrency?)"
    )
    command = cli("harvset")
    assert command.returncode == EXIT_CONFIG
    last = command.stderr.splitlines()[-1]
    assert last.startswith("harvester: error: unknown command 'harvset' (did you mean harvest?)")
    assert "refresh" in last  # the commands are listed
    assert "did you mean" not in cli("xyzzy").stderr  # nothing near: no guess
    config = tmp_path / "c.toml"
    config.write_text("[api]\nconcurency = 3\n")
    key = cli("config", "--config", str(config))
    assert key.returncode == EXIT_CONFIG
    assert key.stderr.strip() == (
        f"harvester: error: config file {config}: unknown setting [api] concurency"
        " (did you mean [api] concurrency?)"
    )
    config.write_text("[lake]\nrate = 3\n")  # in the wrong section
    assert "(did you mean [api] rate?)" in cli("config", "--config", str(config)).stderr


def test_nearest_and_did_you_mean() -> None:
    assert nearest("--concurency", ["--config", "--concurrency", "--rate"]) == "--concurrency"
    assert nearest("zzz", ["harvest", "refresh"]) is None
    assert did_you_mean("stauts", ["status", "show"]) == " (did you mean status?)"
    assert did_you_mean("zzz", ["status"]) == ""


def test_plural() -> None:
    assert plural(1, "run") == "1 run"
    assert plural(0, "run") == "0 runs"
    assert plural(1_234, "shard") == "1,234 shards"
    assert plural(2, "entry", "entries") == "2 entries"


def test_status_counts_agree_with_their_nouns_and_says_what_the_watermark_is() -> None:
    status = LakeStatus("/lake", 1, files=1, partitions=1, runs=1)
    status.watermark = "2026-11-30T00:00:00"
    status.last_run = {
        "command": "harvest", "status": "complete", "run_id": "r", "finished_at": "t",
        "rows_written": 1, "shards_fetched": 1, "requests": 1,
    }  # fmt: skip
    text = "\n".join(status.render())
    assert "(1 run recorded)" in text and "1 shard fetched" in text and "1 row written" in text
    assert "1 request (" in text and "in 1 file over 1 partition " in text
    assert "1 runs" not in text and "1 shards" not in text
    # The watermark is the service's newest stamp when the last run *started*.
    at = text.index("watermark: 2026-11-30T00:00:00")
    why = text[at:].splitlines()[1]
    assert "when the last harvest or refresh started" in why and "next refresh" in why
    assert "show" in why  # why `show`'s newest createDateTime may be later


def test_quota_lines_name_a_missing_key_plainly() -> None:
    week = {
        "week_start": "2026-11-29 00:00 UTC", "resets_at": "2026-12-06 00:00 UTC",
        "resets_in": "3 d 2 h", "quota": 0, "key_id": "no-key",
        "requests": {"no-key": 1, "0123456789ab": 2}, "spent_at": {},
    }  # fmt: skip
    lines = _quota_lines(week)
    assert "  without a key (none set now either): 1 request" in lines
    assert "  key 0123456789ab: 2 requests" in lines
    assert not any("key no-key" in line for line in lines)


def _check(problems: list[tuple[str, str]]) -> Check:
    return Check(dt.date(2019, 1, 1), dt.date(2019, 12, 31), Scan(), {}, 0, problems=problems)


def test_verify_names_causes_first_and_caps_the_per_day_lines() -> None:
    days = [
        ("count", f"day 2019-01-{d:02d}: lake has 0 rows, service has 12") for d in range(1, 26)
    ]
    causes = [
        ("missing", "committed file is missing: year=2019/month=1/part-a.parquet"),
        ("foreign", "file not written by the harvester (left alone; ...): notes.parquet"),
    ]
    lines = _check([*days, *causes]).lines()
    assert lines[0] == f"problem: {causes[0][1]}" and lines[1] == f"problem: {causes[1][1]}"
    shown = [line for line in lines if line.startswith("problem: day ")]
    assert len(shown) == SHOWN_PER_DAY_KIND < len(days)
    more = len(days) - SHOWN_PER_DAY_KIND
    assert lines[-1] == (
        f"problem: ... and {more} more days whose counts differ (the report has them all)"
    )
    one = _check([*days[: SHOWN_PER_DAY_KIND + 1]]).lines()
    assert one[-1].startswith("problem: ... and 1 more day whose")


# -- finding 6: a sample of days holds rows ----------------------------------------------


def test_sample_days_are_drawn_among_days_holding_rows() -> None:
    first, last = dt.date(2019, 1, 1), dt.date(2019, 12, 31)
    holding = {dt.date(2019, 1, d) for d in range(1, 32)} | {dt.date(2019, 3, 5)}
    assert sample_population(first, last, holding) == sorted(holding)
    for seed in range(20):
        days, used = choose_days(first, last, DeepOptions(5, seed), holding)
        assert len(days) == 5 and set(days) <= holding and used == seed
    # No more days holding rows than asked for: all of them, no draw.
    few = {dt.date(2019, 6, 1), dt.date(2019, 6, 2)}
    assert choose_days(first, last, DeepOptions(5, 1), few) == (sorted(few), None)
    # Without --sample, --deep still means every day of the range.
    assert len(choose_days(first, last, DeepOptions(), holding)[0]) == 365


VERIFY = ("verify", "--rate", "0", "--api-url")
YEAR = ("--from", "2019-01-01", "--to", "2019-12-31")


def test_verify_deep_sample_skips_empty_days(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    with run_simulator_process(
        "--records", "600", "--start", "2019-01-01", "--end", "2019-01-31", "--seed", "7"
    ) as sim:
        ok(run_harvest(sim.url, str(out), "--from", "2019-01-01", "--to", "2019-01-31"))
        # Eleven months the service holds nothing of: a draw among all days would mostly
        # land there.
        args = ("--out", str(out), *YEAR, "--deep", "--sample", "5")
        text = ok(cli(*VERIFY, sim.url, *args))
    deep = printed_report(text)["extra"]["check"]["deep"]
    assert len(deep["days"]) == 5 and all(d.startswith("2019-01-") for d in deep["days"])
    holding = deep["days_holding_rows"]
    assert 0 < holding <= 31 and deep["rows_compared"] > 0
    assert f"of the {holding} days holding rows" in text, text


# -- finding 8: make demo's quiet set-up --------------------------------------------------


def test_the_editable_install_filters_only_the_setuptools_banner() -> None:
    makefile = (ROOT / "Makefile").read_text()
    (recipe,) = [line.strip() for line in makefile.splitlines() if "-e ." in line]
    words = shlex.split(recipe)
    assert "--quiet" in words and ">" not in recipe and "/dev/null" not in recipe
    flag = words[words.index("-W") + 1]
    # The warning pip passes on from setuptools goes; any other warning still shows.
    probe = (
        "import warnings;"
        " warnings.warn('Editable installation.\\n!!\\nPlease be careful', UserWarning);"
        " warnings.warn('a real problem', UserWarning)"
    )
    shown = subprocess.run(
        [sys.executable, "-W", flag, "-c", probe], capture_output=True, text=True, check=True
    ).stderr
    assert "Editable installation" not in shown and "a real problem" in shown
