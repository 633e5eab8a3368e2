"""The benchmark scenarios (rate limit, throughput, scale, output, resume, an unknown
service, a refresh's peak memory, a reload's) and the profile. Each returns a JSON-ready
dict.

Every measured run starts its own simulator process (``harvester.sim.testing``), so the
server side starts equal for everyone (cold row cache, fresh rate-limit buckets) and its
CPU is measured apart from the contender's. Contenders run alternately, the order rotated
per repetition, so a slow phase of the machine does not fall on one contender only.

Every run is checked against the simulator's truth (``bench.verify``): a run whose output
is not the full, correct row set counts as a failure, and its numbers are not results.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import duckdb

from bench import merge_rss, verify
from bench.contenders import DEFAULT_CONFIG, REPO, Contender
from bench.measure import Measured, clean_env, cpu_seconds, run_measured
from harvester.sim.testing import SimHandle, run_simulator_process

MB = 1_000_000
# Peers cannot shard: they page *:* with start += rows, which the simulator's default
# window (10,000) would refuse past the first 10k rows. Every scenario serving them opens
# the window wide; the harvester needs no such favour (it keeps every shard inside 10k).
WIDE_WINDOW = "1000000000"


@dataclass(frozen=True)
class Sizes:
    """How big and how often; ``full()`` is ``make bench``, ``quick()`` the smoke run."""

    reps: int
    dlt_reps: int
    rate: float
    latency_ms: float
    rate_records: int
    throughput_records: int
    scale_records: tuple[int, int]
    resume_records: int
    profile_records: int
    unknown_records: int
    refresh_rows: int
    reload_records: int = 1_000_000
    seed: int = 7

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            reps=3,
            dlt_reps=2,  # dlt takes ~2 min per million rows: 3 reps would not fit 30 min
            rate=20.0,
            latency_ms=25.0,
            rate_records=24_000,  # ~240 pages of 100: ~12 s at 20 requests/s
            throughput_records=1_000_000,
            scale_records=(500_000, 5_000_000),
            resume_records=1_000_000,
            profile_records=200_000,
            unknown_records=100_000,
            refresh_rows=900_000,  # issue 12's partition: a large month of the real corpus
        )

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            reps=1,
            dlt_reps=1,
            rate=20.0,
            latency_ms=25.0,
            rate_records=6_000,
            throughput_records=100_000,
            scale_records=(50_000, 200_000),
            resume_records=100_000,
            profile_records=50_000,
            unknown_records=20_000,
            refresh_rows=100_000,
            reload_records=50_000,
        )


# ---- the contenders --------------------------------------------------------------------

NAIVE = Contender("naive", "naive", rows=100, label="naive (requests, rows=100)")
DLT = Contender(
    "dlt",
    "dlt",
    rows=100,
    options=("--slices", "2", "--normalize-workers", "2", "--file-max-items", "100000"),
    label="dlt (RESTClient, 2 parallel slices, 2 normalize workers)",
)
# Against a burst-1 service, parallel slices only buy 429s; a dlt user who read the API's
# limits would page with one resource. Used in the rate-limit scenario.
DLT_SERIAL = Contender(
    "dlt",
    "dlt",
    rows=100,
    options=("--slices", "1", "--normalize-workers", "1"),
    label="dlt (RESTClient, one resource)",
)


def harvester_default(rate: float) -> Contender:
    """configs/default.toml as shipped, pointed at the simulator, with ``rate`` overriding
    its 4 requests/s (which would make a million rows take 40 minutes). Its ``rows`` (1000)
    and ``max_window`` (10,000) are ceilings: the harvester probes the service's page size
    and learns its window from its errors."""
    return Contender(
        "harvester-default",
        "harvester",
        rate=rate,
        label=f"harvester, defaults (concurrency 1, rows <= 1000 probed, rate {rate:g})",
    )


# The defaults before the page size was probed (rows 100): kept so the throughput figures
# stay comparable with earlier runs, and its requests / pages is a target of its own.
HARVESTER_ROWS100 = Contender(
    "harvester-rows100",
    "harvester",
    rows=100,
    rate=0,
    label="harvester, defaults but --rows 100 (the former default page size, rate 0)",
)


HARVESTER_TUNED = Contender(
    "harvester-tuned",
    "harvester",
    concurrency=2,
    rows=1000,
    rate=0,
    label="harvester, tuned (concurrency 2, rows 1000 = the simulator's max, rate 0)",
)


# ---- running one contender -------------------------------------------------------------


@dataclass
class Bench:
    """Shared state of one benchmark run: where things go, the sizes, the log."""

    work: Path
    sizes: Sizes
    log: Callable[[str], None] = print
    # Scenario 2 leaves one output per contender (and its truth) for scenario 4, and the
    # request count of each uninterrupted harvester run for scenario 5.
    outputs: dict[str, tuple[Contender, Path]] = field(default_factory=dict)
    outputs_truth: dict[str, Any] = field(default_factory=dict)
    references: dict[str, int] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.work.joinpath(*parts)


def sim_args(records: int, seed: int, *extra: str) -> list[str]:
    return ["--records", str(records), "--seed", str(seed), "--max-window", WIDE_WINDOW, *extra]


@contextmanager
def simulator(args: Sequence[str]) -> Iterator[SimHandle]:
    with run_simulator_process(*args, "--admin", env=clean_env()) as sim:
        yield sim


def measure_run(
    bench: Bench,
    scenario: str,
    contender: Contender,
    sim: SimHandle,
    out: Path,
    truth: dict[str, Any],
    rep: int,
    *,
    kill_when: Callable[[], bool] | None = None,
    check: bool = True,
    timeout: float = 1800.0,
) -> dict[str, Any]:
    """One measured run of ``contender`` against a running simulator; returns its record.

    ``finished``: the process exited 0 in time; ``exact``: its output digests to the truth;
    ``ok``: both. A run killed on purpose (``kill_when``) is not checked; one killed by the
    timeout is, and counts as not finished."""
    result = out.with_name(out.name + ".result.json")
    before = sim.stats()
    sim_cpu0 = cpu_seconds(sim.process.pid)
    measured = run_measured(
        contender.command(sim.url, out, result),
        log_dir=bench.path("logs"),
        name=f"{scenario}-{contender.name}-{rep}",
        kill_when=kill_when,
        timeout=timeout,
    )
    sim_cpu = cpu_seconds(sim.process.pid) - sim_cpu0
    after = sim.stats()
    record = _record(contender, measured, rep, truth["rows"])
    requests = after["requests"] - before["requests"]
    throttled = after["throttled"] - before["throttled"]
    own = contender.own_account(out, result)
    record.update(
        sim_cpu_s=round(sim_cpu, 2),
        requests=requests,
        throttled_429=throttled,
        ok_requests=requests - throttled,
        own=own,
    )
    timed_out = measured.killed and kill_when is None
    if check and (not measured.killed or timed_out):
        problems = []
        if timed_out:
            problems.append(f"timed out after {timeout:g} s")
        elif measured.returncode != 0:
            problems.append(f"exit code {measured.returncode}: {measured.tail(5)}")
        wrong = check_output(contender, out, truth)
        record.update(
            finished=not problems,
            exact=not wrong,
            ok=not problems and not wrong,
            problems=problems + wrong,
            output_bytes=sum(p.stat().st_size for p in contender.data_files(out) if p.exists()),
        )
    status = "killed" if measured.killed else ("ok" if record.get("ok") else "FAILED")
    bench.log(
        f"  {scenario:10} {contender.name:18} rep {rep}: {status}, wall {measured.wall_s:6.1f}s,"
        f" cpu {measured.cpu_s:6.1f}s, rss {measured.peak_rss_bytes / MB:6.0f} MB,"
        f" requests {requests}, 429s {throttled}"
        + ("" if record.get("ok", True) else f" -- {'; '.join(record['problems'])}")
    )
    return record


def check_output(contender: Contender, out: Path, truth: dict[str, Any]) -> list[str]:
    """What is wrong with a contender's output (empty: the full, correct row set). A run
    that failed may have written nothing, or files DuckDB cannot read: said in words."""
    if not any(p.exists() for p in contender.data_files(out)):
        return ["no output written"]
    con = verify.connect()
    try:
        got = verify.digest_of(con, verify.parquet_source(contender.parquet_glob(out)))
    except duckdb.Error as exc:
        return [f"output unreadable: {str(exc).splitlines()[0]}"]
    finally:
        con.close()
    return verify.compare(truth, got)


def _record(contender: Contender, m: Measured, rep: int, rows: int) -> dict[str, Any]:
    return {
        "contender": contender.name,
        "rep": rep,
        "records": rows,
        "ok": False,
        "problems": [],
        "killed": m.killed,
        "returncode": m.returncode,
        "wall_s": round(m.wall_s, 3),
        "cpu_s": round(m.cpu_s, 3),
        "cpu_user_s": round(m.cpu_user_s, 3),
        "cpu_system_s": round(m.cpu_system_s, 3),
        "peak_rss_mb": round(m.peak_rss_bytes / MB, 1),
        "rows_per_s": round(rows / m.wall_s, 1) if m.wall_s else None,
        "cpu_s_per_million": round(m.cpu_s / rows * 1e6, 2) if rows else None,
    }


def fresh(path: Path) -> Path:
    """An empty output location (and no leftovers of a previous run next to it)."""
    shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(path.with_name(path.name + ".dlt-work"), ignore_errors=True)
    path.with_name(path.name + ".result.json").unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def rotated(items: Sequence[Contender], rep: int) -> list[Contender]:
    k = rep % len(items)
    return [*items[k:], *items[:k]]


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """Median and range of a metric over repetitions."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": round(statistics.median(vals), 4),
        "min": round(min(vals), 4),
        "max": round(max(vals), 4),
        "n": len(vals),
    }


