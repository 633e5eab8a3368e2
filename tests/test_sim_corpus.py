"""The simulator's corpus: deterministic, shaped like the source, quirky, and never all in memory."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from harvester.sim.corpus import Corpus, serialize
from harvester.sim.lucene import parse
from harvester.sim.rows import FIELDS, ZERO_ONE_FLAGS
from harvester.sim.volumes import day_counts, largest_remainder

START, END = dt.date(2019, 1, 1), dt.date(2019, 3, 31)
HEX32 = re.compile(r"[0-9a-f]{32}")
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
INDICATORS = ("aliceIndicator", "bilskiIndicator", "mayoIndicator", "myriadIndicator",
              "allowedClaimIndicator")  # fmt: skip
SAMPLE = Path(__file__).parent / "fixtures" / "records-by-application.json"


def rows_of(corpus: Corpus) -> list[dict[str, Any]]:
    return [orjson.loads(line) for chunk in corpus.truth_chunks() for line in chunk.splitlines()]


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return rows_of(Corpus(3, 30_000, START, END))


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    a = b"".join(Corpus(5, 4000, START, END).truth_chunks())
    b = b"".join(Corpus(5, 4000, START, END).truth_chunks())
    c = b"".join(Corpus(6, 4000, START, END).truth_chunks())
    assert a == b
    assert a != c


def test_day_counts_add_up_and_look_like_mail_days() -> None:
    counts = day_counts(1, 100_000, dt.date(2018, 6, 1), 365)
    assert sum(counts) == 100_000
    by_kind: dict[bool, list[int]] = defaultdict(list)
    for k, n in enumerate(counts):
        by_kind[(dt.date(2018, 6, 1) + dt.timedelta(days=k)).weekday() >= 5].append(n)
    weekday, weekend = by_kind[False], by_kind[True]
    assert sum(weekday) / len(weekday) > 10 * sum(weekend) / len(weekend)  # weekends light
    assert 0 in weekday and 0 in weekend  # holidays, empty weekends
    assert len(set(weekday)) > 50  # volumes vary from day to day


def test_largest_remainder_is_exact() -> None:
    assert largest_remainder(10, [1.0, 1.0, 1.0]) == [4, 3, 3]
    assert sum(largest_remainder(999_999, [0.3, 0.7, 0.0, 2.5])) == 999_999
    assert largest_remainder(0, [1.0]) == [0]


def test_rows_have_the_31_fields_in_alphabetical_order(rows: list[dict[str, Any]]) -> None:
    assert list(FIELDS) == sorted(FIELDS) and len(FIELDS) == 31
    full = [r for r in rows if len(r) == 31]
    assert len(full) > 0.99 * len(rows)
    for row in full[:500]:
        assert list(row) == list(FIELDS)
    if SAMPLE.exists():  # the real capture has the same keys in the same order
        real = orjson.loads(SAMPLE.read_bytes())["response"]["docs"][0]
        assert list(real) == list(FIELDS)


def test_ids_are_unique_32_hex(rows: list[dict[str, Any]]) -> None:
    ids = [r["id"] for r in rows]
    assert all(HEX32.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids) == 30_000


def test_dates_and_stamps(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        sub = row["submissionDate"]
        assert sub.endswith("T00:00:00") and START <= dt.date.fromisoformat(sub[:10]) <= END
        assert STAMP.fullmatch(row["createDateTime"])
        delay = dt.datetime.fromisoformat(row["createDateTime"]) - dt.datetime.fromisoformat(sub)
        assert dt.timedelta(days=1) <= delay < dt.timedelta(days=45)


def test_office_actions_share_their_fields(rows: list[dict[str, Any]]) -> None:
    actions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if "obsoleteDocumentIdentifier" in row:  # the odd row lacks it
            actions[row["obsoleteDocumentIdentifier"]].append(row)
    sizes = Counter(len(v) for v in actions.values())
    assert set(sizes) <= set(range(1, 7)) and sizes[1] and sizes[3] and sizes[6]
    shared = ("patentApplicationNumber", "submissionDate", "groupArtUnitNumber",
              "nationalClass", "createDateTime", "legacyDocumentCodeIdentifier")  # fmt: skip
    for group in actions.values():
        for name in shared:
            assert len({r[name] for r in group if name in r}) <= 1, (name, group)
    assert all(re.fullmatch(r"[A-Z2-7]{15}", doc) for doc in actions)


def test_source_quirks_are_present(rows: list[dict[str, Any]]) -> None:
    assert sum(r.get("actionTypeCategory") == "" for r in rows) > 0.3 * len(rows)
    assert sum(r.get("legalSectionCode") == "" for r in rows) > 0.1 * len(rows)
    claims = [r["claimNumberArrayDocument"] for r in rows if "claimNumberArrayDocument" in r]
    assert all(isinstance(c, list) and len(c) == 1 for c in claims)
    assert any("," in c[0] for c in claims)
    values = Counter((type(r[f]).__name__, r[f]) for r in rows for f in ZERO_ONE_FLAGS if f in r)
    assert values[("int", 0)] and values[("int", 1)]
    assert values[("float", 1.0)] > 0 and values[("str", "0")] > 0  # type drift
    assert set(values) == {("int", 0), ("int", 1), ("float", 1.0), ("str", "0")}
    for name in INDICATORS:
        assert {type(r[name]) for r in rows if name in r} == {bool}
    assert any(r["aliceIndicator"] for r in rows if "aliceIndicator" in r)
    missing = [r for r in rows if len(r) < 31]
    assert 5 < len(missing) < 200  # the odd row lacks a field, never id or the dates
    assert all({"id", "submissionDate", "createDateTime"} <= set(r) for r in missing)


def test_bad_rows_are_injected_and_counted() -> None:
    corpus = Corpus(3, 5000, START, END, bad_rows=12)
    rows = rows_of(corpus)
    assert len(rows) == 5000
    bad = [r for r in rows if "id" not in r or not r["submissionDate"].endswith("T00:00:00")
           or r["submissionDate"][5:7] == "13"]  # fmt: skip
    assert len(bad) == 12
    # The index still knows them by their real day: a day query finds them.
    found, _ = corpus.search(parse("submissionDate:[2019-01-01 TO 2019-03-31T23:59:59Z]"), 0, 0)
    assert found == 5000


def test_pages_carry_exactly_the_truth_bytes() -> None:
    corpus = Corpus(3, 3000, START, END, bad_rows=3)
    found, docs = corpus.search(parse("*:*"), 0, 3000)
    assert found == 3000
    assert orjson.dumps(docs) == b"[" + b",".join(serialize(d) for d in docs) + b"]"
    assert b"".join(serialize(d) + b"\n" for d in docs) == b"".join(corpus.truth_chunks())


def test_five_million_rows_construct_fast_and_count_without_generating() -> None:
    started = time.perf_counter()
    corpus = Corpus(1, 5_000_000, dt.date(2018, 6, 1), dt.date(2019, 5, 31))
    found, docs = corpus.search(parse("*:*"), 0, 0)
    assert time.perf_counter() - started < 1.0
    assert found == 5_000_000 and docs == [] and corpus.generated_rows == 0
    day = "submissionDate:[2019-01-02T00:00:00Z TO 2019-01-02T23:59:59Z]"
    found_day, _ = corpus.search(parse(day), 0, 0)
    assert found_day == corpus.count(dt.date(2019, 1, 2).toordinal())
    assert corpus.generated_rows == 0  # ALL days are counted from the volumes
    found_stamp, _ = corpus.search(parse("createDateTime:[2019-08-01T00:00:00Z TO *]"), 0, 0)
    assert found_stamp == 0 and corpus.generated_rows == 0  # no day can hold such a stamp


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status")


def test_memory_stays_flat_while_paging_a_five_million_row_corpus() -> None:
    corpus = Corpus(1, 5_000_000, dt.date(2018, 6, 1), dt.date(2019, 5, 31), cache_rows=40_000)
    first = dt.date(2019, 1, 7)
    rss: list[float] = []
    for k in range(14):
        day = (first + dt.timedelta(days=k)).isoformat()
        node = parse(f"submissionDate:[{day}T00:00:00Z TO {day}T23:59:59Z] AND id:[* TO 8}}")
        found, _ = corpus.search(node, 0, 100)
        for start in range(100, min(found, 3000), 100):
            assert len(corpus.search(node, start, 100)[1]) == min(100, found - start)
        if k in (3, 13):
            rss.append(_rss_mb())
    assert corpus.cache_info()["cached_rows"] <= 40_000 + 25_000  # one day may overshoot
    assert rss[1] - rss[0] < 60, rss  # 10 more days generated (~170k rows), no growth
