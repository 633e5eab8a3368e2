"""Fetch one shard, page by page, and prove the pages add up.

The service has no documented sort, so offset paging walks the index order, which shifts
when the index is refreshed mid-shard: rows can be skipped or served twice. So a shard is
accepted only when its ids are unique, their number equals ``numFound``, and ``numFound``
did not change from the first page to the last. Otherwise the shard is fetched again, a
bounded number of times, and what happened is recorded.

Pages advance by the docs actually returned, never by the ``rows`` asked for: the service
may cap ``rows`` silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from harvester.errors import HarvesterError


class PageLike(Protocol):
    @property
    def num_found(self) -> int: ...

    @property
    def docs(self) -> list[dict[str, Any]]: ...


class PageSource(Protocol):
    async def search(self, criteria: str, start: int, rows: int) -> PageLike: ...


class ShardTooLarge(Exception):
    """The shard's numFound no longer fits in the paging window: it must be split."""

    def __init__(self, num_found: int) -> None:
        super().__init__(f"numFound {num_found} exceeds the paging window")
        self.num_found = num_found


class ShardUnstable(HarvesterError):
    """Every attempt at the shard saw the index move under it."""


@dataclass
class FetchedShard:
    docs: list[dict[str, Any]]
    num_found: int
    attempts: int
    pages: int
    events: list[str] = field(default_factory=list)


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


async def _fetch_once(
    source: PageSource, criteria: str, rows: int, max_window: int
) -> tuple[list[dict[str, Any]], int, int, str | None]:
    """One pass over the shard: (docs, numFound, pages, problem or None)."""
    first = await source.search(criteria, 0, rows)
    num_found = first.num_found
    if num_found > max_window:
        raise ShardTooLarge(num_found)
    docs = list(first.docs)
    pages = 1
    while len(docs) < num_found:
        start = len(docs)
        page = await source.search(criteria, start, min(rows, max_window - start))
        pages += 1
        if page.num_found != num_found:
            if page.num_found > max_window:
                raise ShardTooLarge(page.num_found)
            return docs, num_found, pages, f"numFound changed {num_found} -> {page.num_found}"
        if not page.docs:
            return docs, num_found, pages, f"empty page at start={start} of {num_found}"
        docs.extend(page.docs)
    distinct = _count_distinct(docs)
    if len(docs) != num_found or distinct != num_found:
        return (
            docs,
            num_found,
            pages,
            f"{distinct} distinct ids in {len(docs)} docs, numFound {num_found}",
        )
    return docs, num_found, pages, None


async def fetch_shard(
    source: PageSource, criteria: str, *, rows: int, max_window: int, attempts: int
) -> FetchedShard:
    """All docs of one shard, checked; raises ShardTooLarge or ShardUnstable."""
    events: list[str] = []
    total_pages = 0
    for attempt in range(1, attempts + 1):
        docs, num_found, pages, problem = await _fetch_once(source, criteria, rows, max_window)
        total_pages += pages
        if problem is None:
            return FetchedShard(docs, num_found, attempt, total_pages, events)
        events.append(f"attempt {attempt}: {problem}; fetched again")
    raise ShardUnstable(f"index kept moving over {attempts} attempts ({events[-1]})")
