"""The CLI's settings flags come from ``config.SPECS``, and every bad value is one line of ours.

Each case runs ``harvester.cli.main`` in-process with a bad value: settings are resolved before
anything else is loaded or touched, so no case needs the API or a lake.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harvester import errors
from harvester.cli import build_parser, main, settings_from
from harvester.config import SETTINGS_COMMANDS, SPECS, Spec, resolve
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
    "quiet": "very",
    "drop_share": "1.5",
    "stamp_tolerance_days": "-1",
}

# The flags of every command before they were generated from SPECS: none may be lost.
RUN_FLAGS = {
    "--config", "--api-url", "--out", "--concurrency", "--rate", "--rows", "--quiet",
    "--log-format", "-v", "--verbose", "-h", "--help",
}  # fmt: skip
LAKE_FLAGS = {"--config", "--out", "--log-format", "-v", "--verbose", "-h", "--help"}
DATES = {"--from", "--to"}
REFRESH = {"--lookback", "--reconcile-days"}
EXPECTED_FLAGS = {
    "harvest": RUN_FLAGS | DATES,
    "refresh": RUN_FLAGS | REFRESH,
    "plan": RUN_FLAGS | DATES | REFRESH | {"--job", "--shards", "--json"},
    "verify": RUN_FLAGS | DATES | {"--repair", "--deep", "--sample", "--sample-seed"},
    "status": LAKE_FLAGS | {"--json"},
    "compact": LAKE_FLAGS,
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No HARVESTER_* variable of the machine running the tests may leak in."""
    for spec in SPECS:
        monkeypatch.delenv(spec.env, raising=False)
    monkeypatch.chdir(tmp_path)


def help_flags(command: str, capsys: pytest.CaptureFixture[str]) -> set[str]:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    return set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", text))


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
        for command in spec.commands
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
            assert str(exc).startswith("must "), (spec.name, junk, str(exc))
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
    with pytest.raises(ConfigError, match=r"invalid date_from from --from: '2019-13-01' must be"):
        resolve({"date_from": "2019-13-01"}, None, environ={})
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
