"""Issue 20, item 4 end to end: every single-partition step of the CLI on one month of a
million rows, each step its own process, its peak RSS measured from outside.

    .venv/bin/python -m bench.month_steps [--records 1000000]      # ~10 minutes on 2 cores

``bench.merge_rss`` measures the merge functions on a built partition; this runs the
commands an operator runs, against ``harvester simulate --records N --start 2019-07-01
--end 2019-07-31 --max-rows 1000 --admin`` (the whole corpus in July 2019, ~32,000 rows a
mail day), with ``configs/default.toml`` and ``--rate 0``, in this order:

1. ``harvest`` of the month;
2. ``verify --deep``: every day of the month fetched and compared field by field;
3. ``verify --repair`` after ``late`` 2,000 and ``delete`` 500 at the source (counts
   differ on most days: the differing days are fetched again and replaced);
4. ``refresh`` after ``late`` 5,000, ``modify`` 5,000, ``delete`` 500 (the file-grain merge
   of changed rows and repaired days; no ``add``: the simulator adds rows on days after the
   month, outside the lake's closed coverage, so they would not touch the partition);
5. ``refresh`` after ``reload`` (every row re-stamped at the source: the month reloaded);
6. ``compact``;
7. ``verify --deep`` again: the lake equal to the source, day by day, every field.

Each step is measured as ``bench.measure`` measures every contender: wall, CPU, peak RSS
(the larger of the child's VmHWM and the sampled process tree). The run is ``ok`` when
every step exits 0 and the lake holds the source's row count; the last step is the
harvester's own field-by-field proof. Writes ``bench/results/month-<records>.json``.
Not part of CI: ``make bench-month``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.measure import clean_env, run_measured
from harvester.sim.testing import SimHandle, run_simulator_process

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
CONFIG = REPO / "configs" / "default.toml"
FIRST, LAST = dt.date(2019, 7, 1), dt.date(2019, 7, 31)
MB = 1_000_000
RSS_LIMIT_MB = 300
REPAIR_CHANGE = {"late": 2000, "delete": 500, "seed": 41}
MIXED_CHANGE = {"late": 5000, "modify": 5000, "delete": 500, "seed": 42}
RELOAD_CHANGE = {"reload": True, "seed": 43}

# (step name, CLI command and its flags, the source change made before it)
STEPS: tuple[tuple[str, tuple[str, ...], dict[str, Any] | None], ...] = (
    ("harvest", ("harvest", "--from", str(FIRST), "--to", str(LAST)), None),
    ("verify --deep", ("verify", "--deep"), None),
    ("verify --repair", ("verify", "--repair"), REPAIR_CHANGE),
    ("refresh (mixed)", ("refresh",), MIXED_CHANGE),
    ("refresh (reload)", ("refresh",), RELOAD_CHANGE),
    ("compact", ("compact",), None),
    ("verify --deep (end)", ("verify", "--deep"), None),
)
_CALLS_API = {"harvest", "verify", "refresh"}


def command(args: Sequence[str], url: str, lake: Path) -> list[str]:
    base = [sys.executable, "-m", "harvester", args[0], "--config", str(CONFIG), "--out", str(lake)]
    if args[0] in _CALLS_API:
        base += ["--api-url", url, "--rate", "0", "--quiet"]
    return [*base, *args[1:]]


def _reports(lake: Path) -> set[Path]:
    return set((lake / "_harvest" / "runs").glob("*.json"))


def run_step(
    name: str, args: Sequence[str], sim: SimHandle, lake: Path, logs: Path
) -> dict[str, Any]:
    before_reports = _reports(lake)
    before_requests = sim.stats()["requests"]
    slug = name.replace(" ", "").replace("(", "-").replace(")", "").replace("--", "-")
    measured = run_measured(command(args, sim.url, lake), log_dir=logs, name=slug, timeout=7200)
    # ``verify --repair`` writes two reports (the check's and the repair's): the step's rows
    # written are what any of them wrote, its lake rows the last one's.
    reports = [json.loads(p.read_text()) for p in sorted(_reports(lake) - before_reports)]
    written = [r["rows_written"] for r in reports if r.get("rows_written") is not None]
    record: dict[str, Any] = {
        "step": name,
        "command": " ".join(command(args, "$SIM_URL", Path("$OUT"))[1:]),
        "exit_code": measured.returncode,
        "wall_s": round(measured.wall_s, 2),
        "cpu_s": round(measured.cpu_s, 2),
        "peak_rss_mb": round(measured.peak_rss_bytes / MB, 1),
        "requests": sim.stats()["requests"] - before_requests,
        "rows_written": max(written) if written else None,
        "rows_in_lake": reports[-1].get("rows_in_lake") if reports else None,
    }
    if measured.returncode != 0:
        record["tail"] = measured.tail(8)
    print(
        f"  {name:20} exit {measured.returncode}, wall {measured.wall_s:6.1f}s,"
        f" cpu {measured.cpu_s:6.1f}s, rss {measured.peak_rss_bytes / MB:4.0f} MB,"
        f" requests {record['requests']}",
        flush=True,
    )
    return record


def run(records: int, work: Path) -> dict[str, Any]:
    lake, logs = work / "lake", work / "logs"
    shutil.rmtree(lake, ignore_errors=True)
    steps: list[dict[str, Any]] = []
    flags = ["--records", str(records), "--start", str(FIRST), "--end", str(LAST),
             "--max-rows", "1000", "--admin"]  # fmt: skip
    source_rows = records
    with run_simulator_process(*flags, env=clean_env()) as sim:
        for name, args, change in STEPS:
            if change is not None:
                summary = sim.mutate(**change)
                source_rows += int(summary.get("added", 0)) + int(summary.get("late", 0))
                source_rows -= int(summary.get("deleted", 0))
            record = run_step(name, args, sim, lake, logs)
            record["change"] = change
            steps.append(record)
            if record["exit_code"] != 0:
                break
    last_rows = next((s["rows_in_lake"] for s in reversed(steps) if s["rows_in_lake"]), None)
    ok = (
        len(steps) == len(STEPS)
        and all(s["exit_code"] == 0 for s in steps)
        and last_rows == source_rows
    )
    return {
        "records": records,
        "month": f"{FIRST:%Y-%m}",
        "source_rows_at_end": source_rows,
        "lake_rows_at_end": last_rows,
        "ok": ok,
        "rss_limit_mb": RSS_LIMIT_MB,
        "steps": steps,
        "sim_args": flags,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "git_commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
            text=True, check=False,
        ).stdout.strip(),
    }  # fmt: skip


def table(result: dict[str, Any]) -> str:
    lines = [
        f"One month of {result['records']:,} rows ({result['month']}), each step its own"
        f" process; target peak RSS <= {result['rss_limit_mb']} MB",
        "",
        "| step | wall | CPU | peak RSS | requests | rows written | target |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in result["steps"]:
        single = s["step"] != "harvest"
        verdict = (
            ("met" if s["peak_rss_mb"] <= result["rss_limit_mb"] else "**missed**")
            if single
            else "-"
        )
        written = f"{s['rows_written']:,}" if s["rows_written"] is not None else "-"
        lines.append(
            f"| {s['step']} | {s['wall_s']:.0f} s"
            f" | {s['cpu_s']:.0f} s | {s['peak_rss_mb']:.0f} MB | {s['requests']:,}"
            f" | {written} | {verdict} |"
        )
    lines.append("")
    lines.append(
        f"Lake rows at the end {result['lake_rows_at_end']:,}, source"
        f" {result['source_rows_at_end']:,}; ok: {result['ok']}."
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.month_steps", description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, help="where the lake and logs go (default: temp)")
    parser.add_argument("--table", action="store_true", help="only print the saved run")
    args = parser.parse_args(argv)
    saved = RESULTS / f"month-{args.records}.json"
    if args.table:
        print(table(json.loads(saved.read_text())))
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-month-"))
    work.mkdir(parents=True, exist_ok=True)
    result = run(args.records, work)
    RESULTS.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(result, indent=2) + "\n")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(table(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
