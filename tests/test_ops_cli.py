"""The ops commands as a user meets them: listed in --help, one-line errors, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import cli, ok


def test_help_lists_every_ops_command() -> None:
    out = ok(cli("--help"))
    for command in ("plan", "status", "verify", "compact"):
        assert command in out
    assert "--repair" in ok(cli("verify", "--help"))


@pytest.mark.parametrize("command", ["status", "verify", "compact"])
def test_a_path_that_is_no_lake_is_a_one_line_error_and_stays_absent(
    command: str, tmp_path: Path
) -> None:
    out = tmp_path / "nothing-here"
    # verify would need the API after opening the lake: a closed port proves it never gets there.
    result = cli(
        command,
        "--out",
        str(out),
        *(["--api-url", "http://127.0.0.1:9"] if command == "verify" else []),
    )
    assert result.returncode == 4, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("harvester: error:"), result.stderr
    assert "not a harvester lake" in lines[0]
    assert not out.exists()


def test_status_takes_no_api_flags() -> None:
    # Nothing to point at the API, so nothing can reach it.
    result = cli("status", "--out", "x", "--api-url", "http://127.0.0.1:9")
    assert result.returncode == 2 and "unrecognized arguments: --api-url" in result.stderr
