"""A season of daily refreshes against a changing source, drawn from a seed.

A sequence is a list of steps, each a day at the source and what the operator does about
it: changes (add, late, modify, delete, future, reorder) then a refresh; a reload then a
refresh; changes then a refresh that meets spurious empty answers; changes then a refresh
SIGKILLed at a random moment and the same command again; a compaction; deletions and late
rows then ``verify --repair``. After every step that ends with the lake meant to equal the
source, ``check`` asserts what the issue of the season asks:

- the lake equals the truth row for row, every field (``assert_lake_equals_truth``);
- ``harvester verify`` finds nothing (exit 0);
- every file in the lake is the harvester's own, and none under ``_harvest/`` ends in
  ``.parquet`` (what a reader's glob would find);
- the report's rows added, updated and deleted equal the truth's difference since the last
  exact point, and so does the change feed of that run.

``run_season(seed)`` runs one sequence and, on a failure, raises with the steps that
reproduce it (the seed alone does too). ``tests/test_season.py`` runs a fixed set of seeds
in CI; ``make soak SEEDS=N`` runs more (``python -m tests.season``).
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from harvester.sim.testing import SimHandle, run_simulator_process
from harvester.storage.commit import is_own_file
from harvester.storage.store import Lake
from tests.support.cli import cli, printed_report
from tests.support.harvest import WINDOW, harvest_env, refresh_cmd, run_harvest
from tests.support.lakecheck import assert_lake_equals_truth, expected_row, is_decodable

# Two months of mail dates, a few thousand rows: a day spans pages, months span shards.
SIM_ARGS = ("--records", "3000", "--start", "2019-01-01", "--end", "2019-02-28")
RECONCILE = ("--reconcile-days", "0")  # the whole coverage: deletions land on any day
STEPS = 16
KINDS = ("refresh", "reload", "spurious", "kill", "compact", "repair")
WEIGHTS = (6, 1, 2, 2, 1, 2)
CHANGES = ("add", "late", "modify", "delete", "future", "reorder")


@dataclass
class Step:
    kind: str
    mutation: dict[str, Any] = field(default_factory=dict)
    kill_after: float = 0.0

    def __str__(self) -> str:
        extra = f", kill after {self.kill_after:.2f}s" if self.kind == "kill" else ""
        return f"{self.kind} {json.dumps(self.mutation, sort_keys=True)}{extra}"


def draw(seed: int, steps: int = STEPS) -> list[Step]:
    """The sequence a seed stands for: ``steps`` steps, every kind of step drawn at least
    once in a sequence of 12 or more, each changing the source in its own way."""
    rng = random.Random(seed)
    kinds = list(KINDS) if steps >= 12 else []
    kinds += rng.choices(KINDS, WEIGHTS, k=steps - len(kinds))
    rng.shuffle(kinds)
    out = []
    for kind in kinds:
        mutation: dict[str, Any] = {"seed": rng.randrange(1 << 30)}
        if kind == "reload":
            mutation.update(reload=True, modify=rng.randint(0, 10), add=rng.randint(0, 20))
        elif kind == "repair":
            # What counts see, so a repair alone makes the lake equal again: deletions or
            # late rows, not both (one of each on a day keeps its count: only a refresh,
            # which fetches the late row by its stamp, sees that day).
            mutation[rng.choice(("delete", "late"))] = rng.randint(1, 20)
        elif kind != "compact":
            for change in rng.sample(CHANGES, rng.randint(1, 4)):
                if change == "reorder":
                    mutation["reorder"] = True
                elif change == "future":
                    mutation["future"] = rng.randint(1, 3)
                else:
                    mutation[change] = rng.randint(1, 60)
        out.append(Step(kind, mutation, rng.uniform(0.3, 2.5)))
    return out


def _refresh_args(url: str, out: str, *extra: str) -> list[str]:
    return refresh_cmd(url, out, *RECONCILE, *extra)


def _refresh(sim: SimHandle, out: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _refresh_args(sim.url, out, *extra),
        env=harvest_env(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, set[str]]:
    """Ids added, updated and deleted between two truths (id -> expected row)."""
    common = before.keys() & after.keys()
    return {
        "added": set(after) - set(before),
        "deleted": set(before) - set(after),
        "updated": {i for i in common if before[i] != after[i]},
    }


def _truth_rows(sim: SimHandle) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    truth = sim.truth()
    return truth, {d["id"]: expected_row(d) for d in truth if is_decodable(d)}


def _feed(out: str, run_id: str) -> dict[str, set[str]]:
    feed: dict[str, set[str]] = {"added": set(), "updated": set(), "deleted": set()}
    for path in sorted((Path(out) / "_harvest" / "changes" / run_id).glob("*.pq")):
        for row in pq.read_table(path, columns=["change", "id"]).to_pylist():
            feed[row["change"]].add(row["id"])
    return feed


def check(
    sim: SimHandle, out: str, before: dict[str, Any], reports: list[dict[str, Any]] | None
) -> Any:
    """The season's invariants after a step that makes the lake equal the source; returns
    the truth now (id -> expected row), the next step's ``before``. ``reports``: those of
    the runs the step made (a refresh killed after it had finished its run, and the one
    that then found nothing to do, are two), whose totals and feeds add up to the step's
    difference."""
    truth, rows = _truth_rows(sim)
    lake = Lake.open(out)
    assert_lake_equals_truth(lake, truth)
    verify = cli("verify", "--api-url", sim.url, "--out", out, "--rate", "0")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    files = [str(p.relative_to(out)) for p in Path(out).rglob("*") if p.is_file()]
    assert [f for f in files if not is_own_file(f)] == []
    assert [f for f in files if f.startswith("_harvest/") and f.endswith(".parquet")] == []
    if reports is not None:
        want = _diff(before, rows)
        kinds = ("added", "updated", "deleted")
        got = {k: sum(r["extra"][f"rows_{k}"] for r in reports) for k in kinds}
        runs = [r["run_id"] for r in reports]
        assert got == {k: len(v) for k, v in want.items()}, (got, runs)
        feed: dict[str, set[str]] = {k: set() for k in kinds}
        for run_id in runs:
            for kind, ids in _feed(out, run_id).items():
                feed[kind] |= ids
        assert feed == want, runs
    return rows


def _reports(out: str, command: str) -> dict[str, dict[str, Any]]:
    runs = Path(out) / "_harvest" / "runs"
    return {p.name: json.loads(p.read_text()) for p in runs.glob(f"*-{command}-*.json")}


def _step(sim: SimHandle, out: str, step: Step, before: dict[str, Any]) -> dict[str, Any]:
    if step.kind == "compact":
        result = cli("compact", "--out", out)
        assert result.returncode == 0, result.stdout + result.stderr
        return check(sim, out, before, None)
    sim.mutate(**step.mutation)
    if step.kind == "repair":
        result = cli("verify", "--repair", "--api-url", sim.url, "--out", out, "--rate", "0")
        assert result.returncode == 0, result.stdout + result.stderr
        found = re.search(r"^repair \S+: .*\(report (.+)\)$", result.stdout, re.M)
        assert found, result.stdout
        return check(sim, out, before, [json.loads(Path(found[1]).read_text())])
    if step.kind == "spurious":
        sim.faults(0.1, ["spurious-empty"])
    earlier = _reports(out, "refresh")
    if step.kind == "kill":
        proc = subprocess.Popen(
            _refresh_args(sim.url, out, "--rate", "40", "--concurrency", "1"),
            env=harvest_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(step.kill_after)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    result = _refresh(sim, out)
    if step.kind == "spurious":
        sim.faults(0.0)
        if result.returncode == 3 and "do not add up" in result.stderr:
            # The planner's guard: counts that contradict each other stop the run before
            # it writes what they would lose. The same command again is the remedy.
            result = _refresh(sim, out)
    assert result.returncode == 0, result.stdout + result.stderr
    printed_report(result.stdout)  # it printed its report
    made = [r for name, r in sorted(_reports(out, "refresh").items()) if name not in earlier]
    return check(sim, out, before, made)


def run_season(seed: int, steps: int = STEPS, workdir: Path | None = None) -> None:
    """One sequence against a fresh simulator and lake; raises naming the steps on failure."""
    sequence = draw(seed, steps)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        out = str(Path(tmp) / "lake")
        with run_simulator_process(
            *SIM_ARGS, "--max-window", WINDOW, "--seed", str(seed), "--admin"
        ) as sim:
            result = run_harvest(sim.url, out)
            assert result.returncode == 0, result.stdout + result.stderr
            before = check(sim, out, {}, None)
            done: list[str] = []
            for number, step in enumerate(sequence, 1):
                done.append(f"{number:2d}. {step}")
                try:
                    before = _step(sim, out, step, before)
                except AssertionError as exc:
                    raise AssertionError(
                        f"season seed {seed} failed at step {number}; the steps:\n"
                        + "\n".join(done)
                        + f"\n{exc}"
                    ) from exc


def main(argv: list[str]) -> int:
    """``python -m tests.season N [FIRST]``: N seeds from FIRST (default 100), one after
    another; prints each seed's outcome and the steps of any that failed."""
    count = int(argv[0]) if argv else 10
    first = int(argv[1]) if len(argv) > 1 else 100
    failed = 0
    for seed in range(first, first + count):
        started = time.monotonic()
        try:
            run_season(seed)
        except AssertionError as exc:
            failed += 1
            print(f"seed {seed}: FAILED\n{exc}", flush=True)
            continue
        print(f"seed {seed}: ok, {STEPS} steps, {time.monotonic() - started:.0f}s", flush=True)
    print(f"{count - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
