"""`make demo`: the whole tool on one machine, against the bundled simulator.

Starts the simulator in the background (200,000 rows over a year of mail dates), harvests
it into ``./lake`` with the real command and visible progress, prints a DuckDB summary of
the lake (rows in total and per month), and stops the simulator. Running it again resumes
or re-checks the same lake instead of duplicating anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from harvester.sim.testing import run_simulator_process

DEMO_RECORDS = 200_000
LAKE = Path("lake")


def summarise(lake: Path) -> None:
    import duckdb

    glob = f"{lake.as_posix()}/**/*.parquet"
    con = duckdb.connect()
    total = con.execute(
        "SELECT count(*), count(DISTINCT id) FROM read_parquet(?, hive_partitioning = true)", [glob]
    ).fetchone()
    assert total is not None
    print(f"\nDuckDB over {lake}/: {total[0]:,} rows, {total[1]:,} distinct ids")
    rows = con.execute(
        "SELECT year, month, count(*) AS n FROM read_parquet(?, hive_partitioning = true)"
        " GROUP BY ALL ORDER BY year, month",
        [glob],
    ).fetchall()
    print("year  month       rows")
    for year, month, n in rows:
        print(f"{year:<5} {month:>5} {n:>10,}")


def main() -> int:
    started = time.monotonic()
    print(f"starting the simulator ({DEMO_RECORDS:,} rows) ...", flush=True)
    with run_simulator_process("--records", str(DEMO_RECORDS), "--seed", "1") as sim:
        print(f"simulator at {sim.url}; harvesting into ./{LAKE} ...", flush=True)
        env = {**os.environ, "HARVESTER_PROGRESS_INTERVAL": "2"}
        command = [
            sys.executable,
            "-m",
            "harvester",
            "harvest",
            "--config",
            "configs/demo.toml",
            "--api-url",
            sim.url,
            "--out",
            str(LAKE),
        ]
        result = subprocess.run(command, env=env, check=False)
        if result.returncode != 0:
            print(f"harvest failed with exit code {result.returncode}", file=sys.stderr)
            return result.returncode
    summarise(LAKE)
    print(f"\ndemo finished in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
