"""`make demo`: the whole tool on one machine, against the bundled simulator.

Starts the simulator in the background (200,000 rows over a year of mail dates), harvests
it into ``./lake`` with the real command and visible progress, prints what ``harvester show``
prints (DuckDB's rows per month, partitions, size on disk, the newest row), and stops the
simulator. Running it again resumes or re-checks the same lake instead of duplicating
anything.
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
    """What ``harvester show`` prints for the demo's lake (one implementation for both)."""
    from harvester.ops.show import summarise as show_summary
    from harvester.storage.store import Lake

    print()
    print("\n".join(show_summary(Lake.open(str(lake))).lines()))


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
