"""``python -m bench``: run the benchmark scenarios and write the results.

    python -m bench                  # everything (what `make bench` runs; ~27 minutes on 2 cores)
    python -m bench --quick          # a ~2 minute smoke run, written to results/quick.*
    python -m bench --only rate,resume

A full run writes ``bench/results/latest.json`` (every run), ``latest.md`` (the tables),
``profile.txt`` (pyinstrument's tree) and refreshes the generated part of
``docs/benchmarks.md``. ``--only`` keeps the other scenarios' figures from the last run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import report
from bench.contenders import REPO
from bench.scenarios import SCENARIOS, Bench, Sizes

# Scenario 2 before 4 and 5: they reuse its outputs and request counts.
ORDER = (
    "profile", "rate", "throughput", "output", "resume", "unknown", "scale", "refresh_rss",
    "reload_rss",
)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--only", help=f"comma list of scenarios: {','.join(ORDER)}")
    parser.add_argument("--reps", type=int, help="repetitions (default 3, quick 1)")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "work")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)

    only = [s.strip() for s in (args.only or "").split(",") if s.strip()] or list(ORDER)
    unknown = [s for s in only if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(ORDER)}")
    sizes = Sizes.quick() if args.quick else Sizes.full()
    if args.reps:
        sizes = replace(sizes, reps=args.reps, dlt_reps=min(args.reps, sizes.dlt_reps))
    mode = "quick" if args.quick else "full"

    # Outputs of earlier runs go; the truth digests stay (they depend only on seed, size).
    for sub in ("out", "logs", "profile"):
        shutil.rmtree(args.work / sub, ignore_errors=True)
    args.work.mkdir(parents=True, exist_ok=True)
    bench = Bench(args.work, sizes, log=lambda line: print(line, flush=True))

    started = time.monotonic()
    load_at_start = os.getloadavg()
    results_json = args.results / ("latest.json" if mode == "full" else "quick.json")
    results: dict[str, Any] = {"scenarios": {}}
    if results_json.exists() and args.only:
        results = json.loads(results_json.read_text())  # keep the scenarios not re-run
    print(f"bench: {mode} run of {', '.join(s for s in ORDER if s in only)}", flush=True)
    for name in ORDER:
        if name not in only:
            continue
        print(f"bench: scenario {name}", flush=True)
        t0 = time.monotonic()
        try:
            outcome = SCENARIOS[name](bench)
        except Exception:  # one broken scenario must not cost the others' figures
            outcome = {"title": name, "error": traceback.format_exc()}
            print(outcome["error"], file=sys.stderr, flush=True)
        outcome["elapsed_s"] = round(time.monotonic() - t0, 1)
        outcome["measured_at"] = report.now()
        results["scenarios"][name] = outcome
        print(f"bench: scenario {name} took {outcome['elapsed_s']:.0f}s", flush=True)

    results.update(
        generated_at=report.now(),
        mode=mode,
        total_min=round((time.monotonic() - started) / 60, 1),
        # Other work on the machine skews every figure: say how busy it was.
        machine={
            **report.machine(),
            "load_avg_1m_start": round(load_at_start[0], 2),
            "load_avg_15m_end": round(os.getloadavg()[2], 2),
        },
        versions=report.versions(),
    )
    results["scenarios"] = {k: results["scenarios"][k] for k in ORDER if k in results["scenarios"]}
    args.results.mkdir(parents=True, exist_ok=True)
    results_json.write_text(json.dumps(results, indent=2) + "\n")
    table = report.render(results)
    results_json.with_suffix(".md").write_text(table)
    profile_tree = args.work / "profile" / "profile.txt"
    if "profile" in only and profile_tree.exists():
        stem = "profile" if mode == "full" else "quick-profile"
        shutil.copyfile(profile_tree, args.results / f"{stem}.txt")
    if mode == "full" and not args.no_docs:
        report.update_doc(REPO / "docs" / "benchmarks.md", table)
    print(table)
    print(f"bench: wrote {results_json} in {results['total_min']} min", flush=True)
    failed = [
        k for k, sc in results["scenarios"].items()
        if "error" in sc or any(t["met"] is None for t in sc.get("targets", []))
    ]  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
