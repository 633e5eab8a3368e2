"""The ops commands as a user meets them: listed in --help, one-line errors, exit codes.

Also the helpers the other ``test_ops_*`` modules share: running ``python -m harvester``
as a subprocess (as a user runs it) and snapshotting a local lake byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_harvest_e2e import harvest_env


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """``python -m harvester *args`` with the fast test settings (quiet, small window)."""
    return subprocess.run(
        [sys.executable, "-m", "harvester", *args], env=env or harvest_env(), capture_output=True,
        text=True, timeout=timeout, check=False,
    )  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def refresh_all_days(url: str, out: str) -> str:
    """A refresh whose reconcile window (120 days) covers every mail day of the test
    corpora: the simulator deletes and adds rows on old days too."""
    return ok(
        cli("refresh", "--api-url", url, "--out", out, "--rate", "0", "--reconcile-days", "120")
    )


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the hash of its bytes (empty if root does not exist)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }  # fmt: skip


def printed_report(stdout: str) -> dict[str, Any]:
    """The run report whose path the command printed last (``report: <path>``): reports of
    runs within one second cannot be told apart by name order."""
    paths = re.findall(r"^report: (.+)$", stdout, re.M)
    assert paths, stdout
    data: dict[str, Any] = json.loads(Path(paths[-1]).read_text())
    return data


def reports(lake: Path, command: str) -> list[dict[str, Any]]:
    runs = sorted((lake / "_harvest" / "runs").glob(f"*-{command}-*.json"))
    return [json.loads(p.read_text()) for p in runs]


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