def summarize(runs: list[dict[str, Any]], metrics: Sequence[str]) -> dict[str, Any]:
    """Per contender: median/min/max of each metric over its correct runs, and failures."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["contender"] for r in runs):
        mine = [r for r in runs if r["contender"] == name]
        good = [r for r in mine if r["ok"]]
        entry: dict[str, Any] = {
            "runs": len(mine),
            "failed_runs": len(mine) - len(good),
            "failures": [p for r in mine for p in r["problems"]],
        }
        for metric in metrics:
            entry[metric] = spread([_get(r, metric) for r in good])
        out[name] = entry
    return out


def _get(record: dict[str, Any], dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _median(summary: dict[str, Any], contender: str, metric: str) -> float | None:
    entry = summary.get(contender)
    if not entry or entry["failed_runs"]:
        return None  # a wrong answer is a failure, not a result
    value = entry[metric]["median"]
    return float(value) if value is not None else None


def target(text: str, value: float | None, met: bool | None, shown: str) -> dict[str, Any]:
    return {"target": text, "value": value, "shown": shown, "met": met}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


# ---- scenario 1: the rate limit ------------------------------------------------------


def scenario_rate(bench: Bench) -> dict[str, Any]:
    s = bench.sizes
    args = sim_args(
        s.rate_records, s.seed, "--rate", f"{s.rate:g}", "--burst", "1",
        "--latency", f"{s.latency_ms:g}",
    )  # fmt: skip
    truth = verify.truth_digest(args, bench.path("truth"))
    contenders = [harvester_default(s.rate), NAIVE, DLT_SERIAL]
    runs = []
    for rep in range(s.reps):
        for contender in rotated(contenders, rep):
            out = fresh(bench.path("out", "rate", contender.name))
            with simulator(args) as sim:
                record = measure_run(bench, "rate", contender, sim, out, truth, rep)
            runs.append(_rate_record(record, s.rate))
    summary = summarize(runs, ["rate_ratio", "req_per_s", "throttled_429", "ok_requests"])
    strict = _strict_bucket(bench, truth)
    ratio = _median(summary, "harvester-default", "rate_ratio")
    throttled = _median(summary, "harvester-default", "throttled_429")
    return {
        "title": "1. The rate limit is the physical limit",
        "params": {
            "rate": s.rate,
            "burst": 1,
            "latency_ms": s.latency_ms,
            "records": s.rate_records,
            "reps": s.reps,
            "sim_args": args,
        },
        "contenders": {c.name: c.label for c in contenders},
        "commands": {c.name: c.shown_command() for c in contenders},
        "runs": runs,
        "summary": summary,
        "strict": strict,
        "targets": [
            target(
                "harvester >= 0.98 of R with no 429 (rate configured to R)",
                ratio,
                None if ratio is None else ratio >= 0.98 and throttled == 0,
                f"{ratio} of R, {throttled:g} 429s"
                if ratio is not None and throttled is not None
                else "failed",
            )
        ],
    }


def _rate_record(record: dict[str, Any], rate: float) -> dict[str, Any]:
    """Achieved rate over the contender's own active time (first request to last: the
    peers' fetch phase; the harvester's whole run, planning and closing check included,
    since those are requests too)."""
    own = record["own"]
    active = own.get("fetch_s") or own.get("duration_s")
    record["active_s"] = active
    record["req_per_s"] = round(record["ok_requests"] / active, 3) if active else None
    record["rate_ratio"] = round(record["req_per_s"] / rate, 4) if record["req_per_s"] else None
    return record


def _strict_bucket(bench: Bench, truth: dict[str, Any]) -> dict[str, Any]:
    """Information, not a target: the same service with a token bucket of one token (no
    slack at all between two requests), the harvester limited to 0.95 R. Shows whether the
    limiter spaces requests as they *arrive*, or only as they are scheduled."""
    s = bench.sizes
    args = sim_args(
        s.rate_records, s.seed, "--rate", f"{s.rate:g}", "--burst", "1",
        "--latency", f"{s.latency_ms:g}", "--bucket-capacity", "1",
    )  # fmt: skip
    contender = harvester_default(round(0.95 * s.rate, 2))
    out = fresh(bench.path("out", "rate", "strict"))
    with simulator(args) as sim:
        record = _rate_record(measure_run(bench, "rate", contender, sim, out, truth, 0), s.rate)
    return {"label": contender.label, "sim_args": args, "run": record}


# ---- scenario 2: unthrottled throughput ---------------------------------------------


def throughput_args(bench: Bench, records: int) -> list[str]:
    # --max-rows 1000 lets the tuned harvester ask for big pages (the peers and the
    # defaults ask for 100); --cache-rows holds the whole corpus, so the simulator
    # generates each row once, whatever order a contender asks in.
    return sim_args(
        records, bench.sizes.seed, "--max-rows", "1000", "--cache-rows", str(2 * records)
    )


def scenario_throughput(bench: Bench) -> dict[str, Any]:
    s = bench.sizes
    args = throughput_args(bench, s.throughput_records)
    truth = verify.truth_digest(args, bench.path("truth"))
    contenders = [harvester_default(0), HARVESTER_TUNED, HARVESTER_ROWS100, NAIVE, DLT]
    runs = []
    for rep in range(s.reps):
        for contender in rotated(contenders, rep):
            if contender.kind == "dlt" and rep >= s.dlt_reps:
                continue
            out = fresh(bench.path("out", "throughput", f"{contender.name}-{rep}"))
            with simulator(args) as sim:
                record = measure_run(bench, "throughput", contender, sim, out, truth, rep)
            runs.append(_pages_record(record, truth["rows"]))
            if contender.kind == "harvester" and record["ok"]:
                bench.references.setdefault(contender.name, record["requests"])
            # Keep one output per contender for scenario 4; drop the rest (disk).
            previous = bench.outputs.get(contender.name)
            if record["ok"]:
                if previous is not None:
                    shutil.rmtree(previous[1], ignore_errors=True)
                bench.outputs[contender.name] = (contender, out)
            else:
                shutil.rmtree(out, ignore_errors=True)
    bench.outputs_truth = truth
    summary = summarize(
        runs,
        ["rows_per_s", "cpu_s_per_million", "peak_rss_mb", "wall_s", "sim_cpu_s", "requests",
         "page_size", "min_pages", "pages_ratio"],
    )  # fmt: skip
    pages_targets = [
        _pages_target(summary, name, limit, what)
        for name, limit, what in (
            ("harvester-default", 1.02, "defaults"),
            ("harvester-tuned", 1.10, "--rows 1000 --concurrency 2"),
            ("harvester-rows100", 1.02, "--rows 100, the former defaults"),
        )
    ]
    tuned = _median(summary, "harvester-tuned", "rows_per_s")
    default = _median(summary, "harvester-default", "rows_per_s")
    naive = _median(summary, "naive", "rows_per_s")
    dlt = _median(summary, "dlt", "rows_per_s")
    best = max((v for v in (tuned, default) if v is not None), default=None)
    vs_dlt, vs_naive = _ratio(best, dlt), _ratio(best, naive)
    return {
        "title": "2. Unthrottled throughput",
        "params": {"records": s.throughput_records, "reps": s.reps, "dlt_reps": s.dlt_reps, "sim_args": args},
        "contenders": {c.name: c.label for c in contenders},
        "commands": {c.name: c.shown_command() for c in contenders},
        "runs": runs,
        "summary": summary,
        "ratios": {
            "tuned_vs_dlt": _ratio(tuned, dlt),
            "tuned_vs_naive": _ratio(tuned, naive),
            "default_vs_dlt": _ratio(default, dlt),
            "default_vs_naive": _ratio(default, naive),
        },
        "targets": [
            target("harvester >= 5x dlt in rows/s", vs_dlt, None if vs_dlt is None else vs_dlt >= 5, f"{vs_dlt}x"),
            target("harvester >= 3x naive in rows/s", vs_naive, None if vs_naive is None else vs_naive >= 3, f"{vs_naive}x"),
            *pages_targets,
        ],
    }  # fmt: skip


def _pages_record(record: dict[str, Any], rows: int) -> dict[str, Any]:
    """A harvester run's requests / the fewest pages at the page size it used (from its run
    report: what it probed, or lowered to), every request counted (probes, counts, checks)."""
    service = (record.get("own") or {}).get("service") or {}
    page_size = service.get("page_size")
    if isinstance(page_size, int) and page_size > 0:
        pages = math.ceil(rows / page_size)
        record.update(
            page_size=page_size,
            min_pages=pages,
            pages_ratio=round(record["requests"] / pages, 4),
        )
    return record


def _pages_target(
    summary: dict[str, Any], contender: str, limit: float, what: str
) -> dict[str, Any]:
    worst = _worst(summary, contender, "pages_ratio")
    return target(
        f"{contender}: requests / pages at its page size <= {limit:.2f} ({what})",
        worst,
        None if worst is None else worst <= limit,
        _worst_shown(summary, contender, worst),
    )


def _worst_shown(summary: dict[str, Any], contender: str, worst: float | None) -> str:
    if worst is None:
        return "failed"
    runs = int(summary[contender]["runs"])
    return f"{worst}" + (f" (worst of {runs} runs)" if runs > 1 else "")


def _worst(summary: dict[str, Any], contender: str, metric: str) -> float | None:
    """The largest value of ``metric`` over the contender's runs; None when one failed."""
    entry = summary.get(contender)
    if not entry or entry["failed_runs"]:
        return None
    value = entry[metric]["max"]
    return None if value is None else float(value)


