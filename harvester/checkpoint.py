"""Page checkpoints: the pages of an unfinished shard, kept so a killed run resumes mid-shard.

A shard is committed whole (its marker vouches for its files), so without these a crash
loses every page of the shards in flight and of those fetched but not yet written: with
concurrency 2 and 10-page shards that is up to ~60 requests, at the API's rate a minute of
quota. Each accepted page is therefore kept as it arrives, under
``_harvest/pages/<shard slug>/<start>.json``, and dropped once the shard's marker is
written. A resumed fetch starts from the kept pages and asks only for the rest.

Kept pages are a cache, never a source of truth: the shard's checks (unique ids equal
``numFound``, ``numFound`` stable) run over kept and new pages together, exactly as over a
shard fetched in one go, and a shard that fails them is fetched again from its first page.
That is also why the writes skip fsync: a page damaged by a power cut reads as garbage,
which discards the kept pages, and costs only the requests to fetch them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from harvester.lake import Lake

PAGES_ROOT = "_harvest/pages"


@dataclass(frozen=True)
class StoredPage:
    """One accepted page of a shard: where it started, the ``numFound`` it came with."""

    start: int
    num_found: int
    docs: list[dict[str, Any]]


class PageStore(Protocol):
    """Keeps the accepted pages of one shard. Calls block: run them off the event loop."""

    def load(self) -> list[StoredPage]: ...

    def save(self, page: StoredPage) -> None: ...

    def clear(self) -> None: ...


class LakePageStore:
    """The pages of one shard, as files under ``_harvest/pages/<slug>/`` in the lake."""

    def __init__(self, lake: Lake, slug: str) -> None:
        self._lake = lake
        self._directory = f"{PAGES_ROOT}/{slug}"

    def load(self) -> list[StoredPage]:
        """The kept pages by start; nothing at all if any of them cannot be read."""
        paths = self._lake.list_files(self._directory, suffix=".json")
        pages = []
        for raw in self._lake.read_many(paths):
            try:
                data = orjson.loads(raw)
                page = StoredPage(int(data["start"]), int(data["numFound"]), list(data["docs"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                return []
            if not all(isinstance(doc, dict) for doc in page.docs):
                return []
            pages.append(page)
        return sorted(pages, key=lambda p: p.start)

    def save(self, page: StoredPage) -> None:
        data = {"start": page.start, "numFound": page.num_found, "docs": page.docs}
        path = f"{self._directory}/{page.start:010d}.json"
        self._lake.write_bytes(path, orjson.dumps(data), durable=False)

    def clear(self) -> None:
        for path in self._lake.list_files(self._directory):
            self._lake.delete(path)
        self._lake.remove_empty_dirs(self._directory)


def usable_prefix(pages: list[StoredPage], max_window: int) -> list[StoredPage]:
    """The kept pages a fetch can continue from: contiguous from start 0, all with the same
    ``numFound`` (within the window). Anything after a gap or a change is fetched again."""
    out: list[StoredPage] = []
    offset = 0
    for page in pages:
        if page.start != offset or not page.docs:
            break
        if page.num_found > max_window or (out and page.num_found != out[0].num_found):
            break
        out.append(page)
        offset += len(page.docs)
    return out


def sweep_page_stores(lake: Lake, keep: set[str]) -> int:
    """Remove kept pages of shards not in ``keep`` (slugs): shards committed or split by a
    run killed before it could drop them. Returns how many files went."""
    removed = 0
    for path in lake.list_files(PAGES_ROOT):
        slug = path[len(PAGES_ROOT) + 1 :].split("/", 1)[0]
        if slug not in keep:
            lake.delete(path)
            removed += 1
    if removed:
        lake.remove_empty_dirs(PAGES_ROOT)
    return removed
