"""Answers from day facts equal the reference path's, query for query, page for page.

The corpus answers the harvester's queries from per-day facts (skeletons of ids and load
delays, histograms of load stamps) and builds only the rows a page serves; the reference
path (``Corpus(..., fast=False)``) generates and filters every undecided day, as the
simulator always did. Here both answer many random queries of every shape the harvester
sends, before and after every kind of mutation, and must agree on ``numFound``, on every
row and on the order.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterator

import orjson
import pytest

from harvester.sim.corpus import SORT_FIELDS, Corpus, SortKey
from harvester.sim.lucene import parse
from harvester.sim.mutate import MutationSpec, Mutator
from harvester.sim.rows import Stamps, base_batches, generate, rows_at, skeleton

START, END = dt.date(2019, 1, 1), dt.date(2019, 3, 31)
HEX = "0123456789abcdef"
# Every kind of change, one call each, then a few together; reload in the middle so later
# calls stamp on top of a re-stamped index.
MUTATIONS = [
    MutationSpec(add=400, seed=1),
    MutationSpec(late=120, seed=2),
    MutationSpec(modify=150, seed=3),
    MutationSpec(delete=130, seed=4),
    MutationSpec(modify_silently=40, swap=30, seed=5),
    MutationSpec(future=25, seed=6),
    MutationSpec(reorder=True, seed=7),
    MutationSpec(reload=True, modify=20, delete=15, add=60, seed=8),
    MutationSpec(late=50, modify=60, delete=40, swap=10, seed=9),
]


def _day(rng: random.Random, corpus: Corpus) -> dt.date:
    return dt.date.fromordinal(rng.randint(corpus.first, corpus.last))


def _stamp(rng: random.Random, stamps: list[str]) -> str:
    """A served stamp (an exact bound), a second off one, or any second nearby."""
    base = dt.datetime.fromisoformat(rng.choice(stamps))
    shift = rng.choice([0, 0, 1, -1, rng.randint(-10 * 86400, 10 * 86400)])
    if base.year == 9999:  # a future row's stamp: no room after it
        shift = -abs(shift)
    return (base + dt.timedelta(seconds=shift)).isoformat()


def _bound(rng: random.Random, stamps: list[str], form: str) -> str:
    return "*" if rng.random() < 0.15 else form.format(stamp=_stamp(rng, stamps))


def _stamp_range(rng: random.Random, stamps: list[str], form: str) -> str:
    low, high = sorted([_bound(rng, stamps, form), _bound(rng, stamps, form)])
    if high == "*":  # "*" sorts first: keep it an open end on either side at random
        low, high = (high, low) if rng.random() < 0.5 else (low, high)
    opening, closing = rng.choice("[{"), rng.choice("]}")
    return f"createDateTime:{opening}{low} TO {high}{closing}"


def _days(rng: random.Random, corpus: Corpus) -> str:
    """Mostly the harvester's form (one day, or a span); sometimes any other form of the
    ends, an open end, or a single value, so the narrowing to mail days meets them all."""
    a, b = sorted([_day(rng, corpus), _day(rng, corpus)])
    if rng.random() < 0.5:
        b = a  # one day, as a shard asks
    pick = rng.random()
    if pick < 0.6:
        return f"submissionDate:[{a}T00:00:00Z TO {b}T23:59:59Z]"
    low, high = rng.choice([(f"{a}", f"{b}"), (f"{a}T00:00:00Z", f"{b}T00:00:00Z")])
    if corpus.string_dates and rng.random() < 0.5:
        low, high = f"{a}T00:00:00", f"{b}T00:00:00"  # the served form: strings compare it
    if pick < 0.7:
        low = "*"
    elif pick < 0.8:
        high = "*"
    elif pick < 0.85:
        return f'submissionDate:"{high}"'
    return f"submissionDate:{rng.choice('[{')}{low} TO {high}{rng.choice(']}')}"


def _id_range(rng: random.Random, ids: list[str]) -> str:
    def bound() -> str:
        pick = rng.random()
        if pick < 0.15:
            return "*"
        if pick < 0.35:
            return rng.choice(ids)  # an exact id: the ends' inclusion matters
        return "".join(rng.choice(HEX) for _ in range(rng.randint(1, 3)))

    low, high = bound(), bound()
    if low != "*" and high != "*" and low > high:
        low, high = high, low
    return f"id:{rng.choice('[{')}{low} TO {high}{rng.choice(']}')}"


def queries(rng: random.Random, corpus: Corpus, n: int) -> Iterator[str]:
    """``n`` random queries of each of the harvester's shapes (and some mixed ones)."""
    truth = [orjson.loads(line) for chunk in corpus.truth_chunks() for line in chunk.splitlines()]
    stamps = sorted({row["createDateTime"] for row in truth})
    ids = [row["id"] for row in truth if "id" in row]
    form = "{stamp}Z" if not corpus.string_dates else "{stamp}"
    shapes: list[Callable[[], str]] = [
        lambda: _days(rng, corpus),
        lambda: _stamp_range(rng, stamps, form),
        lambda: f"createDateTime:[{form.format(stamp=_stamp(rng, stamps))} TO *]",
        lambda: f"{_days(rng, corpus)} AND {_id_range(rng, ids)}",
        lambda: (  # the refresh's changed rows, cut around the stamps it may skip
            "(" + " OR ".join(_stamp_range(rng, stamps, form) for _ in range(rng.randint(2, 4)))
            + f") AND {_days(rng, corpus)}"
        ),
        lambda: f"({_stamp_range(rng, stamps, form)}) AND {_days(rng, corpus)}"
        f" AND {_id_range(rng, ids)}",
        lambda: f"createDateTime:\"{form.format(stamp=rng.choice(stamps))}\"",
        lambda: f"id:{rng.choice(ids)}",
        lambda: f"createDateTime:[{form.format(stamp=_stamp(rng, stamps))} TO *]"
        f" AND id:{rng.choice(ids)}",  # the service probe's stamp-form proof
        lambda: f"{_days(rng, corpus)} AND NOT {_id_range(rng, ids)}",
        lambda: f"NOT ({_stamp_range(rng, stamps, form)} AND {_id_range(rng, ids)})",
        lambda: f"{_days(rng, corpus)} AND hasRej101:1",  # not from facts: the day is made
    ]  # fmt: skip
    yield "*:* NOT submissionDate:[* TO *]"
    yield "*:*"
    for _ in range(n):
        for shape in shapes:
            yield shape()


