"""Real scale: every command of a lake's life at 1 M and 10 M rows over eight years.

    .venv/bin/python -m bench.scale --records 1000000              # ~6 minutes on 2 cores
    .venv/bin/python -m bench.scale --records 10000000 --also 1000000   # ~50 minutes
    .venv/bin/python -m bench.scale --table 1000000 10000000       # print the saved runs
    .venv/bin/python -m bench.scale --records 10000000 --max-rows 5000  # item 5: harvest only

For each size it starts ``harvester simulate --records N --start 2018-06-01 --end
2026-05-31 --max-rows 1000 --admin`` and runs the real CLI, one process per step, in
order: ``harvest``, ``status``, ``plan`` (the refresh plan of the complete lake),
a mixed change at the source (``POST /_sim/mutate`` with ``CHANGE``), ``refresh``,
``verify``, ``compact``, ``show``. Every step is measured from outside as ``bench.measure``
measures every contender: wall time, CPU (user + system of the child, from ``wait4``),
peak RSS (the larger of the child's VmHWM and the sampled process tree). Requests come
from the run report the step writes under ``<lake>/_harvest/runs/`` (``requests``; for
refresh also ``extra.rows_fetched`` and ``extra.partitions_rewritten``); steps that write
no report (status, plan, show) are given the simulator's own count of what they asked.

Minimum requests:

- harvest: ``ceil(rows / page size)``, the page size from the report
  (``extra.service.page_size``): every row paged once, no count, no probe.
- refresh: the pages of the rows the change brought (``add + late + modify`` at the page
  size: deleted rows need no page) plus one count per month the lake covers (the fewest
  counts that can see a deletion in every month): a lower bound no refresh reaches.

Refresh rows written are compared with the rows of the days the change touched (the
mutation's ``days``, counted in the lake after the refresh by DuckDB).

Writes ``bench/results/scale-<records>.json`` per size and prints the table of every size
run (or saved, with ``--also``) side by side. Not part of CI: ``make bench-scale``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.measure import clean_env, run_measured
from harvester.sim.testing import SimHandle, run_simulator_process

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
CONFIG = REPO / "configs" / "default.toml"
START, END = dt.date(2018, 6, 1), dt.date(2026, 5, 31)
PAGE = 1000
CHANGE = {"add": 5000, "late": 2000, "modify": 5000, "delete": 1000}
MB = 1_000_000
STEPS = ("harvest", "status", "plan", "refresh", "verify", "compact", "show")
SINGLE_PARTITION = ("refresh", "verify", "compact")  # one partition in memory at a time
RSS_LIMIT_MB = 300
CPU_FLAT = 0.10
REFRESH_ROWS_X = 2.0
REFRESH_REQUESTS_X = 1.3


# ``--max-rows``: the simulator's page ceiling; above the 1,000 it also caps a
# response at the real service's 6 MB, so the probe finds what it serves up to the cap.
MAX_RESPONSE_BYTES = 6_000_000


def sim_flags(records: int, max_rows: int = PAGE) -> list[str]:
    flags = ["--records", str(records), "--start", str(START), "--end", str(END),
             "--max-rows", str(max_rows), "--admin"]  # fmt: skip
    if max_rows != PAGE:
        flags += ["--max-response-bytes", str(MAX_RESPONSE_BYTES)]
    return flags


def result_name(records: int, max_rows: int = PAGE) -> str:
    """``scale-N.json``; a run against another page ceiling (harvest only) apart."""
    return f"scale-{records}.json" if max_rows == PAGE else f"scale-{records}-rows{max_rows}.json"


def command(step: str, url: str, lake: Path) -> list[str]:
    """The CLI as an operator runs it: the default config, rate off where it calls the API."""
    base = [sys.executable, "-m", "harvester", step, "--config", str(CONFIG), "--out", str(lake)]
    api = ["--api-url", url, "--rate", "0"]
    if step == "harvest":
        return [*base, *api, "--from", str(START), "--to", str(END), "--quiet"]
    if step in ("refresh", "verify"):
        return [*base, *api, "--quiet"]
    if step == "plan":
        return [*base, *api]
    return base  # status, compact, show: no API flag


def _reports(lake: Path) -> set[Path]:
    return set((lake / "_harvest" / "runs").glob("*.json"))


def run_step(step: str, sim: SimHandle, lake: Path, logs: Path, records: int) -> dict[str, Any]:
    before_reports = _reports(lake)
    before = sim.stats()
    measured = run_measured(
        command(step, sim.url, lake), log_dir=logs, name=f"{records}-{step}", timeout=7200
    )
    after = sim.stats()
    sim_requests = after["requests"] - before["requests"]
    new = sorted(_reports(lake) - before_reports)
    report: dict[str, Any] = json.loads(new[-1].read_text()) if new else {}
    record: dict[str, Any] = {
        "step": step,
        "exit_code": measured.returncode,
        "wall_s": round(measured.wall_s, 2),
        "cpu_s": round(measured.cpu_s, 2),
        "cpu_user_s": round(measured.cpu_user_s, 2),
        "cpu_system_s": round(measured.cpu_system_s, 2),
        "peak_rss_mb": round(measured.peak_rss_bytes / MB, 1),
        "requests": report.get("requests", sim_requests),
        "requests_seen_by_simulator": sim_requests,
        # what the simulator answered, by what was asked: counts (rows <= 1) and pages
        **{key: after[key] - before[key] for key in ("counts", "pages", "rows_served")},
        "rows_written": report.get("rows_written"),
        "rows_in_lake": report.get("rows_in_lake"),
        "report": str(new[-1].name) if new else None,
    }
    extra = report.get("extra") or {}
    if step == "harvest":
        record["page_size"] = (extra.get("service") or {}).get("page_size", PAGE)
        record["shards"] = report.get("shards_total")
    if step == "refresh":
        record["rows_fetched"] = extra.get("rows_fetched")
        record["partitions_rewritten"] = len(extra.get("partitions_rewritten") or [])
        record["rows_added"] = extra.get("rows_added")
        record["rows_updated"] = extra.get("rows_updated")
        record["rows_deleted"] = extra.get("rows_deleted")
    if measured.returncode != 0:
        record["tail"] = measured.tail(8)
    print(
        f"  {records:>10,} {step:8} exit {measured.returncode}, wall {measured.wall_s:7.1f}s,"
        f" cpu {measured.cpu_s:7.1f}s, rss {measured.peak_rss_bytes / MB:5.0f} MB,"
        f" requests {record['requests']}",
        flush=True,
    )
    return record


def rows_of_days(lake: Path, days: Sequence[str]) -> int:
    """Rows the lake holds on ``days`` (after the refresh: the days as the source has them)."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE d(day DATE)")
        con.executemany("INSERT INTO d VALUES (?)", [(day,) for day in days])
        glob = str(lake / "year=*" / "month=*" / "*.parquet")
        row = con.execute(
            f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning = true) AS t"
            " WHERE CAST(t.submissionDate AS DATE) IN (SELECT day FROM d)"
        ).fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def months_covered() -> int:
    return (END.year - START.year) * 12 + END.month - START.month + 1


