"""The CLI's settings flags come from ``config.SPECS``, and every bad value is one line of ours.

Each case runs ``harvester.cli.main`` in-process with a bad value: settings are resolved before
anything else is loaded or touched, so no case needs the API or a lake.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from harvester import errors
from harvester.cli import build_parser, flag_help, main, settings_from
from harvester.config import (
    RUN_COMMANDS,
    SETTINGS_COMMANDS,
    SPECS,
    Settings,
    Spec,
    resolve,
    show_value,
)
from harvester.errors import ConfigError

PYTHON_WORDING = (
    "invalid literal",
    "could not convert",
    "Traceback",
    "base 10",
    "argument must be",
    "object has no attribute",
    "NoneType",
    "Invalid isoformat",
)

# Bad values for every setting that has a flag (switches take no value). A new flagged
# setting must be added here: test_every_valued_flag_has_bad_values checks it.
BAD_FLAG_VALUES: dict[str, tuple[str, ...]] = {
    "api_url": ("ftp://x", "api.uspto.gov", ""),
    "rate": ("fast", "-1", "nan", "inf", "1,5"),
    "concurrency": ("x", "0", "1.5", "-3", ""),
    "rows": ("many", "0", "1e3"),
    "out": ("gs://bucket/x", "http://host/lake", ""),
    "date_from": ("2019-13-01", "yesterday", "2019-02-30"),
    "date_to": ("2019-01-32", "x"),
    "lookback_days": ("x", "-1", "2.5"),
    "reconcile_days": ("-1", "thirty", "1e2"),
    "max_requests": ("x", "-1", "1.5"),
    "log_format": ("xml", "TEXT", ""),
}

# Bad values for every setting, as text from the environment; s3_region takes any text.
BAD_ENV_VALUES: dict[str, str] = {
    **{name: values[0] for name, values in BAD_FLAG_VALUES.items() if values[0]},
    "max_window": "big",
    "timeout": "0",
    "max_attempts": "x",
    "min_429_wait": "-5",
    "backoff_base": "slow",
    "backoff_max": "0",
    "date_template": "submissionDate:[{start}]",
    "s3_endpoint_url": "minio:9000",
    "shard_size": "1.5",
    "shard_attempts": "none",
    "page_checkpoints": "maybe",
    "fixed_rows": "maybe",
    "quiet": "very",
    "drop_share": "1.5",
    "reload_share": "-0.1",
    "stamp_tolerance_days": "-1",
    "weekly_quota": "-1",
    "quota_wait": "sometimes",
    "quota_after": "0",
    "quota_probe": "often",
    "outage_after": "-1",
    "outage_wait_max": "-1",
    "max_outage": "soon",
    "max_retry_after": "0",
    "rebind_source": "perhaps",
}

# The flags of every command before they were generated from SPECS: none may be lost.
RUN_FLAGS = {
    "--config", "--api-url", "--out", "--concurrency", "--rate", "--rows", "--quiet",
    "--log-format", "-v", "--verbose", "-h", "--help",
}  # fmt: skip
LAKE_FLAGS = {"--config", "--out", "--log-format", "-v", "--verbose", "-h", "--help"}
DATES = {"--from", "--to"}
REFRESH = {"--lookback", "--reconcile-days"}
FETCHING = {"--wait-for-quota", "--max-requests"}  # runs that may spend many requests
SOURCE = {"--rebind-source"}  # every command that talks to the API checks the lake's source
EXPECTED_FLAGS = {
    "harvest": RUN_FLAGS | SOURCE | DATES | FETCHING,
    "refresh": RUN_FLAGS | SOURCE | REFRESH | FETCHING,
    "plan": RUN_FLAGS | SOURCE | DATES | REFRESH | {"--job", "--shards", "--json"},
    "verify": (
        RUN_FLAGS | SOURCE | DATES | FETCHING | {"--repair", "--deep", "--sample", "--sample-seed"}
    ),
    "status": LAKE_FLAGS | {"--json"},
    "compact": LAKE_FLAGS,
    "show": LAKE_FLAGS | {"--json"},
    # Every settings flag of every command, so any command line's settings can be shown.
    "config": (RUN_FLAGS | SOURCE | DATES | REFRESH | FETCHING | {"--show-origin", "--json"})
    - {"-v", "--verbose"},
}
KEY_VARIABLES = ("USPTO_API_KEY", "USPTO_API_KEY_FILE")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # argparse wraps help to the terminal's width, breaking at hyphens ("YYYY-" "MM-DD"):
    # a width no line reaches keeps each flag's help whole, whatever runs the tests.
    monkeypatch.setenv("COLUMNS", "1000")
    monkeypatch.chdir(tmp_path)


def help_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def help_flags(command: str, capsys: pytest.CaptureFixture[str]) -> set[str]:
    """The flags the help's usage and options list, not those its closing text names."""
    paragraphs = help_text([command], capsys).split("\n\n")
    options = next(i for i, p in enumerate(paragraphs) if p.startswith("options:"))
    text = "\n\n".join(paragraphs[: options + 1])
    return set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", text))