# ---- scenario 3: scale -----------------------------------------------------------------


def scenario_scale(bench: Bench) -> dict[str, Any]:
    s = bench.sizes
    contender = harvester_default(0)
    runs = []
    for records in s.scale_records:
        # The whole corpus in the simulator's row cache (~1.2 GB per million rows): with
        # its default 250k rows it regenerates days, which costs no harvester CPU but
        # competes for the 2 cores and stretches the run by minutes.
        args = sim_args(records, s.seed, "--max-rows", "1000", "--cache-rows", str(records))
        truth = verify.truth_digest(args, bench.path("truth"))
        out = fresh(bench.path("out", "scale", f"{records}"))
        with simulator(args) as sim:
            record = measure_run(bench, "scale", contender, sim, out, truth, 0)
        record["cpu_us_per_row"] = round(record["cpu_s"] / records * 1e6, 3)
        runs.append(record)
        shutil.rmtree(out, ignore_errors=True)
    small, large = runs[0], runs[-1]
    ok = small["ok"] and large["ok"]
    rss_large = large["peak_rss_mb"] if ok else None
    rss_growth = _ratio(large["peak_rss_mb"], small["peak_rss_mb"]) if ok else None
    cpu_growth = _ratio(large["cpu_us_per_row"], small["cpu_us_per_row"]) if ok else None
    n_small, n_large = (f"{n / 1e6:g}M" for n in s.scale_records)
    return {
        "title": "3. Scale",
        "params": {"records": list(s.scale_records), "contender": contender.label},
        "contenders": {contender.name: contender.label},
        "commands": {contender.name: contender.shown_command()},
        "runs": runs,
        "targets": [
            target(f"peak RSS <= 300 MB at {n_large} rows", rss_large,
                   None if rss_large is None else rss_large <= 300, f"{rss_large} MB"),
            target(f"peak RSS at {n_large} within 10% of {n_small}", rss_growth,
                   None if rss_growth is None else rss_growth <= 1.10, f"x{rss_growth}"),
            target("CPU per row flat (within 10%)", cpu_growth,
                   None if cpu_growth is None else cpu_growth <= 1.10, f"x{cpu_growth}"),
        ],
    }  # fmt: skip


