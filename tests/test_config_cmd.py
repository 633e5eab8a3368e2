"""``harvester config [--show-origin] [--json]``: the settings a run would use, where each
came from, and never the key.

Each case runs ``harvester.cli.main`` in-process: ``config`` resolves settings and prints
them, nothing more, so no case needs the API or a lake.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tomllib
from pathlib import Path

import pytest

from harvester import errors
from harvester.cli import main
from harvester.config import SPECS, Settings, Spec, resolve, show_value

KEY = "KEY-config-canary-41c2"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)


def config_out(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["config", *argv]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


def setting_lines(text: str) -> dict[str, tuple[str, str, str]]:
    """``[section] key`` -> (section, value text, origin comment) for every ``key = value``
    line, and for every ``# key = (not set: ...)`` line (value text ``None``)."""
    found: dict[str, tuple[str, str, str]] = {}
    section = ""
    for line in text.splitlines():
        if match := re.fullmatch(r"\[(\w+)\]", line):
            section = match.group(1)
            continue
        match = re.fullmatch(r"(# )?(\w+) = (.*?)(?:\s+# (default|from .+))?", line)
        if match and section:
            unset, key, value, origin = match.groups()
            where = f"[{section}] {key}"
            assert where not in found, f"{where} printed twice"
            found[where] = (section, "None" if unset else value, origin or "")
    return found


def test_every_setting_is_printed_once_with_its_value(capsys: pytest.CaptureFixture[str]) -> None:
    lines = setting_lines(config_out(capsys))
    assert set(lines) == {spec.origin_of_toml() for spec in SPECS}
    for spec in SPECS:
        value = getattr(Settings(), spec.name)
        _, text, origin = lines[spec.origin_of_toml()]
        assert origin == ""  # origins only with --show-origin
        if value is None:
            assert text == "None"
        elif isinstance(value, str):
            assert json.loads(text) == value
        else:
            assert text == show_value(value)


def test_show_origin_names_each_kind_of_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[api]\nrate = 2.5\nrows = 70\n[lake]\nregion = "eu-west-1"\n')
    monkeypatch.setenv("HARVESTER_ROWS", "50")  # over the file
    monkeypatch.setenv("HARVESTER_TIMEOUT", "9")
    monkeypatch.setenv("USPTO_API_KEY", KEY)
    argv = ("--config", str(config), "--concurrency", "2", "--from", "2019-01-02", "--quiet")
    text = config_out(capsys, *argv, "--show-origin")
    lines = setting_lines(text)
    assert lines["[api] concurrency"][1:] == ("2", "from --concurrency")
    assert lines["[harvest] from"][1:] == ("2019-01-02", "from --from")
    assert lines["[log] quiet"][1:] == ("true", "from --quiet")
    assert lines["[api] rows"][1:] == ("50", "from $HARVESTER_ROWS")
    assert lines["[api] timeout"][1:] == ("9.0", "from $HARVESTER_TIMEOUT")
    assert lines["[api] rate"][1:] == ("2.5", f"from [api] rate in {config}")
    assert lines["[lake] region"][1:] == ('"eu-west-1"', f"from [lake] region in {config}")
    assert lines["[api] url"][1:] == ('"https://api.uspto.gov"', "default")
    assert lines["[harvest] to"][1:] == ("None", "default")
    given = {"concurrency", "date_from", "quiet", "rows", "timeout", "rate", "s3_region"}
    for spec in SPECS:
        assert (lines[spec.origin_of_toml()][2] == "default") == (spec.name not in given)
    assert KEY not in text
    assert "# API key: ***  # from $USPTO_API_KEY" in text.splitlines()


def test_the_key_is_masked_and_its_source_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "# API key: (not set: set USPTO_API_KEY, or USPTO_API_KEY_FILE" in config_out(capsys)
    key_file = tmp_path / "key"
    key_file.write_text(f"{KEY}\n")
    monkeypatch.setenv("USPTO_API_KEY_FILE", str(key_file))
    plain = config_out(capsys)
    assert "# API key: ***" in plain.splitlines() and str(key_file) not in plain
    shown = config_out(capsys, "--show-origin")
    assert f"# API key: ***  # from $USPTO_API_KEY_FILE ({key_file})" in shown.splitlines()
    as_json = config_out(capsys, "--json")
    for text in (plain, shown, as_json):
        assert KEY not in text
    data = json.loads(as_json)
    assert data["settings"]["api_key_set"] is True and "api_key" not in data["settings"]
    assert data["origins"]["api_key"] == f"$USPTO_API_KEY_FILE ({key_file})"


