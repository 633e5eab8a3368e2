"""Change over time: every mutation shows in the truth, reproducibly; export-truth is stable."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from harvester.sim.corpus import Corpus
from harvester.sim.lucene import parse
from harvester.sim.mutate import MutationError, MutationSpec, Mutator
from harvester.sim.predicate import compile_predicate
from harvester.sim.testing import SIM_MODULE, run_simulator_process

START, END = dt.date(2019, 1, 1), dt.date(2019, 2, 28)


def truth(corpus: Corpus) -> list[dict[str, Any]]:
    return [orjson.loads(line) for chunk in corpus.truth_chunks() for line in chunk.splitlines()]


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in rows}


@pytest.fixture
def corpus() -> Corpus:
    return Corpus(4, 5000, START, END)


def test_modify_keeps_id_and_date_with_a_newer_stamp(corpus: Corpus) -> None:
    before = by_id(truth(corpus))
    summary = Mutator(corpus).apply(MutationSpec(modify=40, seed=1))
    after = by_id(truth(corpus))
    assert summary["modified"] == 40 and summary["numFound"] == 5000 == len(after)
    assert set(after) == set(before)
    changed = [i for i in after if after[i] != before[i]]
    assert len(changed) == 40
    for i in changed:
        old, new = before[i], after[i]
        assert new["submissionDate"] == old["submissionDate"]
        assert new["createDateTime"] > old["createDateTime"]
        assert new["createDateTime"].startswith(summary["clock"][:10])
        assert new["actionTypeCategory"] != old["actionTypeCategory"]
        assert list(new) == sorted(new)


def test_delete_removes_ids(corpus: Corpus) -> None:
    before = by_id(truth(corpus))
    summary = Mutator(corpus).apply(MutationSpec(delete=25, seed=1))
    after = by_id(truth(corpus))
    assert summary["deleted"] == 25 and len(after) == 4975 == summary["numFound"]
    assert set(after) < set(before)
    assert corpus.search(parse("*:*"), 0, 0)[0] == 4975


def test_add_appends_new_days_and_late_fills_old_days(corpus: Corpus) -> None:
    before = by_id(truth(corpus))
    summary = Mutator(corpus).apply(MutationSpec(add=200, late=30, seed=3))
    rows = truth(corpus)
    new = [r for r in rows if r["id"] not in before]
    assert len(new) == 230 and summary["numFound"] == 5230
    added = [r for r in new if r["submissionDate"][:10] > END.isoformat()]
    late = [r for r in new if r["submissionDate"][:10] <= END.isoformat()]
    assert len(added) == 200 and len(late) == 30
    assert all(r["createDateTime"][:10] == summary["clock"][:10] for r in new)
    assert rows[-len(added) :] == added  # new days come last in index order
    last_day = f"{added[0]['submissionDate'][:10]}T00:00:00Z"
    assert corpus.search(parse(f"submissionDate:[{last_day} TO *]"), 0, 0)[0] == 200
    stamp = f"createDateTime:[{summary['clock']}Z TO *]"
    assert corpus.search(parse(stamp), 0, 0)[0] == 230  # a refresh watermark finds them all


def test_reorder_changes_pages_but_not_the_set(corpus: Corpus) -> None:
    node = parse("submissionDate:[2019-01-07 TO 2019-01-07T23:59:59Z]")
    found, page = corpus.search(node, 0, 50)
    _, everything = corpus.search(node, 0, found)
    Mutator(corpus).apply(MutationSpec(reorder=True, seed=1))
    found_after, page_after = corpus.search(node, 0, 50)
    _, everything_after = corpus.search(node, 0, found)
    assert found_after == found
    assert page_after != page
    assert sorted(r["id"] for r in everything_after) == sorted(r["id"] for r in everything)


def test_same_mutations_same_truth() -> None:
    def run() -> bytes:
        corpus = Corpus(4, 3000, START, END)
        mutator = Mutator(corpus)
        mutator.apply(MutationSpec(add=50, late=20, modify=30, delete=10, seed=1))
        mutator.apply(MutationSpec(modify=30, delete=10, reorder=True, seed=2))
        return b"".join(corpus.truth_chunks())

    assert run() == run()


def test_clock_moves_forward_every_call(corpus: Corpus) -> None:
    mutator = Mutator(corpus)
    clocks = [mutator.apply(MutationSpec(add=1000))["clock"] for _ in range(3)]
    assert clocks == sorted(set(clocks))
    base_latest = max(r["createDateTime"] for r in truth(Corpus(4, 5000, START, END)))
    assert clocks[0] > base_latest


@pytest.mark.parametrize(
    "body",
    [
        [1],
        {"add": -1},
        {"add": "3"},
        {"reorder": "yes"},
        {"seed": 1.5},
        {"drop": 1},
        {"late": True},
        {"reload": "yes"},
        {"reload": 1},
    ],
)
def test_bad_mutation_requests_are_refused(body: Any) -> None:
    with pytest.raises(MutationError):
        MutationSpec.from_json(body)


def export(tmp_path: Path, name: str, *args: str) -> bytes:
    path = tmp_path / name
    subprocess.run(
        [sys.executable, *SIM_MODULE, "--records", "4000", *args, "--export-truth", str(path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path.read_bytes()


def test_export_truth_is_byte_identical_for_a_seed(tmp_path: Path) -> None:
    first = export(tmp_path, "a.jsonl", "--seed", "8", "--bad-rows", "3")
    second = export(tmp_path, "b.jsonl", "--seed", "8", "--bad-rows", "3")
    other = export(tmp_path, "c.jsonl", "--seed", "9", "--bad-rows", "3")
    assert first == second
    assert first != other
    assert first.count(b"\n") == 4000 == other.count(b"\n")
    corpus = Corpus(8, 4000, dt.date(2018, 6, 1), dt.date(2019, 5, 31), bad_rows=3)
    assert first == b"".join(corpus.truth_chunks())


def test_silent_modifications_and_swaps_keep_counts_and_old_stamps(corpus: Corpus) -> None:
    before = truth(corpus)
    old = by_id(before)
    per_day = Counter(r["submissionDate"][:10] for r in before)
    newest = max(r["createDateTime"] for r in before)
    summary = Mutator(corpus).apply(MutationSpec(modify_silently=12, swap=7, seed=2))
    assert summary["modified_silently"] == 12 and summary["swapped"] == 7
    after_rows = truth(corpus)
    after = by_id(after_rows)
    # Count-neutral on every day, and nothing new to a watermark taken before the call.
    assert Counter(r["submissionDate"][:10] for r in after_rows) == per_day
    assert summary["numFound"] == 5000 == len(after)
    assert max(r["createDateTime"] for r in after_rows) == newest
    changed = [i for i in after.keys() & old.keys() if after[i] != old[i]]
    assert len(changed) == 12
    for i in changed:
        assert after[i]["createDateTime"] == old[i]["createDateTime"]
        assert after[i]["actionTypeCategory"] != old[i]["actionTypeCategory"]
        assert list(after[i]) == sorted(after[i])
    gone, new = old.keys() - after.keys(), after.keys() - old.keys()
    assert len(gone) == len(new) == 7
    assert sorted(old[i]["submissionDate"] for i in gone) == sorted(
        after[i]["submissionDate"] for i in new
    )
    assert set(summary["days"]) == {after[i]["submissionDate"][:10] for i in [*changed, *new]}
    # The service finds them by their (old) stamp as it finds any row.
    for i in new:
        stamp = after[i]["createDateTime"]
        node = parse(f"createDateTime:[{stamp}Z TO {stamp}Z] AND id:{i}")
        assert corpus.search(node, 0, 1)[0] == 1


def count(corpus: Corpus, query: str) -> int:
    return corpus.search(parse(query), 0, 0)[0]


def test_base_rows_carry_the_stamps_of_weekly_batch_loads(corpus: Corpus) -> None:
    rows = truth(corpus)
    stamps = Counter(r["createDateTime"] for r in rows)
    # A handful of loads stamp everything, as the captured sample's one stamp for 2011.
    assert len(stamps) < len(rows) / 100
    assert max(stamps.values()) > len(rows) / 20
    for stamp in stamps:
        assert dt.datetime.fromisoformat(stamp).weekday() == 1  # the loads' Tuesday
    for row in rows:  # within the day's known bounds, which prune queries
        delay = dt.date.fromisoformat(row["createDateTime"][:10]) - dt.date.fromisoformat(
            row["submissionDate"][:10]
        )
        assert dt.timedelta(days=1) <= delay < dt.timedelta(days=45)
    newest = max(stamps)
    assert count(corpus, f"createDateTime:[{newest}Z TO {newest}Z]") == stamps[newest]


def test_a_call_is_one_load_every_row_it_touches_shares_its_stamp(corpus: Corpus) -> None:
    before = by_id(truth(corpus))
    summary = Mutator(corpus).apply(MutationSpec(add=120, late=30, modify=25, seed=6))
    after = truth(corpus)
    touched = [r for r in after if r["id"] not in before or r != before[r["id"]]]
    assert len(touched) == 175
    assert {r["createDateTime"] for r in touched} == {summary["stamp"]}
    assert summary["stamp"].startswith(summary["clock"][:10])
    assert count(corpus, f"createDateTime:[{summary['stamp']}Z TO *]") == 175


def test_reload_restamps_every_row_with_the_calls_content_changes(corpus: Corpus) -> None:
    mutator = Mutator(corpus)
    mutator.apply(MutationSpec(add=60, modify=20, seed=1))  # rows added before the reload
    before = by_id(truth(corpus))
    summary = mutator.apply(MutationSpec(reload=True, modify=5, delete=4, add=30, seed=2))
    assert summary["reloaded"] is True and summary["modified"] == 5
    rows = truth(corpus)
    after = by_id(rows)
    assert len(after) == len(before) - 4 + 30 == summary["numFound"] == count(corpus, "*:*")
    assert {r["createDateTime"] for r in rows} == {summary["stamp"]}
    # Apart from the stamp, only the five modified rows changed content.
    changed = [
        i
        for i in after.keys() & before.keys()
        if {**after[i], "createDateTime": ""} != {**before[i], "createDateTime": ""}
    ]
    assert len(changed) == 5
    assert len(before.keys() - after.keys()) == 4 and len(after.keys() - before.keys()) == 30
    # Every row is found by the reload's stamp, and by no older one (days pruned exactly).
    stamp = summary["stamp"]
    assert count(corpus, f"createDateTime:[{stamp}Z TO {stamp}Z]") == len(rows)
    assert count(corpus, f"createDateTime:[* TO {stamp}Z}}") == 0

    # Pruning by the days' stamp bounds answers as filtering every row would.
    for query in (
        f"createDateTime:[{stamp[:10]} TO *] AND submissionDate:[2019-01-10 TO 2019-02-03]",
        f"NOT createDateTime:[{stamp}Z TO *]",
        "createDateTime:[2019-02-01T00:00:00Z TO *] OR id:[a TO b}",
    ):
        predicate = compile_predicate(parse(query))
        assert corpus.search(parse(query), 0, len(rows))[1] == [r for r in rows if predicate(r)]

    # Later calls stamp newer loads; a swap is stamped like its day's base rows (the reload).
    later = mutator.apply(MutationSpec(add=10, swap=3, modify_silently=2, seed=3))
    assert later["stamp"] > stamp
    rows = truth(corpus)
    assert Counter(r["createDateTime"] for r in rows) == {
        stamp: len(rows) - 10,
        later["stamp"]: 10,
    }


def test_a_reload_is_reproducible_and_reaches_the_truth_of_a_served_simulator() -> None:
    def run() -> bytes:
        corpus = Corpus(4, 3000, START, END)
        mutator = Mutator(corpus)
        mutator.apply(MutationSpec(add=50, modify=30, delete=10, seed=1))
        mutator.apply(MutationSpec(reload=True, modify=3, seed=2))
        return b"".join(corpus.truth_chunks())

    assert run() == run()
    args = ("--records", "3000", "--start", "2019-01-01", "--end", "2019-02-28", "--seed", "4")
    with run_simulator_process(*args, "--admin") as sim:
        sim.mutate(add=50, modify=30, delete=10, seed=1)
        sim.mutate(reload=True, modify=3, seed=2)
        assert sim.truth_bytes() == run()