def run_pages(records: int, work: Path, max_rows: int) -> dict[str, Any]:
    """Issue 20, item 5 at size: a harvest with the defaults against a simulator serving up
    to ``max_rows`` a page (and 6 MB a response); its requests against
    ``ceil(rows / the page it chose)``."""
    lake = work / f"lake-{records}-rows{max_rows}"
    shutil.rmtree(lake, ignore_errors=True)
    with run_simulator_process(*sim_flags(records, max_rows), env=clean_env()) as sim:
        harvest = run_step("harvest", sim, lake, work / "logs", records)
    page = int(harvest.get("page_size") or PAGE)
    harvest["minimum_requests"] = math.ceil(records / page)
    harvest["requests_per_minimum"] = round(harvest["requests"] / harvest["minimum_requests"], 3)
    harvest["cpu_us_per_row"] = round(harvest["cpu_s"] / records * 1e6, 2)
    shutil.rmtree(lake, ignore_errors=True)
    return {
        "records": records,
        "max_rows": max_rows,
        "ok": harvest["exit_code"] == 0 and harvest.get("rows_in_lake") == records,
        "steps": {"harvest": harvest},
        "sim_args": sim_flags(records, max_rows),
        "command": " ".join(command("harvest", "$SIM_URL", Path("$OUT"))),
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "git_commit": _git("rev-parse", "--short", "HEAD"),
    }


