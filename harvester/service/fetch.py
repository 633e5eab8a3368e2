"""Fetch one shard, page by page, and prove the pages add up.

Two ways to page, chosen by what the service was found to do (``service``):

- **by offset** (``start``, ``rows``): the index order, which shifts when the index is
  refreshed mid-shard, so rows can be skipped or served twice; and never past the paging
  window, so a shard must fit inside it;
- **by key**, when the service honours ``sort=id asc``: each page asks for the ids after the
  last one seen (``id:{last TO *]``, ``start`` always 0). No window applies and a row cannot
  be served twice; a page whose ids do not ascend means the service stopped honouring the
  sort: the run falls back to offsets.

The two are ``paging.OffsetPaging`` and ``paging.KeyPaging`` (one ``Paging`` interface:
the request for a page, a page's cursor and total, the window and whether a shard fits);
each pass over a shard picks one from the limits (``paging.paging_for``) and keeps it.

Either way a shard is accepted only when its ids are unique, their number equals
``numFound``, and ``numFound`` did not change from the first page to the last (by key, each
page's ``numFound`` counts what is left, so the shard's total is that plus what came
before). Otherwise the shard is fetched again, a bounded number of times, and what happened
is recorded. Pages advance by the docs actually returned, never by the ``rows`` asked for:
the service may cap ``rows`` silently (the run's page size then follows the cap).

What the service says about its own limits is learned here (``service.Limits``): a ``413``
halves the page size and asks for the same page again; a window error, or any error at
``start > 0`` for a query that answers at ``start = 0``, is the paging window: it is learned
and the shard is split to fit (``ShardTooLarge``) instead of failing.

Each accepted page goes to the shard's ``PageStore`` (see ``checkpoint``), and a fetch
starts from the pages an earlier, killed run kept; the checks above cover kept and new
pages alike, so a resumed shard is held to the same proof as one fetched in one go.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from typing import Any, Protocol

from harvester.errors import (
    ApiError,
    AuthError,
    QueryError,
    RetriesExhausted,
    ShardTooLarge,
    ShardUnstable,
)
from harvester.service.paging import Paging, paging_for
from harvester.service.profile import (
    Limits,
    is_payload_too_large,
    is_window_error,
    window_limit,
)
from harvester.storage.checkpoint import NoPageStore, PageStore, StoredPage, usable_prefix


class PageLike(Protocol):
    @property
    def num_found(self) -> int: ...

    @property
    def docs(self) -> list[dict[str, Any]]: ...

    @property
    def body(self) -> bytes: ...


class PageSource(Protocol):
    async def search(
        self, criteria: str, start: int, rows: int, sort: str | None = None
    ) -> PageLike: ...

    def parse_page(self, body: bytes, start: int) -> PageLike:
        """A kept body read again; ``ValueError`` when it is not a whole page."""
        ...


@dataclass(frozen=True)
class _Page:
    """A page with ``num_found`` as the shard's total (by key: what is left + ``start``)."""

    num_found: int
    docs: list[dict[str, Any]]
    body: bytes


def _total(page: PageLike, start: int, paging: Paging) -> _Page:
    return _Page(paging.total(page.num_found, start), page.docs, page.body)


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


async def _load_kept(source: PageSource, store: PageStore, limits: Limits) -> list[StoredPage]:
    """The pages an earlier run kept that a fetch can continue from."""
    paging = paging_for(limits)
    pages = []
    for start, body in await asyncio.to_thread(store.load):
        try:
            page = _total(source.parse_page(body, start), start, paging)
        except ValueError:
            break
        pages.append(StoredPage(start, page.num_found, page.docs))
    window = paging.window(limits)
    return usable_prefix(pages, sys.maxsize if window is None else window)


async def _ask(
    source: PageSource,
    criteria: str,
    start: int,
    limits: Limits,
    paging: Paging,
    cursor: str | None,
) -> _Page:
    """One page from ``start``, after ``cursor``, as ``paging`` asks for it; a 413 halves
    the page size and asks for the same page again."""
    while True:
        rows = limits.rows_at(start)
        ask = paging.request(criteria, start, cursor, rows)
        try:
            page = await source.search(ask.criteria, ask.start, ask.rows, sort=ask.sort)
            return _total(page, start, paging)
        except QueryError as exc:
            if is_payload_too_large(exc) and limits.shrink_page(rows, f"413 at rows={rows}"):
                continue
            raise