# ---- scenario 4: output ----------------------------------------------------------------


def scenario_output(bench: Bench) -> dict[str, Any]:
    if not bench.outputs:
        bench.log("  output: no throughput outputs yet; running scenario 2 once")
        once = replace(bench, sizes=replace(bench.sizes, reps=1, dlt_reps=1))
        scenario_throughput(once)
        bench.outputs, bench.outputs_truth = once.outputs, once.outputs_truth
    truth = bench.outputs_truth
    json_per_row = truth["json_bytes"] / truth["rows"]
    rows = []
    answers = set()
    con = verify.connect()
    for name, (contender, out) in bench.outputs.items():
        size = sum(p.stat().st_size for p in contender.data_files(out))
        median, width, answer = verify.query_time(
            con, contender.parquet_glob(out), hive=contender.kind == "harvester"
        )
        answers.add(answer)
        rows.append(
            {
                "contender": name,
                "parquet_bytes": size,
                "files": len(contender.data_files(out)),
                "bytes_per_row": round(size / truth["rows"], 2),
                "json_bytes_per_row": round(json_per_row, 1),
                "json_over_parquet": round(json_per_row / (size / truth["rows"]), 2),
                "query_ms": round(median * 1000, 1),
                "query_spread_ms": round(width * 1000, 1),
                "answer": answer,
            }
        )
    con.close()
    mine = next((r for r in rows if r["contender"] == "harvester-default"), None)
    factor = mine["json_over_parquet"] if mine else None
    return {
        "title": "4. Output",
        "params": {
            "records": truth["rows"],
            "query": " ".join(verify.QUERY.split()),
            "query_runs": verify.QUERY_RUNS,
            "json_bytes": truth["json_bytes"],
        },
        "rows": rows,
        "answers_agree": len(answers) == 1,
        "targets": [
            target("harvester Parquet >= 10x smaller than the JSON received", factor,
                   None if factor is None else factor >= 10, f"{factor}x"),
        ],
    }  # fmt: skip


