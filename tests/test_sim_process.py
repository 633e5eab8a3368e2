"""The simulator as users run it: a process that announces its URL and stops cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import orjson
import pytest

from harvester.sim.server import RECORDS_PATH
from harvester.sim.testing import SIM_MODULE, run_simulator_process


def post(url: str, **form: str) -> tuple[int, bytes]:
    data = urllib.parse.urlencode(form).encode()
    try:
        with urllib.request.urlopen(url + RECORDS_PATH, data=data, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_process_serves_mutates_and_tells_the_truth() -> None:
    with run_simulator_process("--records", "2000", "--admin", "--seed", "4") as sim:
        assert sim.url.startswith("http://127.0.0.1:")
        status, body = post(sim.url, rows="100")
        assert status == 200
        page = orjson.loads(body)["response"]["docs"]
        lines = sim.truth_bytes().splitlines()
        assert len(lines) == 2000
        assert [orjson.loads(line) for line in lines[:100]] == page
        summary = sim.mutate(add=10, delete=3, seed=1)
        assert summary["numFound"] == 2007 == len(sim.truth())
        stats = sim.stats()
        assert stats["requests"] == 1 and stats["mutations"] == 1
        assert stats["throttled"] == 0 and stats["faults"] == {}
    assert sim.process.returncode == 0  # SIGTERM stops it cleanly


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_stop_it_quickly(sig: signal.Signals) -> None:
    with run_simulator_process("--records", "100") as sim:
        started = time.monotonic()
        sim.process.send_signal(sig)
        assert sim.process.wait(10) == 0
        assert time.monotonic() - started < 5


def test_bad_options_are_one_line_errors() -> None:
    result = subprocess.run(
        [sys.executable, *SIM_MODULE, "--start", "2019-02-01", "--end", "2019-01-01"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "end 2019-01-01 is before start 2019-02-01" in result.stderr


def test_a_failed_start_raises_with_the_reason() -> None:
    with (
        pytest.raises(RuntimeError, match="did not start"),
        run_simulator_process("--records", "-5"),
    ):
        pass