def flat(text: str) -> str:
    """Help text with argparse's line wrapping undone, to search for whole phrases."""
    return " ".join(text.split())


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("harvester: error: "), captured.err
    assert captured.out == ""
    for wording in PYTHON_WORDING:
        assert wording not in lines[0]
    return lines[0]


def flagged(spec: Spec) -> bool:
    return spec.flag is not None and not spec.switch


def test_specs_declare_flags_consistently() -> None:
    flags = [spec.flag for spec in SPECS if spec.flag]
    assert len(flags) == len(set(flags))
    for spec in SPECS:
        assert spec.help and "\n" not in spec.help, spec.name
        assert (spec.flag is None) == (not spec.commands), spec.name
        assert set(spec.commands) <= set(SETTINGS_COMMANDS), spec.name
        if spec.flag:
            assert spec.flag.startswith("--"), spec.name


@pytest.mark.parametrize("command", sorted(EXPECTED_FLAGS))
def test_each_command_keeps_its_flags(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert help_flags(command, capsys) == EXPECTED_FLAGS[command]


def test_every_valued_flag_has_bad_values() -> None:
    assert set(BAD_FLAG_VALUES) == {spec.name for spec in SPECS if flagged(spec)}


@pytest.mark.parametrize(
    ("spec", "command", "bad"),
    [
        pytest.param(spec, command, bad, id=f"{command} {spec.flag} {bad!r}")
        for spec in SPECS
        if flagged(spec)
        for command in (*spec.commands, "config")
        for bad in BAD_FLAG_VALUES[spec.name]
    ],
)
def test_a_bad_flag_value_names_that_flag_in_our_words(
    spec: Spec, command: str, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = help_flags(command, capsys)
    assert main([command, f"{spec.flag}={bad}"]) == errors.EXIT_CONFIG
    line = one_error_line(capsys)
    named = re.search(r" from (--[\w-]+): ", line)
    assert named, line
    assert named.group(1) == spec.flag
    assert named.group(1) in listed
    assert spec.name in line and repr(bad) in line


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["plan", "--from", "2019-02-01", "--to", "2019-01-01"], ("--from", "--to")),
        (["harvest", "--from", "2019-02-01", "--to", "2019-01-01"], ("--from", "--to")),
    ],
)
def test_checks_across_settings_name_the_flags(
    argv: list[str], named: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == errors.EXIT_CONFIG
    line = one_error_line(capsys)
    for flag in named:
        assert f"(from {flag})" in line


def test_every_setting_has_a_bad_environment_value() -> None:
    assert set(BAD_ENV_VALUES) == {spec.name for spec in SPECS} - {"s3_region"}


@pytest.mark.parametrize(
    "spec", [spec for spec in SPECS if spec.name in BAD_ENV_VALUES], ids=lambda s: s.env
)
def test_a_bad_environment_value_names_the_variable(
    spec: Spec, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(spec.env, BAD_ENV_VALUES[spec.name])
    assert main(["plan"]) == errors.EXIT_CONFIG
    line = one_error_line(capsys)
    assert f"invalid {spec.name} from ${spec.env}: " in line


@pytest.mark.parametrize(
    ("toml", "name"),
    [
        ('[refresh]\nlookback = "x"\n', "lookback_days"),
        ("[api]\nrows = 2.5\n", "rows"),
        ("[api]\nrate = true\n", "rate"),
        ("[api]\nrate = [1]\n", "rate"),
        ("[api]\ntimeout = {}\n", "timeout"),
        ("[lake]\nout = 5\n", "out"),
        ("[lake]\nregion = 5\n", "s3_region"),
        ("[harvest]\nfrom = 2019-01-01T00:00:00\n", "date_from"),
        ("[harvest]\npage_checkpoints = 1\n", "page_checkpoints"),
        ("[log]\nformat = 1\n", "log_format"),
    ],
)
def test_a_bad_config_file_value_names_the_file_and_key(
    toml: str, name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    assert main(["plan", "--config", str(path)]) == errors.EXIT_CONFIG
    line = one_error_line(capsys)
    section, key = next(spec.toml for spec in SPECS if spec.name == name)
    assert f"invalid {name} from [{section}] {key} in {path}: " in line


JUNK: tuple[object, ...] = (
    "", " ", "x", "1e999", "nan", "-inf", "1.5", "-1", "0", "2019-13-01",
    True, 2.5, float("nan"), [], {}, [1], object(),
)  # fmt: skip


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_parsers_fail_only_with_value_errors_in_our_words(spec: Spec) -> None:
    for junk in JUNK:
        try:
            spec.parse(junk)
        except ValueError as exc:
            # "must ..." for the wrong form; "does not exist (...)" for a date of the right
            # form that names no day.
            assert str(exc).startswith(("must ", "does not exist (")), (spec.name, junk, str(exc))
            for wording in PYTHON_WORDING:
                assert wording not in str(exc)


@pytest.mark.parametrize("command", [*sorted(EXPECTED_FLAGS), "simulate"])
def test_a_wrong_flag_prints_the_sub_commands_usage(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--bogus", "1"])
    assert exit_info.value.code == errors.EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith(f"usage: harvester {command} ")
    assert f"harvester {command}: error: unrecognized arguments: --bogus 1" in err


def test_a_wrong_flag_before_the_command_prints_the_top_level_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--bogus", "status"])
    assert exit_info.value.code == errors.EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("usage: harvester [-h]")
    assert "harvester: error: unrecognized arguments: --bogus" in err


def test_a_flag_of_another_command_prints_this_commands_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["harvest", "--lookback", "3"])
    err = capsys.readouterr().err
    assert err.startswith("usage: harvester harvest ")
    assert "unrecognized arguments: --lookback 3" in err


def test_flags_not_given_fall_back_to_environment_then_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HARVESTER_LOOKBACK", "9")
    monkeypatch.setenv("HARVESTER_RECONCILE_DAYS", "11")
    args = build_parser().parse_args(["refresh", "--lookback", "5", "--quiet"])
    settings = settings_from(args)
    assert settings.lookback_days == 5  # flag over environment
    assert settings.reconcile_days == 11  # environment
    assert settings.quiet is True
    assert settings_from(build_parser().parse_args(["refresh"])).quiet is False  # default
    no_flags = build_parser().parse_args(["plan"])
    assert all(getattr(no_flags, spec.name, None) is None for spec in SPECS)


def test_resolve_names_the_flag_not_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"invalid date_from from --from: '2019-13-01' does not"):
        resolve({"date_from": "2019-13-01"}, None, environ={})
    with pytest.raises(ConfigError, match=r"invalid date_from from --from: '20190101' must be"):
        resolve({"date_from": "20190101"}, None, environ={})
    with pytest.raises(ConfigError, match=r"from --lookback: 'x' must be a whole number >= 0$"):
        resolve({"lookback_days": "x"}, None, environ={})


def test_error_classes_carry_the_documented_exit_codes() -> None:
    assert errors.HarvesterError.exit_code == errors.EXIT_UNEXPECTED == 1
    assert errors.ConfigError.exit_code == errors.EXIT_CONFIG == 2
    assert errors.ApiError.exit_code == errors.AuthError.exit_code == errors.EXIT_API == 3
    assert errors.LakeError.exit_code == errors.EXIT_LAKE == 4
    assert (errors.EXIT_OK, errors.EXIT_FAILED_SHARDS, errors.EXIT_MISMATCH) == (0, 5, 6)
    assert errors.EXIT_INTERRUPTED == 130
    for name in ("EXIT_FAILED_SHARDS", "EXIT_MISMATCH", "EXIT_INTERRUPTED"):
        assert name in (errors.__doc__ or "")


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def flags_of(command: str) -> list[Spec]:
    return [s for s in SPECS if s.flag and (command == "config" or command in s.commands)]


def test_every_option_of_every_command_has_help() -> None:
    for name, parser in command_parsers().items():
        for action in parser._actions:
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)


def test_each_flags_help_is_generated_from_its_spec(capsys: pytest.CaptureFixture[str]) -> None:
    parsers = command_parsers()
    for command in EXPECTED_FLAGS:
        actions = {a.dest: a for a in parsers[command]._actions}
        text = flat(help_text([command], capsys))
        for spec in flags_of(command):
            section, key = spec.toml
            teaches = f"(default: {spec.shown_default()}; env {spec.env}; config [{section}] {key})"
            assert actions[spec.name].help == flag_help(spec).replace("%", "%%")
            assert flag_help(spec) == f"{spec.help} {teaches}"
            # As a user reads it: the flag, its meaning, its default, variable and key.
            shown = f"{spec.flag} {spec.metavar}" if spec.metavar else str(spec.flag)
            assert f"{shown} {flat(flag_help(spec))}" in text, (command, spec.flag)


def test_the_defaults_help_shows_are_those_a_run_uses() -> None:
    defaults = resolve({}, None, environ={})
    for spec in SPECS:
        value = getattr(defaults, spec.name)
        assert value == getattr(Settings(), spec.name)
        if spec.default_text is None:
            assert value is not None, f"{spec.name}: a default of None needs default_text"
            assert spec.shown_default() == show_value(value)
        else:  # words only where the value would say nothing
            assert value is None and spec.shown_default() == spec.default_text
    assert spec_named("rate").shown_default() == "4.0"
    assert spec_named("quiet").shown_default() == "false"


def spec_named(name: str) -> Spec:
    return next(s for s in SPECS if s.name == name)


@pytest.mark.parametrize("command", sorted(EXPECTED_FLAGS))
def test_help_lists_the_settings_without_a_flag_and_the_key_variables(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = flat(help_text([command], capsys))
    talks_to_api = command in RUN_COMMANDS or command == "config"
    for spec in SPECS:
        listed = f"{spec.env}, config {spec.origin_of_toml()} (default: {spec.shown_default()})"
        wanted = spec.flag is None and (talks_to_api or spec.toml[0] == "lake")
        assert (listed in text) == wanted, (command, spec.name)
        if wanted:
            assert f"{listed} {flat(spec.help)}" in text
    for variable in KEY_VARIABLES:
        assert (variable in text) == talks_to_api, (command, variable)
    assert "flag > environment > config file > default" in text
    assert "'harvester config' prints what they resolve to" in text


def test_the_top_level_help_names_the_key_variables(capsys: pytest.CaptureFixture[str]) -> None:
    text = flat(help_text([], capsys))
    for variable in KEY_VARIABLES:
        assert variable in text
    assert "'harvester COMMAND --help' lists every setting" in text
    assert re.search(r"^ +config +the settings a run would use", help_text([], capsys), re.M)