# ---- scenario 5: resume cost -----------------------------------------------------------


def scenario_resume(bench: Bench) -> dict[str, Any]:
    s = bench.sizes
    args = throughput_args(bench, s.resume_records)
    truth = verify.truth_digest(args, bench.path("truth"))
    runs = []
    targets = []
    for contender in (harvester_default(0), HARVESTER_TUNED):
        reference = (
            bench.references.get(contender.name)
            if s.resume_records == s.throughput_records
            else None
        )
        if reference is None:  # no uninterrupted run of this size yet: make one
            out = fresh(bench.path("out", "resume", f"{contender.name}-reference"))
            with simulator(args) as sim:
                ref = measure_run(bench, "resume-ref", contender, sim, out, truth, 0)
            shutil.rmtree(out, ignore_errors=True)
            reference = ref["requests"] if ref["ok"] else None
        if reference is None:
            runs.append({"contender": contender.name, "ok": False, "problems": ["no reference"]})
            continue
        out = fresh(bench.path("out", "resume", contender.name))
        with simulator(args) as sim:
            half = reference // 2

            def halfway(sim: SimHandle = sim, half: int = half) -> bool:
                return int(_stats(sim)["requests"]) >= half

            first = measure_run(bench, "resume", contender, sim, out, truth, 0, kill_when=halfway)
            second = measure_run(bench, "resume", contender, sim, out, truth, 1)
        total = first["requests"] + second["requests"]
        ratio = round(total / reference, 4)
        runs.append(
            {
                "contender": contender.name,
                "ok": second["ok"] and first["killed"],
                "problems": second["problems"] + ([] if first["killed"] else ["not killed"]),
                "reference_requests": reference,
                "killed_after_requests": first["requests"],
                "resumed_requests": second["requests"],
                "total_requests": total,
                "ratio": ratio,
                "killed_wall_s": first["wall_s"],
                "resumed_wall_s": second["wall_s"],
            }
        )
        ok = runs[-1]["ok"]
        targets.append(
            target(f"{contender.name}: requests with a kill and resume / uninterrupted <= 1.01",
                   ratio if ok else None, (ratio <= 1.01) if ok else None, f"{ratio}")
        )  # fmt: skip
    return {
        "title": "5. Resume cost",
        "params": {
            "records": s.resume_records,
            "kill": "SIGKILL once the simulator has answered half the requests of an"
            " uninterrupted run; then the same command again",
            "sim_args": args,
        },
        "runs": runs,
        "targets": targets,
    }


# ---- scenario 6: an unknown service ----------------------------------------------------

# A service that tells nothing: a paging window and a page cap far below the harvester's
# ceilings (max_window 10,000, rows 1000) and not round numbers, the window refused with
# Solr's 400, the page cap silent, ``sort`` ignored. Each contender runs with its defaults.
UNKNOWN_WINDOW = 730
UNKNOWN_PAGE_CAP = 37
UNKNOWN_TARGET = 1.10
# A peer that loops instead of failing must not hold the bench: far above any real run.
UNKNOWN_TIMEOUT_S = 600.0


def unknown_args(bench: Bench, records: int) -> list[str]:
    return [
        "--records", str(records), "--seed", str(bench.sizes.seed),
        "--max-window", str(UNKNOWN_WINDOW), "--window-error", "400",
        "--max-rows", str(UNKNOWN_PAGE_CAP), "--page-cap-mode", "silent",
        "--sort", "ignore", "--cache-rows", str(2 * records),
    ]  # fmt: skip


def scenario_unknown(bench: Bench) -> dict[str, Any]:
    s = bench.sizes
    args = unknown_args(bench, s.unknown_records)
    truth = verify.truth_digest(args, bench.path("truth"))
    minimum = math.ceil(truth["rows"] / UNKNOWN_PAGE_CAP)
    contenders = [harvester_default(0), NAIVE, DLT]
    runs = []
    for rep in range(s.reps):
        for contender in rotated(contenders, rep):
            if contender.kind == "dlt" and rep >= s.dlt_reps:
                continue
            out = fresh(bench.path("out", "unknown", f"{contender.name}-{rep}"))
            with simulator(args) as sim:
                record = measure_run(
                    bench, "unknown", contender, sim, out, truth, rep, timeout=UNKNOWN_TIMEOUT_S
                )
            record.update(minimum=minimum, ratio=round(record["requests"] / minimum, 4))
            runs.append(record)
            shutil.rmtree(out, ignore_errors=True)
    summary = _unknown_summary(runs)
    return {
        "title": "6. An unknown service",
        "params": {
            "records": truth["rows"],
            "window": UNKNOWN_WINDOW,
            "page_cap": UNKNOWN_PAGE_CAP,
            "sort": "ignored",
            "minimum": minimum,
            "reps": s.reps,
            "dlt_reps": s.dlt_reps,
            "timeout_s": UNKNOWN_TIMEOUT_S,
            "sim_args": args,
        },
        "contenders": {c.name: c.label for c in contenders},
        "commands": {c.name: c.shown_command() for c in contenders},
        "runs": runs,
        "summary": summary,
        "targets": _unknown_targets(summary, "harvester-default"),
    }


