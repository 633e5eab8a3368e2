"""The benchmark's code paths on a tiny corpus: correctness only, never timing.

Each contender runs as ``make bench`` runs it (its own process, measured by
``bench.measure``) against a simulator process, and its output must digest to the
simulator's truth. Skipped unless the bench extra (dlt, requests, psutil) is installed:
CI installs only the test extra.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("dlt")
pytest.importorskip("requests")
pytest.importorskip("psutil")

from bench import report, verify
from bench.contenders import Contender
from bench.measure import clean_env, run_measured
from bench.scenarios import (
    DLT,
    DLT_SERIAL,
    HARVESTER_ROWS100,
    HARVESTER_TUNED,
    NAIVE,
    Bench,
    Sizes,
    harvester_default,
    scenario_unknown,
)
from harvester.sim.testing import SimHandle, run_simulator_process

pytestmark = pytest.mark.timeout(240)

SIM_ARGS = ["--records", "3000", "--seed", "3", "--max-window", "1000000000"]


@pytest.fixture(scope="module")
def bench_sim() -> Iterator[SimHandle]:
    """The bench's corpus with no window limit, started with the bench's clean env."""
    with run_simulator_process(*SIM_ARGS, "--admin", env=clean_env()) as handle:
        yield handle


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return verify.truth_digest(SIM_ARGS, tmp_path_factory.mktemp("truth"))


def _run(contender: Contender, sim: SimHandle, tmp_path: Path) -> tuple[Path, Path, int, str]:
    out, result = tmp_path / "out", tmp_path / "result.json"
    measured = run_measured(
        contender.command(sim.url, out, result), log_dir=tmp_path / "logs", name=contender.name
    )
    assert measured.cpu_s > 0 and measured.peak_rss_bytes > 0
    return out, result, measured.returncode, measured.tail()


@pytest.mark.parametrize(
    "contender",
    [NAIVE, DLT, DLT_SERIAL, harvester_default(0), HARVESTER_TUNED, HARVESTER_ROWS100],
    ids=[
        "naive", "dlt-parallel", "dlt-serial", "harvester-default", "harvester-tuned",
        "harvester-rows100",
    ],
)  # fmt: skip
def test_contender_output_is_the_truth(
    contender: Contender, bench_sim: SimHandle, truth: dict[str, Any], tmp_path: Path
) -> None:
    out, result, code, tail = _run(contender, bench_sim, tmp_path)
    assert code == 0, tail
    con = verify.connect()
    got = verify.digest_of(con, verify.parquet_source(contender.parquet_glob(out)))
    assert verify.compare(truth, got) == []
    own = contender.own_account(out, result)
    assert own["rows"] == truth["rows"]
    if contender.kind == "harvester":  # the throughput scenario's requests / pages needs it
        assert own["service"]["page_size"] > 0
    assert contender.data_files(out)
    median, _, answer = verify.query_time(con, contender.parquet_glob(out))
    assert median > 0 and answer


def test_a_fast_wrong_answer_is_caught(
    bench_sim: SimHandle, truth: dict[str, Any], tmp_path: Path
) -> None:
    """The simulator caps rows at 100 silently; a naive script asking for 200 and adding
    200 to start skips half the rows. The check must say so, not report a fast run."""
    greedy = Contender("naive", "naive", rows=200)
    out, _, code, tail = _run(greedy, bench_sim, tmp_path)
    assert code == 0, tail
    got = verify.digest_of(verify.connect(), verify.parquet_source(greedy.parquet_glob(out)))
    problems = verify.compare(truth, got)
    assert any("rows, expected" in p for p in problems)


def test_unknown_service_scenario(tmp_path: Path) -> None:
    """Scenario 6 on a tiny corpus: the harvester finishes with the exact row set against a
    service with a small window and page cap; the peers fail on the window, and the
    scenario records that (finished, exact, requests / minimum) instead of crashing."""
    sizes = replace(Sizes.quick(), reps=1, dlt_reps=1, unknown_records=3000)
    outcome = scenario_unknown(Bench(tmp_path, sizes, log=lambda _: None))
    summary = outcome["summary"]
    assert set(summary) == {"harvester-default", "naive", "dlt"}
    mine = summary["harvester-default"]
    assert (mine["finished"], mine["exact"]) == (1, 1), mine["failures"]
    assert mine["learned"]["page_size"] == 37
    assert mine["minimum"] == -(-3000 // 37) and mine["ratio"]["median"] >= 1
    for peer in ("naive", "dlt"):  # rows=100 pages run into the 730-row window
        assert summary[peer]["finished"] == 0 and summary[peer]["exact"] == 0
    met = [t["met"] for t in outcome["targets"]]
    assert met[:2] == [True, True] and met[2] is not None
    assert "| requests ÷ minimum |" in "\n".join(report.render_scenario("unknown", outcome))
