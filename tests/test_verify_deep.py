"""``verify --deep`` compares rows field by field and names what counts cannot see;
``verify --repair`` rebuilds a partition whose committed file is gone (issue 12)."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from harvester.ops.deep import DeepOptions, choose_days, compare_day
from harvester.sim.testing import SimHandle, run_simulator_process
from harvester.storage.schema import ARROW_SCHEMA
from harvester.storage.shard import Shard
from harvester.storage.state import HarvestState
from harvester.storage.store import Lake
from tests.support.cli import cli, ok, printed_report, refresh_all_days
from tests.support.harvest import RANGE, WINDOW, harvest_env, run_harvest
from tests.support.lakecheck import assert_lake_equals_truth, read_lake
from tests.support.s3server import MotoS3

EXIT_MISMATCH = 6
JANUARY = ("--from", "2019-01-01", "--to", "2019-01-31")


@pytest.fixture()
def harvested(tmp_path: Path) -> Iterator[tuple[SimHandle, Path]]:
    """A fresh simulator and a lake harvested from it (January and February 2019)."""
    out = tmp_path / "lake"
    with run_simulator_process(
        "--records", "3000", *RANGE, "--max-window", WINDOW, "--seed", "61", "--admin"
    ) as sim:
        ok(run_harvest(sim.url, str(out), "--from", "2019-01-01", "--to", "2019-02-28"))
        yield sim, out


def verify(url: str, out: str, *extra: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    args = ("verify", "--api-url", url, "--out", out, "--rate", "0", "--concurrency", "4")
    result = cli(*args, *extra, env=env)
    assert result.returncode in (0, EXIT_MISMATCH), result.stdout + result.stderr
    return result.returncode, result.stdout


def committed_file(out: Path, month: int) -> Path:
    files = sorted((out / "year=2019" / f"month={month}").glob("*.parquet"))
    assert files
    return files[len(files) // 2]


def test_a_missing_committed_file_is_named_and_repair_fetches_its_days_again(
    harvested: tuple[SimHandle, Path],
) -> None:
    sim, out = harvested
    gone = committed_file(out, 1)
    name = gone.relative_to(out).as_posix()
    markers = HarvestState(Lake.open(str(out))).load_markers().values()
    shard = Shard.parse_key(next(m.key for m in markers if name in m.files))
    gone.unlink()
    code, text = verify(sim.url, str(out))
    assert code == EXIT_MISMATCH
    assert f"problem: committed file is missing: {name}" in text
    problems = printed_report(text)["extra"]["check"]["problems"]
    assert {"kind": "missing", "text": f"committed file is missing: {name}"} in problems

    code, text = verify(sim.url, str(out), "--repair")
    assert code == 0 and "after repair: ok" in text, text
    report = printed_report(text)
    # Every day of the file's shard is fetched again (whatever else differs on it).
    assert {d.isoformat() for d in shard.days} <= set(report["extra"]["repair_days"])
    assert_lake_equals_truth(Lake.open(str(out)), sim.truth())
    # The partition was rewritten without the file: its manifest commits the new files.
    manifest = HarvestState(Lake.open(str(out))).load_manifests()["year=2019/month=1"]
    assert name not in manifest and all((out / f).exists() for f in manifest)
    assert verify(sim.url, str(out))[0] == 0

    # A file a manifest names (a rewritten partition) covers its month: the whole month is
    # fetched again.
    ok(cli("compact", "--out", str(out)))
    gone = committed_file(out, 2)
    gone.unlink()
    code, text = verify(sim.url, str(out), "--repair")
    assert code == 0 and "after repair: ok" in text, text
    days = printed_report(text)["extra"]["repair_days"]
    assert set(days) == {f"2019-02-{d:02d}" for d in range(1, 29)}
    # Weekend days hold no rows, so no count differs there: only the missing file names them.
    assert any("is missing" in why for why in days.values())
    assert_lake_equals_truth(Lake.open(str(out)), sim.truth())


def test_a_missing_committed_object_on_s3_is_repaired(moto_s3: MotoS3, s3_lake_uri: str) -> None:
    env = harvest_env(HARVESTER_S3_ENDPOINT_URL=moto_s3.endpoint_url)
    lake = Lake.open(s3_lake_uri, moto_s3.storage_options())
    with run_simulator_process(
        "--records", "1500", *RANGE, "--max-window", WINDOW, "--seed", "62", "--admin"
    ) as sim:
        ok(run_harvest(sim.url, s3_lake_uri, "--from", "2019-01-01", "--to", "2019-02-28", env=env))
        files = lake.list_files("year=2019/month=2", suffix=".parquet")
        gone = files[len(files) // 2]
        lake.delete(gone)
        code, text = verify(sim.url, s3_lake_uri, env=env)
        assert code == EXIT_MISMATCH and f"committed file is missing: {gone}" in text, text
        code, text = verify(sim.url, s3_lake_uri, "--repair", env=env)
        assert code == 0 and "after repair: ok" in text, text
        assert not lake.exists(gone)
        assert_lake_equals_truth(lake, sim.truth())
        # The deep check on S3 reads the rewritten partition's files too.
        code, text = verify(sim.url, s3_lake_uri, "--deep", "--sample", "3", env=env)
        assert code == 0 and "deep: a sample of 3 days" in text, text


def _by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in rows}


def _lake_equals_truth(out: Path, truth: list[dict[str, Any]]) -> bool:
    try:
        assert_lake_equals_truth(Lake.open(str(out)), truth)
    except AssertionError:
        return False
    return True


def test_count_neutral_drift_is_invisible_to_counts_and_deep_names_and_repairs_it(
    harvested: tuple[SimHandle, Path],
) -> None:
    sim, out = harvested
    before = _by_id(sim.truth())
    summary = sim.mutate(modify_silently=8, swap=4, seed=9)
    after = _by_id(sim.truth())
    changed = sorted(i for i in before.keys() & after.keys() if before[i] != after[i])
    gone, new = sorted(before.keys() - after.keys()), sorted(after.keys() - before.keys())
    assert len(changed) == 8 and len(gone) == len(new) == 4, summary

    # Counts stay, stamps are old: a refresh reconciling every day leaves the drift, and the
    # count checks of verify see nothing.
    refresh_all_days(sim.url, str(out))
    assert not _lake_equals_truth(out, list(after.values()))
    code, text = verify(sim.url, str(out))
    assert code == 0 and "verify: ok" in text, text

    code, text = verify(sim.url, str(out), "--deep")
    assert code == EXIT_MISMATCH, text
    report = printed_report(text)
    deep = report["extra"]["check"]["deep"]
    assert deep["sample"] is None and deep["seed"] is None
    assert deep["days"][0] == "2019-01-01" and len(deep["days"]) >= 59
    problems = [p["text"] for p in report["extra"]["check"]["problems"] if p["kind"] == "deep"]
    lake_rows = _by_id(read_lake(Lake.open(str(out))))
    still = [
        i for i in changed if lake_rows[i]["actionTypeCategory"] != after[i]["actionTypeCategory"]
    ]
    assert still  # what the refresh did not catch
    for row_id in still:
        day = after[row_id]["submissionDate"][:10]
        old, new_category = before[row_id], after[row_id]["actionTypeCategory"]
        line = next(t for t in problems if t.startswith(f"day {day}: row {row_id} differs in"))
        assert (
            f"actionTypeCategory: lake {old['actionTypeCategory']!r}, service {new_category!r}"
            in line
        )
        assert "createDateTime" not in line
    for row_id in gone:
        day = before[row_id]["submissionDate"][:10]
        assert f"day {day}: row {row_id} is in the lake, the service no longer has it" in problems
    for row_id in new:
        day = after[row_id]["submissionDate"][:10]
        assert f"day {day}: row {row_id} is missing from the lake" in problems
    differing = set(deep["days_differing"])
    assert differing <= set(summary["days"]) and differing == {
        t.split(":")[0].removeprefix("day ") for t in problems
    }
    assert "problem: day" in text and "deep: 59 days compared row by row" in text

    code, text = verify(sim.url, str(out), "--deep", "--repair")
    assert code == 0 and "after repair: ok" in text, text
    repaired = printed_report(text)
    assert set(repaired["extra"]["repair_days"]) == differing
    assert repaired["extra"]["after_repair"]["deep"]["days"] == sorted(differing)
    assert_lake_equals_truth(Lake.open(str(out)), list(after.values()))


def test_sample_compares_exactly_n_days_and_a_seed_repeats_them(
    harvested: tuple[SimHandle, Path],
) -> None:
    sim, out = harvested
    code, text = verify(sim.url, str(out), "--deep", "--sample", "5", *JANUARY)
    assert code == 0, text
    deep = printed_report(text)["extra"]["check"]["deep"]
    assert len(deep["days"]) == 5 == len(set(deep["days"])) and deep["sample"] == 5
    assert all(d.startswith("2019-01-") for d in deep["days"])
    assert deep["seed"] is not None and f"(seed {deep['seed']})" in text
    truth = sim.truth()
    assert deep["rows_compared"] == sum(r["submissionDate"][:10] in deep["days"] for r in truth)
    seed = str(deep["seed"])
    code, again = verify(
        sim.url, str(out), "--deep", "--sample", "5", "--sample-seed", seed, *JANUARY
    )
    assert printed_report(again)["extra"]["check"]["deep"]["days"] == deep["days"]
    result = cli("verify", "--api-url", sim.url, "--out", str(out), "--sample", "3")
    assert result.returncode == 2 and "--sample needs --deep" in result.stderr


def test_choose_days_and_compare_day() -> None:
    first, last = dt.date(2019, 1, 1), dt.date(2019, 1, 31)
    every, seed = choose_days(first, last, DeepOptions())
    assert len(every) == 31 and seed is None
    assert choose_days(first, last, DeepOptions(40))[0] == every  # more than there are
    some, seed = choose_days(first, last, DeepOptions(4, 7))
    assert len(some) == 4 and seed == 7 and some == choose_days(first, last, DeepOptions(4, 7))[0]

    day = dt.date(2019, 1, 2)

    def row(i: int, category: str) -> dict[str, Any]:
        return {"id": f"{i:032x}", "submissionDate": day, "actionTypeCategory": category}

    lake = pa.Table.from_pylist(
        [row(1, "rejected"), row(2, "a" * 100), row(3, "x"), row(3, "x")], schema=ARROW_SCHEMA
    )
    served = pa.Table.from_pylist(
        [row(1, "rejected"), row(2, "b"), row(4, "y")], schema=ARROW_SCHEMA
    )
    result = compare_day(day, lake, served)
    assert result.counts == {"missing": 1, "extra": 1, "differing": 1, "repeated": 1}
    assert result.missing == [f"{4:032x}"] and result.extra == [f"{3:032x}"]
    assert result.repeated == {f"{3:032x}": 2}
    [(name, have, want)] = result.differing[f"{2:032x}"]
    assert name == "actionTypeCategory" and want == "'b'" and have.endswith("...")
    assert len(have) == 60
    assert "1 missing, 1 extra, 1 differing, 1 repeated" in result.reason()
    assert compare_day(day, served, served).equal


def _compare_day_by_dicts(day: dt.date, lake: pa.Table, served: pa.Table, budget: int) -> Any:
    """The row-by-row comparison ``compare_day`` replaced (Python dicts), as the oracle:
    (counts, missing, extra, differing, repeated)."""
    counts: dict[str, int] = {}
    named: dict[str, Any] = {"missing": [], "extra": [], "differing": {}, "repeated": {}}
    lake_rows: dict[str, dict[str, Any]] = {}
    copies: dict[str, int] = {}
    for row in lake.to_pylist():
        copies[row["id"]] = copies.get(row["id"], 0) + 1
        lake_rows.setdefault(row["id"], row)

    def name(kind: str) -> bool:
        counts[kind] = counts.get(kind, 0) + 1
        return sum(len(v) for v in named.values()) < budget

    served_ids = set()
    for want in served.to_pylist():
        served_ids.add(want["id"])
        have = lake_rows.get(want["id"])
        if have is None:
            if name("missing"):
                named["missing"].append(want["id"])
            continue
        differ = [n for n in ARROW_SCHEMA.names if have[n] != want[n]]
        if differ and name("differing"):
            named["differing"][want["id"]] = differ
    for row_id in sorted(lake_rows.keys() - served_ids):
        if name("extra"):
            named["extra"].append(row_id)
    for row_id, n in sorted(copies.items()):
        if n > 1 and name("repeated"):
            named["repeated"][row_id] = n
    return counts, named["missing"], named["extra"], named["differing"], named["repeated"]


@pytest.mark.parametrize("seed", range(150))
def test_compare_day_names_what_a_row_by_row_comparison_names(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The columnar comparison against the dict one it replaced, on tables with repeated
    and missing ids, nulls, lists and booleans, and a naming budget small enough to run
    out: the same counts and the same rows named, in the same order (seeded draws)."""
    draw = random.Random(seed)
    lake, served = (
        [(draw.randrange(13), draw.randrange(4)) for _ in range(draw.randrange(26))]
        for _ in range(2)
    )
    budget = draw.randint(1, 12)
    day = dt.date(2019, 1, 2)
    values: list[dict[str, Any]] = [
        {},
        {"actionTypeCategory": "rejected", "claimNumberArrayDocument": ["1", "2"]},
        {"claimNumberArrayDocument": ["1"], "hasRej101": True, "cite103Max": 3},
        {"claimNumberArrayDocument": [], "hasRej101": False},
    ]

    def table(rows: list[tuple[int, int]]) -> pa.Table:
        dicts = [{"id": f"{i:032x}", "submissionDate": day, **values[v]} for i, v in rows]
        return pa.Table.from_pylist(dicts, schema=ARROW_SCHEMA)

    import harvester.ops.deep as deep

    monkeypatch.setattr(deep, "NAMED_PER_DAY", budget)
    got = compare_day(day, table(lake), table(served))
    counts, missing, extra, differing, repeated = _compare_day_by_dicts(
        day, table(lake), table(served), budget
    )
    assert dict(got.counts) == counts
    assert got.equal == (not counts)
    assert (got.missing, got.extra, got.repeated) == (missing, extra, repeated)
    assert list(got.differing) == list(differing)
    assert {i: [f[0] for f in fields] for i, fields in got.differing.items()} == differing
