"""Running ``python -m harvester`` as a subprocess (as a user runs it), checking its exit,
reading the run reports it leaves, and snapshotting a local lake byte for byte."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.harvest import harvest_env


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
