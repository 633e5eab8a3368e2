"""Running ``harvester harvest`` as the real command in a subprocess, as a user runs it,
with settings that keep the tests fast (short timeouts and backoffs, a small window)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from harvester.sim.testing import SimHandle
from tests.support.env import scrubbed_environ

# Two months of mail dates, ~340 rows a day on average: with a window of 300, many days
# must be split by id range.
RANGE = ("--start", "2019-01-01", "--end", "2019-02-28")
WINDOW = "300"
# The mail dates of RANGE as a harvest's or plan's --from/--to.
DATES = ("--from", "2019-01-01", "--to", "2019-02-28")
FAST_RETRIES = {
    "HARVESTER_TIMEOUT": "1.5",
    "HARVESTER_MIN_429_WAIT": "0.05",
    "HARVESTER_BACKOFF_BASE": "0.02",
    "HARVESTER_BACKOFF_MAX": "0.3",
    "HARVESTER_MAX_ATTEMPTS": "20",
    "HARVESTER_MAX_WINDOW": WINDOW,
    "HARVESTER_SHARD_SIZE": WINDOW,
    "HARVESTER_QUIET": "1",
}


def harvest_env(**extra: str) -> dict[str, str]:
    """The scrubbed environment (``tests.support.env``) with the fast settings and ``extra``."""
    return scrubbed_environ(**{**FAST_RETRIES, **extra})


def harvest_cmd(url: str, out: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "harvester",
        "harvest",
        "--api-url",
        url,
        "--out",
        out,
        "--concurrency",
        "4",
        "--rate",
        "0",
        *extra,
    ]


def refresh_cmd(url: str, out: str, *extra: str) -> list[str]:
    """``harvest_cmd``'s command line as a refresh (same fast settings, ``extra`` flags)."""
    cmd = harvest_cmd(url, out, *extra)
    cmd[cmd.index("harvest")] = "refresh"
    return cmd


def refresh_phase(out: str) -> str | None:
    """The phase ``_harvest/refresh/run.json`` names (None: no refresh under way)."""
    try:
        return str(
            json.loads((Path(out) / "_harvest" / "refresh" / "run.json").read_text())["phase"]
        )
    except (OSError, ValueError, KeyError):
        return None


def run_harvest(
    url: str, out: str, *extra: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        harvest_cmd(url, out, *extra),
        env=env or harvest_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def signals_as_in_a_terminal() -> None:
    """A child's ``preexec_fn``: SIGINT, SIGTERM and SIGHUP at their default action.

    A shell that starts the test run in the background (`make test &`, CI runners) ignores
    SIGINT, `nohup` ignores SIGHUP, and the ignoring is inherited: Python then never
    installs its Ctrl-C handler, and the harvester keeps an ignored SIGHUP ignored as nohup
    wants. A harvest in a terminal's foreground has the default actions."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def start_harvest(url: str, out: Path, *extra: str) -> subprocess.Popen[str]:
    """A harvest running in the background (output captured), to be killed or waited on."""
    return subprocess.Popen(
        harvest_cmd(url, str(out), *extra),
        env=harvest_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=signals_as_in_a_terminal,
    )


def harvest_through_drift(sim: SimHandle, out: Path) -> subprocess.CompletedProcess[str]:
    """A slow harvest (60 requests/s, one at a time) while the index drifts under it: three
    rounds, a second apart, each reordering every day and adding new and late rows."""
    proc = start_harvest(sim.url, out, "--rate", "60", "--concurrency", "1")
    # The drift is the fetch's to meet: wait for the plan (a count that moves while the
    # plan is made is the planner's guard, CountsDisagree, another test's subject).
    deadline = time.monotonic() + 60
    while not (out / "_harvest" / "plan.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    for round_seed in (1, 2, 3):
        time.sleep(1.0)
        sim.mutate(reorder=True, add=300, late=200, seed=round_seed)
    stdout, stderr = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
