"""Page checkpoints: a killed run resumes mid-shard, and kept pages never weaken the proof.

The unit tests drive ``fetch_shard`` against a small in-memory index (a stand-in for the
service's paging, not a mock of any library) with a real local lake; the end-to-end tests
SIGKILL the real command against the simulator and count what the service answered.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from harvester.errors import ShardTooLarge
from harvester.service.fetch import fetch_shard
from harvester.service.profile import Limits
from harvester.sim.testing import run_simulator_process
from harvester.storage.checkpoint import (
    LocalPageLog,
    ObjectPageStore,
    PageStore,
    StoredPage,
    sweep_page_stores,
    usable_prefix,
)
from harvester.storage.state import PAGES
from harvester.storage.store import Lake
from tests.support.harvest import RANGE, run_harvest, start_harvest
from tests.support.lakecheck import assert_lake_equals_truth

CHANGED = "createDateTime:[2019-02-01T00:00:00 TO *]"  # a plan's changed-rows scope


class Index:
    """Offset paging over a list that the test may change between calls; a doc marked
    ``changed`` is one stamped since the plan (what ``CHANGED`` counts)."""

    def __init__(self, n: int) -> None:
        self.docs: list[dict[str, Any]] = [{"id": f"{i:032x}", "n": i} for i in range(n)]
        self.requests: list[int] = []

    async def search(self, criteria: str, start: int, rows: int, sort: str | None = None) -> Any:
        self.requests.append(start)
        if CHANGED in criteria:  # the rows stamped since the plan: those the test marked
            changed = [d for d in self.docs if d.get("changed")]
            return _Page(len(changed), changed[start : start + rows])
        return _Page(len(self.docs), self.docs[start : start + rows])

    def parse_page(self, body: bytes, start: int) -> Any:
        data = orjson.loads(body)
        return _Page(data["numFound"], data["docs"])


class _Page:
    def __init__(self, num_found: int, docs: list[dict[str, Any]]) -> None:
        self.num_found = num_found
        self.docs = docs
        self.body = orjson.dumps({"numFound": num_found, "docs": docs})


SLUG = "2019-01-02"


@pytest.fixture(params=["local log", "objects"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> PageStore:
    """Both stores: the log used on local disk, the objects used on S3 (here through a
    local lake: the same ``Lake`` calls that go to S3)."""
    lake = Lake.open(str(tmp_path / "lake"))
    if request.param == "local log":
        return LocalPageLog(lake, SLUG)
    return ObjectPageStore(lake, SLUG)


def _keep_first_pages(store: PageStore, count: int) -> None:
    """What a run killed after ``count`` pages of the shard leaves behind."""
    kept = store.load()[:count]
    store.clear()
    for start, body in kept:
        store.save(start, body)


def _fetch(
    index: Index, store: PageStore | None, window: int = 1000, scope: str | None = None
) -> Any:
    limits = Limits(page_size=10, window=window, shard_size_setting=window)
    return asyncio.run(
        fetch_shard(index, "q", limits=limits, attempts=3, store=store, changed_scope=scope)
    )


def _delete_one_kept_and_add_one(index: Index) -> None:
    """Between the kill and the resume: a row inside the kept pages is deleted and a late
    row arrives at the end. numFound stays 50 and the ids stay unique, but every row after
    the deleted one moves up an offset, so the first row after the kept pages is skipped."""
    del index.docs[7]
    index.docs.append({"id": f"{50:032x}", "n": 50, "changed": True})


def test_counts_cannot_see_a_deletion_offset_by_an_addition(store: PageStore) -> None:
    """Why kept pages need a proof: trusted as they are, the resumed shard passes every
    check of the pass and is wrong (a deleted row kept, a live one skipped)."""
    index = Index(50)
    _fetch(index, store)
    _keep_first_pages(store, 2)
    _delete_one_kept_and_add_one(index)
    fetched = _fetch(index, store)  # no scope: the kept pages are trusted
    got = {d["n"] for d in fetched.docs}
    assert fetched.attempts == 1 and len(fetched.docs) == 50
    assert 7 in got and 20 not in got  # the deleted row kept, the shifted one skipped


def test_kept_pages_under_a_changed_row_are_dropped_and_the_shard_fetched_whole(
    store: PageStore,
) -> None:
    """With the plan's changed-rows scope, one count finds the late row, the kept pages go,
    and the shard is exactly the index as it is now."""
    index = Index(50)
    _fetch(index, store, scope=CHANGED)
    _keep_first_pages(store, 2)
    _delete_one_kept_and_add_one(index)
    index.requests.clear()
    fetched = _fetch(index, store, scope=CHANGED)
    assert fetched.docs == index.docs
    assert "kept pages dropped" in fetched.events[0]
    assert index.requests == [0, *range(0, 50, 10)]  # the count, then every page


def test_kept_pages_of_an_unchanged_shard_are_proven_by_one_count(store: PageStore) -> None:
    index = Index(95)
    first = _fetch(index, store, scope=CHANGED)
    _keep_first_pages(store, 4)
    index.requests.clear()
    resumed = _fetch(index, store, scope=CHANGED)
    assert index.requests == [0, *range(40, 95, 10)]  # the count, then only the rest
    assert resumed.reused_pages == 4 and resumed.docs == first.docs


def test_every_accepted_page_is_kept_and_a_resume_asks_only_for_the_rest(
    store: PageStore,
) -> None:
    index = Index(95)
    first = _fetch(index, store)
    assert [start for start, _ in store.load()] == list(range(0, 95, 10))
    # A run killed after four pages: only those are kept.
    _keep_first_pages(store, 4)
    index.requests.clear()
    resumed = _fetch(index, store)
    assert index.requests == list(range(40, 95, 10))
    assert resumed.reused_pages == 4 and resumed.pages == 6
    assert resumed.docs == first.docs


def test_a_fully_kept_shard_costs_no_request(store: PageStore) -> None:
    index = Index(30)
    expected = _fetch(index, store).docs
    index.requests.clear()
    again = _fetch(index, store)
    assert index.requests == [] and again.docs == expected and again.reused_pages == 3


def test_kept_pages_from_before_the_index_moved_are_thrown_away(store: PageStore) -> None:
    index = Index(50)
    _fetch(index, store)
    _keep_first_pages(store, 2)
    # Between the kill and the resume a row goes and the order changes.
    del index.docs[7]
    index.docs.reverse()
    index.requests.clear()
    fetched = _fetch(index, store)
    assert fetched.docs == index.docs  # exactly the index as it is now, in its order
    assert fetched.attempts == 2 and "continued from 2 kept pages" in fetched.events[0]
    assert index.requests[0] == 20 and index.requests[1:] == list(range(0, 49, 10))


def test_reordered_index_with_the_same_count_is_caught_by_the_id_check(store: PageStore) -> None:
    index = Index(40)
    _fetch(index, store)
    _keep_first_pages(store, 2)
    index.docs.reverse()  # same numFound: only the distinct-id check can tell
    fetched = _fetch(index, store)
    assert sorted(d["n"] for d in fetched.docs) == list(range(40))
    assert fetched.attempts == 2


def test_a_shard_that_outgrew_the_window_drops_its_kept_pages(store: PageStore) -> None:
    index = Index(25)
    _fetch(index, store, window=30)
    index.docs.extend({"id": f"{i:032x}", "n": i} for i in range(25, 45))
    _keep_first_pages(store, 1)
    with pytest.raises(ShardTooLarge):
        _fetch(index, store, window=30)
    assert store.load() == []


@pytest.mark.parametrize("damage", ["not ours", "cut short"])
def test_a_damaged_page_and_those_after_it_are_fetched_again(
    store: PageStore, tmp_path: Path, damage: str
) -> None:
    index = Index(30)
    _fetch(index, store)
    if isinstance(store, LocalPageLog):  # the log ends inside its second record
        kept = store.load()
        store.clear()
        store.save(*kept[0])
        log = next((tmp_path / "lake" / PAGES).glob("*.log"))
        first_end = log.stat().st_size
        store.save(*kept[1])
        whole = log.read_bytes()
        tail = whole[first_end : first_end + (len(whole) - first_end) // 2]
        log.write_bytes(
            whole[:first_end] + (b'{"start": 10, "num' if damage == "not ours" else tail)
        )
    else:  # the second page's object is damaged
        target = sorted((tmp_path / "lake" / PAGES).rglob("*.zst"))[1]
        whole = target.read_bytes()
        target.write_bytes(b'{"start": 10, "num' if damage == "not ours" else whole[:-9])
    assert [start for start, _ in store.load()] == [0]
    index.requests.clear()
    fetched = _fetch(index, store)
    assert fetched.docs == index.docs and index.requests == [10, 20]
    # The pages fetched again are readable behind the repaired page, for the next resume.
    assert [start for start, _ in store.load()] == [0, 10, 20]


def test_only_a_contiguous_prefix_with_one_num_found_is_used() -> None:
    def page(start: int, num_found: int, n: int) -> StoredPage:
        return StoredPage(start, num_found, [{"id": str(start + i)} for i in range(n)])

    gap = [page(0, 30, 10), page(20, 30, 10)]
    assert [p.start for p in usable_prefix(gap, 100)] == [0]
    changed = [page(0, 30, 10), page(10, 31, 10)]
    assert [p.start for p in usable_prefix(changed, 100)] == [0]
    assert usable_prefix([page(0, 300, 10)], 100) == []  # no longer fits the window
    assert usable_prefix([page(10, 30, 10)], 100) == []


def test_sweep_keeps_pending_shards_pages_only(tmp_path: Path) -> None:
    lake = Lake.open(str(tmp_path / "lake"))
    body = b'{"numFound": 1, "docs": [{"id": "a"}]}'
    for slug in ("2019-01-02", "2019-01-03"):
        LocalPageLog(lake, slug).save(0, body)
        ObjectPageStore(lake, slug).save(0, body)
    assert sweep_page_stores(lake, {"2019-01-03"}) == 2
    assert lake.list_files(PAGES) == [
        f"{PAGES}/2019-01-03.log",
        f"{PAGES}/2019-01-03/0000000000.zst",
    ]


# ---- end to end: the real command, SIGKILLed ------------------------------------------
SIM = ("--records", "12000", *RANGE, "--max-window", "300", "--seed", "5", "--admin")


def _kept_pages(lake: Path) -> int:
    logs = list((lake / PAGES).glob("*.log")) if (lake / PAGES).exists() else []
    handle = Lake.open(str(lake))
    return sum(len(LocalPageLog(handle, p.name.removesuffix(".log")).load()) for p in logs)


def _wait_for_kept_pages(lake: Path, at_least: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _kept_pages(lake) < at_least:
        assert time.monotonic() < deadline, "no page was kept"
        time.sleep(0.02)


def test_kill_mid_shard_then_resume_reuses_the_kept_pages(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    # 300-row shards of 15 pages, one request in flight, slow enough to kill mid-shard.
    args = ("--rows", "20", "--concurrency", "1", "--rate", "40")
    with run_simulator_process(*SIM) as sim:
        clean = run_harvest(sim.url, str(tmp_path / "clean"), "--rows", "20")
        assert clean.returncode == 0, clean.stderr
        uninterrupted = sim.stats()["requests"]

        before = sim.stats()["requests"]
        proc = start_harvest(sim.url, out, *args)
        _wait_for_kept_pages(out, 5)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        resumed = run_harvest(sim.url, str(out), "--rows", "20")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "pages kept by the killed run reused" in resumed.stdout + resumed.stderr
        spent = sim.stats()["requests"] - before
        # Beyond an uninterrupted run: the page in flight at the kill, asked for again, the
        # resumed run's own preflight (the field list), and the count that proves the kept
        # pages still hold (no row of their shard changed since the plan).
        assert spent - uninterrupted <= 3, (spent, uninterrupted)
        assert_lake_equals_truth(Lake.open(str(out)), sim.truth())
        assert not (out / PAGES).exists() or not list((out / PAGES).rglob("*"))


@pytest.mark.parametrize("rows", ["20", "100"])
def test_index_changing_between_kill_and_resume_still_ends_equal_to_truth(
    tmp_path: Path, rows: str
) -> None:
    """Kept pages from before the index moved (rows deleted inside them, late rows added)
    are not used: numFound and unique ids cannot see a deletion offset by an addition, so
    the resumed run proves them by the shard's rows changed since the plan. At 100-row
    pages the old code kept a deleted row and skipped one the deletion shifted."""
    out = tmp_path / "lake"
    with run_simulator_process(*SIM) as sim:
        proc = start_harvest(sim.url, out, "--rows", rows, "--concurrency", "2", "--rate", "40")
        _wait_for_kept_pages(out, 8 if rows == "20" else 3)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        sim.mutate(reorder=True, late=150, delete=100, seed=4)
        resumed = run_harvest(sim.url, str(out), "--rows", rows)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert_lake_equals_truth(Lake.open(str(out)), sim.truth())