def assert_same_answers(fast: Corpus, slow: Corpus, rng: random.Random, n: int = 10) -> None:
    for text in queries(rng, slow, n):
        node = parse(text, string_dates=slow.string_dates)
        found, _ = slow.search(node, 0, 0)
        assert fast.search(node, 0, 0) == (found, []), text
        pages = [(0, 50), (0, 1000)]
        if found > 1:
            pages += [(rng.randrange(found), rng.randint(1, 300)), (found - 1, 5)]
        for start, rows in pages:
            want = slow.search(node, start, rows)
            got = fast.search(node, start, rows)
            assert got == want, (text, start, rows)
            assert orjson.dumps(got[1]) == orjson.dumps(want[1]), text  # 1.0 == 1, "0" != 0
        if rng.random() < 0.2:  # --sort honour walks the same plans another way
            sort = SortKey(rng.choice(SORT_FIELDS), rng.random() < 0.5)
            start = rng.randrange(max(1, found))
            want = slow.search(node, start, 40, sort=sort)
            assert fast.search(node, start, 40, sort=sort) == want, (text, sort)


@pytest.mark.parametrize("string_dates", [False, True])
def test_fast_answers_equal_the_reference_before_and_after_every_mutation(
    string_dates: bool,
) -> None:
    # A day cache too small for the corpus on the fast side (pages build single rows and
    # evicted days come back), the whole corpus on the reference side (it is only slower).
    fast = Corpus(11, 9000, START, END, bad_rows=12, cache_rows=1500, string_dates=string_dates)
    slow = Corpus(
        11, 9000, START, END, bad_rows=12, cache_rows=50_000, string_dates=string_dates, fast=False
    )
    rng = random.Random(5)
    assert_same_answers(fast, slow, rng)
    fast_mutator, slow_mutator = Mutator(fast), Mutator(slow)
    for spec in MUTATIONS:
        assert fast_mutator.apply(spec) == slow_mutator.apply(spec)
        assert b"".join(fast.truth_chunks()) == b"".join(slow.truth_chunks())
        assert_same_answers(fast, slow, rng, n=3)


def test_a_small_skeleton_cache_changes_no_answer() -> None:
    fast = Corpus(3, 6000, START, END, cache_rows=500, skeleton_rows=300)
    slow = Corpus(3, 6000, START, END, fast=False)
    assert_same_answers(fast, slow, random.Random(8), n=8)
    assert fast.cache_info()["skeleton_rows"] <= 300 + 200  # one day may overshoot


def test_counts_of_the_harvesters_shapes_generate_no_row() -> None:
    corpus = Corpus(1, 400_000, dt.date(2018, 6, 1), dt.date(2019, 5, 31))
    shapes = [
        "submissionDate:[2018-09-01T00:00:00Z TO 2018-09-30T23:59:59Z]",
        "createDateTime:[2019-03-05T11:00:00Z TO 2019-07-01T00:00:00Z]",
        "createDateTime:{2019-03-05T11:00:00Z TO *]",
        "(createDateTime:[2019-02-01T00:00:00Z TO 2019-02-12T00:00:00Z} OR"
        " createDateTime:{2019-02-12T00:00:00Z TO *]) AND"
        " submissionDate:[2019-01-01T00:00:00Z TO 2019-01-31T23:59:59Z]",
        "submissionDate:[2019-01-07T00:00:00Z TO 2019-01-07T23:59:59Z] AND id:[3a TO 6}",
        "(createDateTime:[2019-02-01T00:00:00Z TO *]) AND"
        " submissionDate:[2019-01-01T00:00:00Z TO 2019-01-31T23:59:59Z] AND id:[8 TO c}",
        "*:* NOT submissionDate:[* TO *]",
    ]
    counts = [corpus.search(parse(q), 0, 0)[0] for q in shapes]
    assert corpus.generated_rows == 0 and all(counts[:-1]) and counts[-1] == 0
    reference = Corpus(1, 400_000, dt.date(2018, 6, 1), dt.date(2019, 5, 31), fast=False)
    assert [reference.search(parse(q), 0, 0)[0] for q in shapes] == counts