def test_the_output_is_a_config_file_that_resolves_to_the_same_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HARVESTER_DATE_TEMPLATE", 'submissionDate:["{start}" TO "{end}"] é\\')
    monkeypatch.setenv("HARVESTER_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    argv = ("--rate", "0.5", "--from", "2019-01-01", "--to", "2019-03-31", "--wait-for-quota",
            "--lookback", "4", "--out", "s3://bucket/oa", "--log-format", "json")  # fmt: skip
    for show_origin in ((), ("--show-origin",)):
        text = config_out(capsys, *argv, *show_origin)
        path = tmp_path / "printed.toml"
        path.write_text(text)
        tomllib.loads(text)  # valid TOML, comments and all
        monkeypatch.delenv("HARVESTER_DATE_TEMPLATE")
        monkeypatch.delenv("HARVESTER_S3_ENDPOINT_URL")
        from_file = resolve({}, path, environ={})
        monkeypatch.setenv("HARVESTER_DATE_TEMPLATE", 'submissionDate:["{start}" TO "{end}"] é\\')
        monkeypatch.setenv("HARVESTER_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
        assert from_file == resolve(
            {"rate": "0.5", "date_from": "2019-01-01", "date_to": "2019-03-31",
             "quota_wait": True, "lookback_days": "4", "out": "s3://bucket/oa",
             "log_format": "json"}, None,
        )  # fmt: skip
        assert from_file.date_to == dt.date(2019, 3, 31) and from_file.rate == 0.5


@pytest.mark.parametrize("spec", [s for s in SPECS if s.flag], ids=lambda s: str(s.flag))
def test_config_takes_every_commands_flags(spec: Spec, capsys: pytest.CaptureFixture[str]) -> None:
    """``harvester config`` takes every settings flag, so any command line can be checked."""
    assert spec.flag is not None
    good = {"date": "2019-05-06", "url": "http://127.0.0.1:1", "uri": "s3://b/p"}
    argv = [spec.flag] if spec.switch else [spec.flag, good.get(str(spec.metavar).lower(), "3")]
    if spec.name == "log_format":
        argv = [spec.flag, "json"]
    lines = setting_lines(config_out(capsys, *argv, "--show-origin"))
    assert lines[spec.origin_of_toml()][2] == f"from {spec.flag}"


def test_json_has_every_setting_and_its_origin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HARVESTER_LOOKBACK", "6")
    data = json.loads(config_out(capsys, "--json", "--rows", "20"))
    assert data["settings"] == resolve({"rows": "20"}, None).public_dict()
    assert data["origins"] == {
        **{spec.name: "default" for spec in SPECS},
        "rows": "--rows",
        "lookback_days": "$HARVESTER_LOOKBACK",
        "api_key": "not set",
    }


@pytest.mark.parametrize(
    ("argv", "environ", "needle"),
    [
        (["--rate", "fast"], {}, "invalid rate from --rate: 'fast'"),
        (["--from", "2019-02-01", "--to", "2019-01-01"], {}, "invalid date range"),
        ([], {"HARVESTER_ROWS": "0"}, "invalid rows from $HARVESTER_ROWS"),
        ([], {"USPTO_API_KEY_FILE": "/nonexistent/key"}, "/nonexistent/key"),
        ([], {"USPTO_API_KEY": KEY, "USPTO_API_KEY_FILE": "/x"}, "both USPTO_API_KEY and"),
    ],
)
def test_bad_settings_fail_as_a_run_would(
    argv: list[str],
    environ: dict[str, str],
    needle: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert main(["config", *argv]) == errors.EXIT_CONFIG
    captured = capsys.readouterr()
    assert captured.out == "" and KEY not in captured.err
    assert captured.err.count("\n") == 1 and captured.err.startswith("harvester: error: ")
    assert needle in captured.err
