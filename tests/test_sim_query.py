"""Query execution: day pruning never changes an answer, and paging walks the index order."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest

from harvester.sim.corpus import Corpus
from harvester.sim.lucene import parse
from harvester.sim.mutate import MutationSpec, Mutator
from harvester.sim.predicate import compile_predicate
from harvester.sim.prune import ALL, NONE, SOME, DayFacts, compile_classifier, residual

START, END = dt.date(2019, 1, 1), dt.date(2019, 2, 28)
QUERIES = [
    "*:*",
    "submissionDate:[2019-01-02T00:00:00Z TO 2019-01-02T23:59:59Z]",
    "submissionDate:[2019-01-02 TO 2019-01-09]",
    "submissionDate:{2019-01-02T00:00:00Z TO 2019-01-09T00:00:00Z}",
    "submissionDate:[2019-01-10T00:00:00Z TO *]",
    "submissionDate:[2019-01-07T00:00:00Z TO 2019-01-07T23:59:59Z] AND id:[0 TO 8}",
    "submissionDate:[2019-01-07T00:00:00Z TO 2019-01-07T23:59:59Z] AND id:[8 TO *]",
    "createDateTime:[2019-02-01T00:00:00Z TO *]",
    "createDateTime:[* TO 2019-01-20T12:00:00Z}",
    "createDateTime:[2019-04-16T00:00:00Z TO *]",
    "createDateTime:*",
    "NOT submissionDate:[2019-01-01 TO 2019-01-31T23:59:59Z]",
    "hasRej101:1 AND aliceIndicator:true",
    "submissionDate:[2019-01-02 TO 2019-01-04T23:59:59Z] OR legalSectionCode:101",
    "NOT (createDateTime:[2019-01-15T00:00:00Z TO *] AND id:[a TO *])",
    "patentApplicationNumber:16000000",
    "id:[0 TO 1}",
]


def truth(corpus: Corpus) -> list[dict[str, Any]]:
    return [orjson.loads(line) for chunk in corpus.truth_chunks() for line in chunk.splitlines()]


def check_against_brute_force(corpus: Corpus) -> None:
    rows = truth(corpus)
    for query in QUERIES:
        node = parse(query)
        predicate = compile_predicate(node)
        want = [r for r in rows if predicate(r)]
        found, docs = corpus.search(node, 0, len(rows) + 1)
        assert found == len(want), query
        assert docs == want, query  # same rows, same (index) order
        if found > 7:  # and a page from the middle is the same slice
            assert corpus.search(node, found // 2, 7)[1] == want[found // 2 : found // 2 + 7]


def test_pruned_answers_equal_brute_force() -> None:
    check_against_brute_force(Corpus(9, 6000, START, END))


def test_pruned_answers_equal_brute_force_after_mutations() -> None:
    corpus = Corpus(9, 6000, START, END)
    mutator = Mutator(corpus)
    mutator.apply(MutationSpec(add=300, late=150, modify=120, delete=90, seed=1))
    mutator.apply(MutationSpec(add=50, late=20, modify=200, delete=10, reorder=True, seed=2))
    check_against_brute_force(corpus)


def test_plans_too_big_to_keep_refilter_per_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("harvester.sim.corpus.PLAN_CACHE_MATCHES", 50)
    check_against_brute_force(Corpus(9, 3000, START, END))


def test_a_day_shard_only_generates_its_day() -> None:
    corpus = Corpus(1, 1_000_000, dt.date(2018, 6, 1), dt.date(2019, 5, 31))
    day = dt.date(2019, 1, 2)
    node = parse("submissionDate:[2019-01-02T00:00:00Z TO 2019-01-02T23:59:59Z] AND id:[0 TO 8}")
    found, docs = corpus.search(node, 0, 100)
    assert corpus.generated_rows == corpus.count(day.toordinal())
    assert 0.4 * corpus.count(day.toordinal()) < found < 0.6 * corpus.count(day.toordinal())
    assert all(d["id"] < "8" and d["submissionDate"] == "2019-01-02T00:00:00" for d in docs)


def test_classifier_uses_kleene_logic() -> None:
    facts = DayFacts(
        {"submissionDate": "2019-01-02T00:00:00"},
        dt.datetime(2019, 1, 3),
        dt.datetime(2019, 2, 15, 23, 59, 59),
    )

    def state(query: str) -> int:
        return compile_classifier(parse(query))(facts)

    assert state("*:*") == ALL
    assert state("submissionDate:[2019-01-02 TO 2019-01-02T23:59:59Z]") == ALL
    assert state("submissionDate:[2019-01-03 TO *]") == NONE
    assert state("id:[0 TO 8}") == SOME
    assert state("createDateTime:[2019-01-01T00:00:00Z TO 2019-03-01T00:00:00Z]") == ALL
    assert state("createDateTime:[2019-02-16T00:00:00Z TO *]") == NONE
    assert state("createDateTime:[2019-02-01T00:00:00Z TO *]") == SOME
    assert state("createDateTime:{* TO 2019-01-03T00:00:00Z}") == NONE
    assert state("NOT id:[0 TO 8}") == SOME
    assert state("NOT submissionDate:[2019-01-03 TO *]") == ALL
    assert state("id:[0 TO 8} AND submissionDate:[2019-01-03 TO *]") == NONE
    assert state("id:[0 TO 8} OR submissionDate:[2019-01-01 TO *]") == ALL
    shard = parse("submissionDate:[2019-01-02 TO 2019-01-02T23:59:59Z] AND id:[0 TO 8}")
    assert residual(shard, facts) == parse("id:[0 TO 8}")


@pytest.mark.parametrize("records", [0, 1, 7])
def test_tiny_corpora(records: int) -> None:
    corpus = Corpus(2, records, START, START + dt.timedelta(days=2))
    found, docs = corpus.search(parse("*:*"), 0, 100)
    assert found == records == len(docs)
    assert corpus.search(parse("*:*"), records, 100) == (records, [])
