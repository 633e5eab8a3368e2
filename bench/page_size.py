"""Pages sized for rows per second (issue 20, item 5): the harvester's chosen page against
fixed pages, on a simulator whose answers take longer the larger the page.

    make bench-pages                         # ~5 minutes on 2 cores
    .venv/bin/python -m bench.page_size --records 100000 --sizes 1000 5000

Starts ``harvester simulate --max-rows 5000 --latency-base 0.15 --latency-per-row 0.0002
--max-response-bytes 6000000`` (a page of p rows answers in 150 ms + 0.2 ms x p, a body
above 6 MB is a 413) and harvests the same rows into a new lake once per contender, as a
user runs it (``python -m harvester harvest``), at the harvester's default rate limit
(4 requests/s) and concurrency (1):

- ``defaults``: nothing set; the probe climbs and chooses the page by rows per second;
- ``fixed N``: ``HARVESTER_ROWS=N HARVESTER_FIXED_ROWS=1`` (the choice disabled).

For each it prints the wall time of the whole run (probe, plan, pages, closing check), rows
per second, the page size used and the requests sent, and at the end: rows/s of the
defaults over the best fixed page (target >= 0.9), and the defaults' requests over
``ceil(rows / chosen page)`` (target <= 1.05), with the share of it that the shards'
partial last pages make (``sum ceil(shard rows / page)``, from the shard markers). Not part
of the test suite; the figures live in docs/benchmarks.md, "Page size for rows per second".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harvester.sim.testing import run_simulator_process

LATENCY_BASE = 0.15  # seconds: a records answer's fixed cost
LATENCY_PER_ROW = 0.0002  # seconds a served row adds
MAX_ROWS = 5000  # the simulator's page cap
PAYLOAD_CAP = 6_000_000  # bytes: ODP's 413 above it
START, END = "2018-06-01", "2019-05-31"
SIZES = (500, 1000, 2000, 5000)


@dataclass
class Run:
    name: str
    seconds: float
    rows: int
    requests: int
    overhead: int  # the probe's requests and the closing check's
    page_size: int
    shard_pages: int  # sum over shards of ceil(rows / page_size)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("HARVESTER_", "USPTO_", "AWS_"))
    }
    return {**env, "HARVESTER_QUIET": "1", **extra}


def harvest(url: str, name: str, env: dict[str, str]) -> Run:
    with tempfile.TemporaryDirectory(prefix="bench-pages-") as tmp:
        out = Path(tmp) / "lake"
        cmd = [sys.executable, "-m", "harvester", "harvest", "--api-url", url, "--out", str(out)]
        cmd += ["--from", START, "--to", END]  # the simulator's dates: no search for the first
        began = time.monotonic()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - began
        if done.returncode != 0:
            raise SystemExit(f"{name}: harvest failed ({done.returncode}): {done.stderr[-2000:]}")
        state = out / "_harvest"
        report = json.loads(sorted((state / "runs").glob("*-harvest-*.json"))[-1].read_text())
        page = int(json.loads((state / "service.json").read_text())["page_size"])
        markers = [json.loads(p.read_text()) for p in state.glob("shards/**/*.json")]
        shard_rows = [int(m.get("rows") or 0) for m in markers if m.get("status") == "done"]
        return Run(
            name,
            seconds,
            int(report["rows_written"]),
            int(report["requests"]),
            int(report["extra"]["service"]["probe_requests"])
            + int(report["closing_check_requests"]),
            page,
            sum(math.ceil(r / page) for r in shard_rows if r),
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    args = parser.parse_args(argv)
    sim_args = (
        *("--records", str(args.records), "--start", START, "--end", END),
        *("--max-rows", str(MAX_ROWS), "--max-response-bytes", str(PAYLOAD_CAP)),
        *("--latency-base", str(LATENCY_BASE), "--latency-per-row", str(LATENCY_PER_ROW)),
    )
    print(
        f"simulator: {args.records:,} rows {START}..{END}, max rows {MAX_ROWS},"
        f" latency {LATENCY_BASE * 1000:.0f} ms + {LATENCY_PER_ROW * 1000:.1f} ms/row;"
        " harvester: rate 4/s, concurrency 1 (its defaults);"
        f" load average {os.getloadavg()[0]:.2f} (1 min)"
    )
    runs: list[Run] = []
    with run_simulator_process(*sim_args) as sim:
        contenders = [("defaults", _clean_env())] + [
            (f"fixed {n}", _clean_env(HARVESTER_ROWS=str(n), HARVESTER_FIXED_ROWS="1"))
            for n in args.sizes
        ]
        for name, env in contenders:
            run = harvest(sim.url, name, env)
            runs.append(run)
            print(
                f"{name:>12}: {run.seconds:7.1f} s  {run.rows_per_second:7,.0f} rows/s"
                f"  page {run.page_size:>5}  {run.requests:>5} requests"
                f" ({run.overhead} probe + closing check)"
                f"  ({run.rows:,} rows)",
                flush=True,
            )
    print(f"load average at the end: {os.getloadavg()[1]:.2f} (5 min)")
    chosen, fixed = runs[0], runs[1:]
    best = max(fixed, key=lambda r: r.rows_per_second)
    ideal = math.ceil(chosen.rows / chosen.page_size)
    speed = chosen.rows_per_second / best.rows_per_second
    spent = chosen.requests / ideal
    print(f"defaults / best fixed ({best.name}): {speed:.2f} (target >= 0.9)")
    print(
        f"requests / ceil(rows / chosen page {chosen.page_size}): {chosen.requests} / {ideal}"
        f" = {spent:.2f} (target <= 1.05); the shards' own pages alone:"
        f" {chosen.shard_pages} (= {chosen.shard_pages / ideal:.2f}),"
        f" the rest ({chosen.requests - chosen.shard_pages}): probe and closing check"
        f" {chosen.overhead}, plan counts and re-asked pages"
        f" {chosen.requests - chosen.shard_pages - chosen.overhead}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
