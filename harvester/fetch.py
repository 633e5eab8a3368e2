"""Fetch one shard, page by page, and prove the pages add up.

The service has no documented sort, so offset paging walks the index order, which shifts
when the index is refreshed mid-shard: rows can be skipped or served twice. So a shard is
accepted only when its ids are unique, their number equals ``numFound``, and ``numFound``
did not change from the first page to the last. Otherwise the shard is fetched again, a
bounded number of times, and what happened is recorded.

Pages advance by the docs actually returned, never by the ``rows`` asked for: the service
may cap ``rows`` silently.

Each accepted page goes to the shard's ``PageStore`` (see ``checkpoint``), and a fetch
starts from the pages an earlier, killed run kept; the checks above cover kept and new
pages alike, so a resumed shard is held to the same proof as one fetched in one go.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from harvester.checkpoint import NoPageStore, PageStore, StoredPage, usable_prefix
from harvester.errors import ShardTooLarge, ShardUnstable


class PageLike(Protocol):
    @property
    def num_found(self) -> int: ...

    @property
    def docs(self) -> list[dict[str, Any]]: ...

    @property
    def body(self) -> bytes: ...


class PageSource(Protocol):
    async def search(self, criteria: str, start: int, rows: int) -> PageLike: ...

    def parse_page(self, body: bytes, start: int) -> PageLike:
        """A kept body read again; ``ValueError`` when it is not a whole page."""
        ...


@dataclass
class FetchedShard:
    docs: list[dict[str, Any]]
    num_found: int
    attempts: int
    pages: int
    events: list[str] = field(default_factory=list)
    reused_pages: int = 0  # pages kept by an earlier run, not asked for again


def _count_distinct(docs: list[dict[str, Any]]) -> int:
    """Distinct ids, counting each id-less doc once (they are quarantined later, not lost)."""
    ids = set()
    missing = 0
    for doc in docs:
        doc_id = doc.get("id")
        if isinstance(doc_id, str) and doc_id:
            ids.add(doc_id)
        else:
            missing += 1
    return len(ids) + missing


async def _keep(store: PageStore, start: int, page: PageLike) -> None:
    if store.inline:
        store.save(start, page.body)
    else:
        await asyncio.to_thread(store.save, start, page.body)


async def _load_kept(source: PageSource, store: PageStore, max_window: int) -> list[StoredPage]:
    """The pages an earlier run kept that a fetch can continue from."""
    pages = []
    for start, body in await asyncio.to_thread(store.load):
        try:
            page = source.parse_page(body, start)
        except ValueError:
            break
        pages.append(StoredPage(start, page.num_found, page.docs))
    return usable_prefix(pages, max_window)


@dataclass
class _Pass:
    """One pass over a shard."""

    docs: list[dict[str, Any]]
    num_found: int
    pages: int  # requests made
    reused: int  # kept pages started from
    problem: str | None


async def _fetch_once(
    source: PageSource,
    criteria: str,
    rows: int,
    max_window: int,
    store: PageStore,
    kept: list[StoredPage],
) -> _Pass:
    """One pass over the shard, continuing from ``kept`` pages when there are any."""
    docs = [doc for page in kept for doc in page.docs]
    pages = 0
    if kept:
        num_found = kept[0].num_found
    else:
        first = await source.search(criteria, 0, rows)
        pages = 1
        num_found = first.num_found
        if num_found > max_window:
            raise ShardTooLarge(num_found)
        docs = list(first.docs)
        if first.docs:  # an empty shard is committed at once: nothing worth keeping
            await _keep(store, 0, first)
    while len(docs) < num_found:
        start = len(docs)
        page = await source.search(criteria, start, min(rows, max_window - start))
        pages += 1
        if page.num_found != num_found:
            if page.num_found > max_window:
                raise ShardTooLarge(page.num_found)
            problem = f"numFound changed {num_found} -> {page.num_found}"
            return _Pass(docs, num_found, pages, len(kept), problem)
        if not page.docs:
            problem = f"empty page at start={start} of {num_found}"
            return _Pass(docs, num_found, pages, len(kept), problem)
        docs.extend(page.docs)
        await _keep(store, start, page)
    distinct = _count_distinct(docs)
    if len(docs) != num_found or distinct != num_found:
        problem = f"{distinct} distinct ids in {len(docs)} docs, numFound {num_found}"
        return _Pass(docs, num_found, pages, len(kept), problem)
    return _Pass(docs, num_found, pages, len(kept), None)


async def fetch_shard(
    source: PageSource,
    criteria: str,
    *,
    rows: int,
    max_window: int,
    attempts: int,
    store: PageStore | None = None,
) -> FetchedShard:
    """All docs of one shard, checked; raises ShardTooLarge or ShardUnstable.

    Pages kept in ``store`` by an earlier run are used first; the store is cleared before
    a shard is fetched again from scratch, and when the shard turns out to need a split.
    A shard that exhausts its retries keeps its pages: the next run continues from them.
    """
    pages_store: PageStore = store if store is not None else NoPageStore()
    kept = await _load_kept(source, pages_store, max_window)
    events: list[str] = []
    total_pages = 0
    reused = 0
    try:
        for attempt in range(1, attempts + 1):
            result = await _fetch_once(source, criteria, rows, max_window, pages_store, kept)
            total_pages += result.pages
            reused += result.reused
            if result.problem is None:
                return FetchedShard(
                    result.docs, result.num_found, attempt, total_pages, events, reused
                )
            resumed = f" (continued from {result.reused} kept pages)" if result.reused else ""
            events.append(f"attempt {attempt}: {result.problem}{resumed}; fetched again")
            kept = []
            await asyncio.to_thread(pages_store.clear)
    except ShardTooLarge:
        await asyncio.to_thread(pages_store.clear)
        raise
    raise ShardUnstable(f"index kept moving over {attempts} attempts ({events[-1]})")