def pages_text(result: dict[str, Any]) -> str:
    h = result["steps"]["harvest"]
    return (
        f"{result['records']:,} rows, simulator pages up to {result['max_rows']:,}: page chosen"
        f" {h['page_size']:,}, {h['requests']:,} requests ÷ ceil(rows ÷ page)"
        f" {h['minimum_requests']:,} = {h['requests_per_minimum']:.3f} (target <= 1.05);"
        f" {h['shards']:,} shards, wall {h['wall_s']:.0f} s, CPU {h['cpu_us_per_row']:.1f} µs a row"
    )


def run_size(records: int, work: Path) -> dict[str, Any]:
    lake = work / f"lake-{records}"
    logs = work / "logs"
    shutil.rmtree(lake, ignore_errors=True)
    began = time.monotonic()
    steps: dict[str, dict[str, Any]] = {}
    with run_simulator_process(*sim_flags(records), env=clean_env()) as sim:
        for step in STEPS[:3]:
            steps[step] = run_step(step, sim, lake, logs, records)
        change = sim.mutate(**CHANGE)
        for step in STEPS[3:]:
            steps[step] = run_step(step, sim, lake, logs, records)
        numfound = int(change["numFound"])
    harvest, refresh = steps["harvest"], steps["refresh"]
    page = int(harvest.get("page_size") or PAGE)
    harvest["minimum_requests"] = math.ceil(records / page)
    fetched_rows = CHANGE["add"] + CHANGE["late"] + CHANGE["modify"]
    refresh["minimum_requests"] = math.ceil(fetched_rows / page) + months_covered()
    refresh["days_touched"] = len(change["days"])
    refresh["rows_of_days_touched"] = rows_of_days(lake, change["days"])
    for record in steps.values():
        record["cpu_us_per_row"] = round(record["cpu_s"] / records * 1e6, 2)
        if record.get("minimum_requests"):
            record["requests_per_minimum"] = round(
                record["requests"] / record["minimum_requests"], 3
            )
    result = {
        "records": records,
        "range": f"{START}..{END}",
        "months": months_covered(),
        "rows_per_month": round(records / months_covered()),
        "change": CHANGE,
        "change_summary": {k: change[k] for k in ("added", "late", "modified", "deleted")},
        "rows_after_change": numfound,
        "ok": all(s["exit_code"] == 0 for s in steps.values())
        and harvest.get("rows_in_lake") == records,
        "steps": steps,
        "sim_args": sim_flags(records),
        "commands": {s: " ".join(command(s, "$SIM_URL", Path("$OUT"))) for s in STEPS},
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "total_wall_s": round(time.monotonic() - began, 1),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }
    shutil.rmtree(lake, ignore_errors=True)
    return result


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


METRICS = (
    ("wall s", "wall_s"),
    ("CPU s", "cpu_s"),
    ("CPU µs per row", "cpu_us_per_row"),
    ("peak RSS MB", "peak_rss_mb"),
    ("requests", "requests"),
    ("requests ÷ minimum", "requests_per_minimum"),
    ("rows written", "rows_written"),
)


def _extra_cell(record: dict[str, Any], key: str) -> str:
    if key == "counts_pages":  # runs saved before the simulator split its answers: "-"
        if record.get("counts") is None:
            return "-"
        return f"{record['counts']:,} / {record['pages']:,}"
    return _cell(record.get(key))