def _unknown_targets(summary: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The harvester finishes every run, each run's output is the truth, and even its worst
    run stays within UNKNOWN_TARGET of the minimum (judged only when all runs were right)."""
    mine = summary.get(name)
    if not mine:
        return [target(f"unknown service: {name} ran", None, None, "no run")]
    runs = int(mine["runs"])
    finished, exact = int(mine["finished"]), int(mine["exact"])
    right = finished == runs and exact == runs
    worst = mine["ratio"]["max"] if right else None
    return [
        target("unknown service: the harvester (defaults) finishes", finished / runs,
               finished == runs, f"{finished}/{runs} runs"),
        target("unknown service: the harvester's output equals the truth", exact / runs,
               exact == runs, f"{exact}/{runs} runs"),
        target(f"unknown service: harvester requests / minimum <= {UNKNOWN_TARGET:.2f}", worst,
               None if worst is None else worst <= UNKNOWN_TARGET,
               "not judged: a run failed" if worst is None else _worst_shown(summary, name, worst)),
    ]  # fmt: skip


def _unknown_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per contender: runs finished, runs exact, requests and requests / minimum over all
    its runs (a failed run's requests say how far it got), what the harvester learned, and
    the first failure of each kind."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["contender"] for r in runs):
        mine = [r for r in runs if r["contender"] == name]
        service = next(((r.get("own") or {}).get("service") for r in mine), None) or {}
        out[name] = {
            "runs": len(mine),
            "finished": sum(1 for r in mine if r.get("finished")),
            "exact": sum(1 for r in mine if r.get("exact")),
            "requests": spread([r["requests"] for r in mine]),
            "minimum": mine[0]["minimum"],
            "ratio": spread([r["ratio"] for r in mine]),
            "learned": {k: service.get(k) for k in ("page_size", "window", "sort", "paging")}
            if service
            else None,
            "failures": list(dict.fromkeys(_short(p) for r in mine for p in r["problems"])),
        }
    return out


def _short(problem: str) -> str:
    """A failure in one line: a process's exit and the last line of its traceback, without
    the run's URL (its port differs per run) or dlt's thread-pool detail."""
    lines = [line.strip() for line in problem.splitlines() if line.strip()]
    text = lines[0] if len(lines) <= 1 else f"{lines[0].split(':', 1)[0]}: {lines[-1]}"
    return re.sub(r" for url: \S+| in `future` `<[^>]*>`", "", text)


def _stats(sim: SimHandle) -> dict[str, Any]:
    try:
        return sim.stats()
    except OSError:
        return {"requests": 0}


# ---- scenario 7: a refresh's peak memory ----------------------------------------------

REFRESH_RSS_LIMIT_MB = 500
REFRESH_CASES = {
    "repair": "repair of every day: {late:,} late + {modified:,} modified rows merged, then"
    " every day of the month fetched again and replacing the lake's ({deleted:,} gone)",
    "restamp": "every row's createDateTime changed (an upstream reload): every row replaced",
}


def scenario_refresh_rss(bench: Bench) -> dict[str, Any]:
    """``bench.merge_rss``: the merge step of a refresh (the partition and the staged rows
    read, merged, the partition written, the old files deleted), each case in a fresh
    process whose peak RSS (VmHWM) is the refresh's memory peak. Fetching the staged rows
    is not part of it: scenario 2 measures fetch."""
    rows = bench.sizes.refresh_rows
    measured = merge_rss.measure(
        rows,
        keep=bench.path("out", "refresh_rss", str(rows)),
        log=lambda line: bench.log(f"  refresh_rss {line}"),
    )
    shutil.rmtree(bench.path("out", "refresh_rss"), ignore_errors=True)
    counts = {"late": merge_rss.LATE, "modified": merge_rss.MODIFIED, "deleted": merge_rss.DELETED}
    runs = []
    for case, result in measured["cases"].items():
        stages = result["stages"]
        runs.append(
            {
                "case": case,
                "what": REFRESH_CASES[case].format(**counts),
                "wall_s": result["seconds"],
                "peak_rss_mb": round(result["peak_rss_bytes"] / MB, 1),
                "rss_before_mb": round(result["rss_before_bytes"] / MB, 1),
                "merges": len(stages),
                "rows_after": stages[-1]["rows"],
                "added": sum(st["added"] for st in stages),
                "updated": sum(st["updated"] for st in stages),
                "deleted": sum(st["deleted"] for st in stages),
                "child": result,
            }
        )
    by_case = {r["case"]: r for r in runs}
    targets = []
    for case, text in (("repair", "repair of every day"),
                       ("restamp", "every createDateTime changed")):  # fmt: skip
        peak = by_case[case]["peak_rss_mb"] if case in by_case else None
        targets.append(
            target(f"peak RSS <= {REFRESH_RSS_LIMIT_MB} MB, {text}", peak,
                   None if peak is None else peak <= REFRESH_RSS_LIMIT_MB,
                   "failed" if peak is None else f"{peak:.0f} MB")
        )  # fmt: skip
    return {
        "title": "7. A refresh's peak memory (the merge step)",
        "params": {
            "rows": rows,
            "partition": merge_rss.PARTITION,
            "impl": measured["impl"],
            "build_s": measured["build_s"],
            **counts,
            "measured": "the merge step of a refresh, as Refresher._merge_stage runs it:"
            " read_files of the partition and of the staged rows, merge_partition,"
            " the writer's rewrite files, old files deleted; each case in a fresh process, peak"
            " RSS = its VmHWM (the interpreter and imports included). The fetch of the"
            " staged rows is not in it (scenario 2 measures fetching).",
        },
        "command": f"python -m bench.merge_rss --rows {rows}",
        "runs": runs,
        "targets": targets,
    }


# ---- scenario 8: a reload's peak memory -----------------------------------------------

RELOAD_RSS_LIMIT_MB = 500
# The source reloads: every row re-stamped in one load, which also changes, deletes and
# adds a few (late rows: the harvest's coverage ends with the corpus, so rows on new days
# after it would be outside it).
RELOAD_MUTATION: dict[str, Any] = {
    "reload": True,
    "modify": 1_000,
    "delete": 500,
    "late": 2_000,
    "seed": 1,
}
RELOAD_STEPS = {
    "reload": "the refresh after the reload: every month fetched again and replacing its"
    " partition, one month at a time",
    "refresh": "the refresh after that: the reload's stamp re-read through the lookback,"
    " every month found current by its counts",
}


def reload_args(bench: Bench, records: int) -> list[str]:
    # The whole corpus in the simulator's row cache (as scenario 3): regenerating days
    # costs no harvester CPU but competes for the 2 cores.
    return sim_args(records, bench.sizes.seed, "--max-rows", "1000", "--cache-rows", str(records))


def refresh_command(url: str, out: Path) -> list[str]:
    """``harvester refresh`` as HARVESTER_TUNED harvests: default config, 2 workers, rate 0."""
    return [
        sys.executable, "-m", "harvester", "refresh", "--config", str(DEFAULT_CONFIG),
        "--api-url", url, "--out", str(out), "--quiet", "--concurrency", "2", "--rate", "0",
    ]  # fmt: skip


def served_truth_digest(sim: SimHandle, path: Path) -> dict[str, Any]:
    """The digest of what the simulator serves now (mutated: ``--export-truth`` would give
    the corpus before its mutations), streamed to ``path`` and digested by DuckDB, so the
    rows never sit in this process's memory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    truth_url = sim.url + "/_sim/truth"
    with urllib.request.urlopen(truth_url, timeout=600) as response, path.open("wb") as sink:
        shutil.copyfileobj(response, sink, 1 << 20)
    con = verify.connect()
    columns = ", ".join(f"'{f}': 'VARCHAR'" for f in ("id", *verify.CHECK_FIELDS))
    source = (
        f"read_json('{path}', format = 'newline_delimited', columns = {{{columns}}},"
        " maximum_object_size = 1048576)"
    )
    try:
        return verify.digest_of(con, source)
    finally:
        con.close()
        path.unlink()


def _stamps_differ(out: Path, stamp: str) -> int:
    """Rows of the lake whose createDateTime is not the reload's (the digest leaves the
    stamps out: after a reload every row must carry the new one)."""
    con = verify.connect()
    try:
        source = verify.parquet_source(HARVESTER_TUNED.parquet_glob(out), hive=True)
        row = con.execute(
            f"SELECT count(*) FROM {source} WHERE createDateTime IS DISTINCT FROM"
            f" TIMESTAMP '{stamp.replace('T', ' ')}'"
        ).fetchone()
    finally:
        con.close()
    return int(row[0]) if row else -1


def _printed_report(measured: Measured) -> dict[str, Any]:
    """The run report whose path the command printed (``report: <path>``)."""
    text = Path(measured.stdout_path).read_text() if measured.stdout_path else ""
    paths = re.findall(r"^report: (.+)$", text, re.M)
    data: dict[str, Any] = json.loads(Path(paths[-1]).read_text()) if paths else {}
    return data


class ReaderLoop(threading.Thread):
    """A reader querying the lake as docs/querying.md does, over and over while a run goes
    on: each answer is counted as one that saw rows twice (more rows than distinct ids),
    that failed (a file listed, then gone), or that was clean."""

    def __init__(self, out: Path) -> None:
        super().__init__(daemon=True)
        self.query = (
            "SELECT count(*), count(DISTINCT id) FROM read_parquet("
            f"'{out}/**/*.parquet', hive_partitioning = true,"
            " hive_types = {'year': INTEGER, 'month': INTEGER})"
        )
        self.stop = threading.Event()
        self.reads = self.duplicated = self.failed = 0

    def run(self) -> None:
        con = duckdb.connect()
        try:
            while not self.stop.is_set():
                try:
                    row = con.execute(self.query).fetchone()
                except duckdb.Error:
                    self.failed += 1
                else:
                    self.duplicated += bool(row and row[0] != row[1])
                self.reads += 1
                time.sleep(0.005)
        finally:
            con.close()

    def result(self) -> dict[str, int]:
        return {"reads": self.reads, "duplicated": self.duplicated, "failed": self.failed}


def scenario_reload_rss(bench: Bench) -> dict[str, Any]:
    """A harvest (HARVESTER_TUNED, measured as in scenario 2), then the simulator reloads
    (``RELOAD_MUTATION``), then two refreshes, each measured in its own process: the
    reload, and the refresh after it. Each is checked: the lake's digest equals the
    truth's, and every row carries the reload's stamp."""
    records = bench.sizes.reload_records
    args = reload_args(bench, records)
    truth_before = verify.truth_digest(args, bench.path("truth"))
    out = fresh(bench.path("out", "reload", str(records)))
    runs: list[dict[str, Any]] = []
    with simulator(args) as sim:
        harvest = measure_run(bench, "reload", HARVESTER_TUNED, sim, out, truth_before, 0)
        harvest_rss = harvest["peak_rss_mb"]
        mutation = sim.mutate(**RELOAD_MUTATION)
        truth = served_truth_digest(sim, bench.path("truth", "reload-served.jsonl"))
        for step, what in RELOAD_STEPS.items():
            before = sim.stats()["requests"]
            reader = ReaderLoop(out)  # what a reader sees while the lake is refreshed
            reader.start()
            measured = run_measured(
                refresh_command(sim.url, out), log_dir=bench.path("logs"), name=f"reload-{step}"
            )
            reader.stop.set()
            reader.join()
            requests = sim.stats()["requests"] - before
            problems = [] if measured.returncode == 0 else [f"exit {measured.returncode}"]
            problems += check_output(HARVESTER_TUNED, out, truth)
            stale = _stamps_differ(out, mutation["stamp"])
            if stale:
                problems.append(f"{stale} rows without the reload's createDateTime")
            report = _printed_report(measured)
            reload = (report.get("extra") or {}).get("reload") or {}
            runs.append(
                {
                    "step": step,
                    "what": what,
                    "ok": not problems,
                    "problems": problems,
                    "wall_s": round(measured.wall_s, 1),
                    "cpu_s": round(measured.cpu_s, 1),
                    "peak_rss_mb": round(measured.peak_rss_bytes / MB, 1),
                    "requests": requests,
                    "rows_written": report.get("rows_written"),
                    "reload": reload,
                    "months_fetched": reload.get("months_fetched"),
                    "months": reload.get("months"),
                    "estimated_requests": reload.get("estimated_requests"),
                    "reader": reader.result(),
                }
            )
            bench.log(
                f"  reload     {step:8} {'ok' if not problems else 'FAILED'}, wall"
                f" {measured.wall_s:6.1f}s, rss {measured.peak_rss_bytes / MB:6.0f} MB,"
                f" requests {requests}, months fetched {reload.get('months_fetched')}"
                + (f" -- {'; '.join(problems)}" if problems else "")
            )
    shutil.rmtree(bench.path("out", "reload"), ignore_errors=True)
    targets = []
    for run in runs:
        peak = run["peak_rss_mb"] if run["ok"] else None
        targets.append(
            target(f"peak RSS <= {RELOAD_RSS_LIMIT_MB} MB, {run['step']} at {records:,} rows",
                   peak, None if peak is None else peak <= RELOAD_RSS_LIMIT_MB,
                   "failed" if peak is None else f"{peak:.0f} MB")
        )  # fmt: skip
    return {
        "title": "8. A reload's peak memory (whole refreshes)",
        "params": {
            "records": records,
            "mutation": RELOAD_MUTATION,
            "harvest_ok": harvest["ok"],
            "harvest_peak_rss_mb": harvest_rss,
            "harvest_wall_s": harvest["wall_s"],
            "measured": "each refresh as a whole process (fetch, merge, commit), as"
            " bench.measure measures every contender: peak RSS = the larger of VmHWM and the"
            " sampled process tree",
            "sim_args": args,
        },
        "commands": {
            "harvest": HARVESTER_TUNED.shown_command(),
            "refresh": " ".join(refresh_command("$SIM_URL", Path("$OUT")))
            .replace(sys.executable, "python")
            .replace(str(REPO) + "/", ""),
        },
        "runs": runs,
        "targets": targets,
    }


# ---- the profile -----------------------------------------------------------------------


def scenario_profile(bench: Bench) -> dict[str, Any]:
    s = bench.sizes
    args = throughput_args(bench, s.profile_records)
    out = fresh(bench.path("out", "profile"))
    prof_dir = bench.path("profile")
    contender = harvester_default(0)
    harvest_args = contender.command("URL", out, out)[4:]  # drop "python -m harvester harvest"
    with simulator(args) as sim:
        cmd = [
            sys.executable, "-m", "bench.profile_harvest", "--profile-out", str(prof_dir), "--",
            *[sim.url if a == "URL" else a for a in harvest_args],
        ]  # fmt: skip
        measured = run_measured(cmd, log_dir=bench.path("logs"), name="profile")
    shutil.rmtree(out, ignore_errors=True)
    summary_path = prof_dir / "profile.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    bench.log(f"  profile    {contender.name:18} wall {measured.wall_s:.1f}s -> {prof_dir}")
    return {
        "title": "Profile (pyinstrument)",
        "params": {"records": s.profile_records, "contender": contender.label},
        "command": "python -m bench.profile_harvest --profile-out DIR -- "
        + contender.shown_command().split(" harvest ", 1)[1],
        "wall_s": round(measured.wall_s, 2),
        "summary": summary,
        "tree_file": str(prof_dir / "profile.txt"),
    }


SCENARIOS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "rate": scenario_rate,
    "throughput": scenario_throughput,
    "scale": scenario_scale,
    "output": scenario_output,
    "resume": scenario_resume,
    "unknown": scenario_unknown,
    "refresh_rss": scenario_refresh_rss,
    "reload_rss": scenario_reload_rss,
    "profile": scenario_profile,
}