async def _page_past_start(
    source: PageSource, criteria: str, start: int, limits: Limits, paging: Paging
) -> _Page | None:
    """The page at ``start > 0`` of a windowed ``paging`` (by offset); None when the service
    refused it for its paging window, which is then learned (stated in a window error, else
    halved).

    An error without a stated window (a 5xx, an unexpected 4xx) is taken for the window only
    when the query still answers at ``start = 0`` and this page fails once more: an outage
    or a flaky moment is re-raised, or answered by the second try."""
    rows = limits.rows_at(start)
    try:
        return await _ask(source, criteria, start, limits, paging, None)
    except AuthError:
        raise
    except (ApiError, RetriesExhausted) as exc:
        stated = window_limit(exc) if is_window_error(exc) else None
        if stated is None:
            try:
                await source.search(criteria, 0, 1)
            except (ApiError, RetriesExhausted):
                raise exc from None
            try:
                return await _ask(source, criteria, start, limits, paging, None)
            except (ApiError, RetriesExhausted):
                pass
        # Without a stated number: halve what was asked, never below what already answered.
        window = stated if stated is not None else max(start, (start + rows) // 2)
        limits.learn_window(window, f"refused start={start} rows={rows}: {exc}"[:300])
        return None


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
    limits: Limits,
    store: PageStore,
    kept: list[StoredPage],
) -> _Pass:
    """One pass over the shard, continuing from ``kept`` pages when there are any. The
    pass pages one way from first page to last (``paging``, chosen here)."""
    docs = [doc for page in kept for doc in page.docs]
    pages = 0
    paging = paging_for(limits)
    if kept:
        num_found = kept[0].num_found
    else:
        try:
            first = await _ask(source, criteria, 0, limits, paging, None)
        except QueryError as exc:
            stated = window_limit(exc) if is_window_error(exc) else None
            if stated is None:
                raise
            limits.learn_window(stated, f"refused rows={limits.rows_at(0)}: {exc}"[:300])
            first = await _ask(source, criteria, 0, limits, paging, None)
        pages = 1
        num_found = first.num_found
        if not paging.fits(num_found, limits):
            raise ShardTooLarge(num_found)
        docs = list(first.docs)
        if first.docs:  # an empty shard is committed at once: nothing worth keeping
            await _keep(store, 0, first)
    while len(docs) < num_found:
        start = len(docs)
        cursor = paging.cursor(docs)
        if paging.window(limits) is None:
            page = await _ask(source, criteria, start, limits, paging, cursor)
        else:
            # Within a window, a refusal past start=0 may be the window itself.
            found = await _page_past_start(source, criteria, start, limits, paging)
            if found is None:  # a window was learned
                if not paging.fits(num_found, limits):
                    raise ShardTooLarge(num_found)
                continue
            page = found
        pages += 1
        if page.num_found != num_found:
            if not paging.fits(page.num_found, limits):
                raise ShardTooLarge(page.num_found)
            problem = f"numFound changed {num_found} -> {page.num_found}"
            return _Pass(docs, num_found, pages, len(kept), problem)
        if not page.docs:
            problem = f"empty page at start={start} of {num_found}"
            return _Pass(docs, num_found, pages, len(kept), problem)
        if not paging.in_order(cursor, page.docs):
            limits.stop_keyset("a page's ids did not ascend under sort=id asc")
            return _Pass(docs, num_found, pages, len(kept), "ids not in sort order")
        if len(page.docs) < min(limits.rows_at(start), num_found - start):
            limits.capped(len(page.docs), f"{len(page.docs)} docs served at start={start}")
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
    limits: Limits,
    attempts: int,
    store: PageStore | None = None,
    expected: int = -1,
    changed_scope: str | None = None,
) -> FetchedShard:
    """All docs of one shard, checked; raises ShardTooLarge or ShardUnstable.

    ``expected``: the shard's count when it was planned. A shard counted with rows that
    answers "no match" is asked once more before it is believed: a transient empty answer
    (a replica not loaded yet) must not empty a day that a refresh replaces whole.

    Pages kept in ``store`` by an earlier run are used first; the store is cleared before
    a shard is fetched again from scratch, and when the shard turns out to need a split.
    A shard that exhausts its retries keeps its pages: the next run continues from them.

    ``changed_scope``: rows changed since the kept pages could have been taken (the plan's
    watermark: ``createDateTime`` at or after it). Kept pages are a snapshot of an index
    that may have moved since (a kill, hours, a resume): a row deleted inside them and one
    added after them keep ``numFound`` and the ids unique, while the offsets shift and a
    row is skipped. Counts cannot see that; the stamps can, since an added or changed row
    is stamped anew. So before kept pages are used, the shard's rows in that scope are
    counted (one request): any, and the pages are thrown away and the shard fetched whole.
    A deletion alone shows as a changed ``numFound`` and is caught by the pass itself.
    Without a scope (no watermark known) kept pages are trusted: callers that cannot prove
    them keep none (``ShardRunner``).
    """
    pages_store: PageStore = store if store is not None else NoPageStore()
    kept = await _load_kept(source, pages_store, limits)
    events: list[str] = []
    total_pages = 0
    if kept and changed_scope is not None:
        total_pages += 1
        moved = (await source.search(f"({criteria}) AND {changed_scope}", 0, 1)).num_found
        if moved:
            events.append(f"{moved} rows changed since its pages were kept: kept pages dropped")
            kept = []
            await asyncio.to_thread(pages_store.clear)
    reused = 0
    doubted = expected <= 0  # an empty answer to a shard counted with rows: asked again
    try:
        for attempt in range(1, attempts + 1):
            result = await _fetch_once(source, criteria, limits, pages_store, kept)
            total_pages += result.pages
            reused += result.reused
            if (
                result.problem is None
                and result.num_found == 0
                and not doubted
                and attempt < attempts
            ):
                doubted = True
                events.append(f"attempt {attempt}: no match, counted {expected}; asked again")
                continue
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