def table(results: Sequence[dict[str, Any]]) -> str:
    """Every step's figures, one column per size, and the growth from the first to the last."""
    results = sorted(results, key=lambda r: r["records"])
    head = ["step", "figure", *(f"{r['records']:,} rows" for r in results)]
    if len(results) > 1:
        head.append("last ÷ first")
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for step in STEPS:
        for label, key in METRICS:
            values = [r["steps"][step].get(key) for r in results]
            if all(v is None for v in values) or (key == "rows_written" and not any(values)):
                continue
            cells = [step, label, *(_cell(v) for v in values)]
            if len(results) > 1:
                first, last = values[0], values[-1]
                ok = isinstance(first, int | float) and isinstance(last, int | float) and first
                cells.append(f"{last / first:.2f}" if ok else "-")
            lines.append("| " + " | ".join(cells) + " |")
    extra = [
        ("harvest", "counts / pages answered", "counts_pages"),
        ("refresh", "counts / pages answered", "counts_pages"),
        ("refresh", "rows fetched", "rows_fetched"),
        ("refresh", "partitions rewritten", "partitions_rewritten"),
        ("refresh", "days the change touched", "days_touched"),
        ("refresh", "rows of those days", "rows_of_days_touched"),
        ("refresh", "minimum requests", "minimum_requests"),
        ("harvest", "minimum requests", "minimum_requests"),
        ("harvest", "shards", "shards"),
    ]
    for step, label, key in extra:
        cells = [step, label, *(_extra_cell(r["steps"][step], key) for r in results)]
        if len(results) > 1:
            cells.append("")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(results: Sequence[dict[str, Any]]) -> str:
    """The issue's targets, each met or missed, on the largest run (and the smallest)."""
    results = sorted(results, key=lambda r: r["records"])
    lines = ["| target | measured | |", "| --- | --- | --- |"]

    def verdict(met: bool) -> str:
        return "met" if met else "**missed**"

    if len(results) > 1:
        first, last = results[0], results[-1]
        a = first["steps"]["harvest"]["cpu_us_per_row"]
        b = last["steps"]["harvest"]["cpu_us_per_row"]
        growth = b / a - 1
        lines.append(
            f"| harvest CPU per row flat within 10%, {first['records']:,} -> {last['records']:,}"
            f" | {a:.1f} -> {b:.1f} µs ({growth:+.0%}) | {verdict(abs(growth) <= CPU_FLAT)} |"
        )
    for r in results:
        size = f"{r['records']:,}"
        refresh = r["steps"]["refresh"]
        written, touched = refresh["rows_written"] or 0, refresh["rows_of_days_touched"]
        lines.append(
            f"| {size}: refresh rows written <= {REFRESH_ROWS_X:g}x the rows of the days touched"
            f" | {written:,} ÷ {touched:,} = {written / max(1, touched):.2f}"
            f" | {verdict(written <= REFRESH_ROWS_X * touched)} |"
        )
        ratio = refresh["requests_per_minimum"]
        lines.append(
            f"| {size}: refresh requests <= {REFRESH_REQUESTS_X:g}x the minimum"
            f" | {refresh['requests']:,} ÷ {refresh['minimum_requests']:,} = {ratio:.2f}"
            f" | {verdict(ratio <= REFRESH_REQUESTS_X)} |"
        )
        peak = max(r["steps"][s]["peak_rss_mb"] for s in SINGLE_PARTITION)
        lines.append(
            f"| {size}: peak RSS of refresh, verify, compact <= {RSS_LIMIT_MB} MB"
            f" (months of ~{r['rows_per_month']:,} rows, not 1 M)"
            f" | {peak:.0f} MB | {verdict(peak <= RSS_LIMIT_MB)} |"
        )
    return "\n".join(lines)


def load(records: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RESULTS / f"scale-{records}.json").read_text())
    return data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument(
        "--also", type=int, action="append", default=[],
        help="another size to run first and print beside (the comparison column)",
    )  # fmt: skip
    parser.add_argument(
        "--reuse", action="store_true",
        help="with --also: take a size's saved bench/results/scale-N.json instead of running it",
    )  # fmt: skip
    parser.add_argument("--work", type=Path, help="where lakes and logs go (default: a temp dir)")
    parser.add_argument(
        "--table", type=int, nargs="+", metavar="N", help="only print the saved runs' table"
    )
    parser.add_argument(
        "--max-rows", type=int, default=PAGE,
        help="the simulator's page ceiling; other than 1000: the harvest alone (item 5)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.max_rows != PAGE:
        work = args.work or Path(tempfile.mkdtemp(prefix="bench-pages-"))
        work.mkdir(parents=True, exist_ok=True)
        result = run_pages(args.records, work, args.max_rows)
        saved = RESULTS / result_name(args.records, args.max_rows)
        saved.write_text(json.dumps(result, indent=2) + "\n")
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        print(pages_text(result))
        return 0 if result["ok"] else 1
    if args.table:
        results = [load(n) for n in args.table]
    else:
        work = args.work or Path(tempfile.mkdtemp(prefix="bench-scale-"))
        work.mkdir(parents=True, exist_ok=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        results = []
        for records in [*args.also, args.records]:
            saved = RESULTS / f"scale-{records}.json"
            if args.reuse and records != args.records and saved.exists():
                results.append(load(records))
                continue
            print(f"scale: {records:,} rows, {START}..{END} (work in {work})", flush=True)
            result = run_size(records, work)
            saved.write_text(json.dumps(result, indent=2) + "\n")
            print(f"  wrote {saved.relative_to(REPO)}", flush=True)
            results.append(result)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(table(results))
    print()
    print(targets(results))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
