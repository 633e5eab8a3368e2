"""Start a simulator for tests, the demo and benchmarks: as a process, or on the test's loop.

``run_simulator_process`` runs the real command (what a user runs) and waits for its
"listening" line; ``SimHandle`` then talks to its admin routes with plain urllib, so test
code needs no event loop. ``run_simulator_inprocess`` serves on the caller's event loop,
for async tests that want no subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from typing import IO, Any

from harvester.sim.config import SimConfig
from harvester.sim.server import start

# How the simulator is started; one place to change when it moves under `harvester simulate`.
SIM_MODULE: tuple[str, ...] = ("-m", "harvester", "simulate")
READY_PREFIX = "simulator listening on "
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


@dataclass
class SimHandle:
    """A running simulator process: its base URL and admin helpers (need ``--admin``)."""

    url: str
    process: subprocess.Popen[str]

    def _call(self, path: str, payload: Mapping[str, Any] | None = None) -> bytes:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            body: bytes = response.read()
            return body

    def mutate(self, **spec: Any) -> dict[str, Any]:
        """POST /_sim/mutate with ``spec`` (add, late, modify, delete, reorder, seed)."""
        summary: dict[str, Any] = json.loads(self._call("/_sim/mutate", spec))
        return summary

    def truth_bytes(self) -> bytes:
        """GET /_sim/truth as served: one JSON line per row, in index order."""
        return self._call("/_sim/truth")

    def truth(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.truth_bytes().splitlines()]

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = json.loads(self._call("/_sim/stats"))
        return stats

    def faults(self, rate: float, kinds: Sequence[str] | None = None) -> None:
        """POST /_sim/faults: fault ``rate`` of the API requests from now on, of ``kinds``."""
        payload: dict[str, Any] = {"rate": rate}
        if kinds is not None:
            payload["kinds"] = list(kinds)
        self._call("/_sim/faults", payload)

    def quota_reset(self) -> None:
        """POST /_sim/quota-reset: the weekly quota's Sunday, now."""
        self._call("/_sim/quota-reset", {})


def _wait_for_ready(process: subprocess.Popen[str], stderr: IO[bytes]) -> str:
    assert process.stdout is not None
    found: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(READY_PREFIX):
                found.append(line)
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(START_TIMEOUT)
    if not found:
        process.kill()
        process.wait()
        stderr.seek(0)
        detail = stderr.read().decode(errors="replace").strip()
        raise RuntimeError(f"the simulator did not start (exit {process.returncode}): {detail}")
    return found[0][len(READY_PREFIX) :].split()[0]


@contextmanager
def run_simulator_process(
    *args: str,
    env: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Iterator[SimHandle]:
    """Run ``command`` (default: this Python's ``-m harvester simulate``; an installed
    ``harvester simulate`` works too) with ``--port 0 *args`` until the block ends."""
    launch = list(command) if command is not None else [sys.executable, *SIM_MODULE]
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            [*launch, "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=dict(env) if env is not None else dict(os.environ),
            cwd=cwd,
        )
        try:
            yield SimHandle(_wait_for_ready(process, stderr), process)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()


@asynccontextmanager
async def run_simulator_inprocess(
    config: SimConfig | None = None, /, **overrides: Any
) -> AsyncIterator[str]:
    """Serve ``config`` on the running event loop; yields the base URL.

    ``config.port`` is used as given: pass ``port=0`` for a free port. Keyword arguments
    are ``SimConfig`` fields replaced in ``config`` (or, without one, in a default config
    on a free port), so ``run_simulator_inprocess(BASE, sort="honour")`` or
    ``run_simulator_inprocess(records=500, window_error=500)`` need no ``replace``.
    """
    if config is None:
        config = SimConfig(**{"port": 0, **overrides})
    elif overrides:
        config = replace(config, **overrides)
    runner, url = await start(config)
    try:
        yield url
    finally:
        await runner.cleanup()