def test_a_page_of_a_small_share_of_its_days_generates_only_its_rows() -> None:
    """A month's id piece (a sixteenth of each day here; the planner cuts a 10 M-row month
    in ~11) builds just the rows it serves; a day shard, or a piece of a quarter of the
    day or more, generates the day whole and pages from the cache, as it always did."""
    corpus = Corpus(1, 400_000, dt.date(2018, 6, 1), dt.date(2019, 5, 31))
    month = "submissionDate:[2019-01-01T00:00:00Z TO 2019-01-31T23:59:59Z] AND id:[4 TO 5}"
    found, docs = corpus.search(parse(month), 2000, 100)
    assert found > 2100 and len(docs) == 100 == corpus.generated_rows
    assert corpus.cache_info()["cached_days"] == 0
    day = "submissionDate:[2019-01-07T00:00:00Z TO 2019-01-07T23:59:59Z] AND id:[4 TO 8}"
    corpus.search(parse(day), 0, 100)
    assert corpus.cache_info()["cached_days"] == 1
    assert corpus.generated_rows == 100 + corpus.count(dt.date(2019, 1, 7).toordinal())


def test_skeletons_and_single_rows_are_what_generate_makes() -> None:
    rng = random.Random(2)
    for k in range(30):
        day = dt.date(2019, 1, 1) + dt.timedelta(days=k)
        count = rng.randint(0, 2500)
        bad = frozenset(rng.sample(range(count), min(count, 9)))
        prefix = b"7:%d:" % k
        for batches in (base_batches(7, day), None, ("2019-06-01T01:02:03",)):
            stamps = Stamps(day, 3 * 86400)
            made = generate(random.Random(k), count, day, stamps, prefix, bad, batches)
            view = [made.indexed.get(i) or row for i, row in enumerate(made.rows)]
            plan = skeleton(random.Random(k), count, prefix)
            assert plan.ids == [row["id"] for row in view]
            if batches:
                picked = [batches[min(d, len(batches) - 1)] for d in plan.delays]
                assert picked == [row["createDateTime"] for row in view]
            assert skeleton(random.Random(k), count, b"", with_ids=False).delays == plan.delays
            wanted = rng.sample(range(count), min(count, 40))
            alone = rows_at(random.Random(k), plan, wanted, day, stamps, prefix, bad, batches)
            assert alone == {p: made.rows[p] for p in wanted}
            assert all(list(alone[p]) == list(made.rows[p]) for p in wanted)  # key order too


def test_generate_leaves_the_stream_where_it_always_did() -> None:
    """A caller drawing on after ``generate`` (bench/merge_rss.py does) sees the same numbers:
    per action a, b, c, 32 bits, 75 bits, then 64 bits a row; nothing drawn ahead."""
    rng = random.Random(4)
    generate(rng, 1000, START, Stamps(START, 86400), b"x")
    replay = random.Random(4)
    plan = skeleton(random.Random(4), 1000, b"x")
    replay.getrandbits(32 * plan.words) if plan.words else None
    assert rng.getrandbits(64) == replay.getrandbits(64)


def test_an_id_it_served_is_looked_for_on_its_own_day_alone() -> None:
    """The service probe's ``createDateTime:[s TO *] AND id:X`` of a served row reads one
    day, before and after the row is modified (a new stamp, same day) or deleted."""
    fast = Corpus(2, 20_000, dt.date(2018, 6, 1), dt.date(2019, 5, 31))
    slow = Corpus(2, 20_000, dt.date(2018, 6, 1), dt.date(2019, 5, 31), fast=False)
    _, docs = fast.search(parse("*:*"), 0, 100)
    row = docs[7]
    probes = [
        f"createDateTime:[{row['createDateTime']}Z TO *] AND id:{row['id']}",
        f"createDateTime:[{row['createDateTime']}Z TO *] AND id:{row['id']} AND hasRej101:1",
        f"id:{row['id']}",
    ]
    known = fast.cache_info()["skeleton_days"]
    assert fast.search(parse(probes[0]), 0, 0)[0] == 1
    assert fast.cache_info()["skeleton_days"] <= known + 1  # the row's day's ids, no other
    for mutation in (None, MutationSpec(modify=15_000, seed=3), MutationSpec(delete=19_000)):
        if mutation is not None:
            assert Mutator(fast).apply(mutation) == Mutator(slow).apply(mutation)
        for probe in probes:
            assert fast.search(parse(probe), 0, 10) == slow.search(parse(probe), 0, 10), probe
