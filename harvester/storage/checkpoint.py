"""Page checkpoints: the pages of an unfinished shard, kept so a killed run resumes mid-shard.

A shard is committed whole (its marker vouches for its files), so without these a crash
loses every page of the shards in flight and of those fetched but not yet written: with
concurrency 2 and 10-page shards that is up to ~60 requests, at the API's rate a minute of
quota. Each accepted page is therefore kept as it arrives (the body as served, zstd-compressed
to about 1/14 of its size by pyarrow's codec, which runs outside the GIL) and dropped once
the shard's marker is written:

- on local disk, appended to one log per shard, ``<PAGES>/<slug>.log``: a file per
  page (create, rename, unlink: journaled metadata) cost an unthrottled harvest a fifth
  of its speed, an append costs one ``write``;
- on S3, which cannot append, one object per page, ``<PAGES>/<slug>/<start>.zst``,
  written from a thread (a PUT is a network round trip).

A resumed fetch starts from the kept pages and asks only for the rest.
``page_checkpoints = false`` turns this off.

Kept pages are a cache, never a source of truth: the shard's checks (unique ids equal
``numFound``, ``numFound`` stable) run over kept and new pages together, exactly as over a
shard fetched in one go, and a shard that fails them is fetched again from its first page.
That is also why the local log skips fsync: a record damaged by a power cut reads as
garbage; it and the records after it are fetched again, which costs only those requests.
"""

from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from harvester.storage.state import PAGES
from harvester.storage.store import Lake

SUFFIX = ".zst"
LOG_SUFFIX = ".log"


@dataclass(frozen=True)
class StoredPage:
    """A kept page, read again: where it started, the ``numFound`` it came with, its docs."""

    start: int
    num_found: int
    docs: list[dict[str, Any]]


class PageStore(Protocol):
    """Keeps the accepted page bodies of one shard, by start. Calls block; ``inline`` says
    whether ``save`` is cheap enough to call on the event loop (a local disk) or belongs
    in a thread (S3)."""

    @property
    def inline(self) -> bool: ...

    def load(self) -> list[tuple[int, bytes]]: ...

    def save(self, start: int, body: bytes) -> None: ...

    def clear(self) -> None: ...


def page_store(lake: Lake, slug: str) -> PageStore:
    """The page store for one shard of ``lake``, as its backend keeps them (a log on local
    disk, objects on S3: ``Lake.page_store``)."""
    return lake.page_store(slug)


class LocalPageLog:
    """The pages of one shard appended to ``<PAGES>/<slug>.log``; each record is a
    header (tag, start, size, compressed size) and the compressed body.

    Appends and truncates go to the file itself, not through ``Lake.write_bytes`` (which
    rewrites a whole file), so each change checks the lake's fence first, as the lake's
    own writes do: a run that lost its lock changes no log either."""

    inline = True  # an append of a few KB costs less than a hand-off to a thread

    def __init__(self, lake: Lake, slug: str) -> None:
        root = lake.local_path
        if root is None:
            raise ValueError(f"a page log is kept on local disk, not in {lake.uri}")
        self._lake = lake
        self._directory = os.path.join(root, *PAGES.split("/"))
        self._path = os.path.join(self._directory, slug + LOG_SUFFIX)
        self._ready = False

    def load(self) -> list[tuple[int, bytes]]:
        """The kept bodies in order, up to the first record that cannot be read (the tail
        of a write a crash cut short)."""
        try:
            with open(self._path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return []
        out = []
        offset = 0
        while offset + _RECORD_HEAD.size <= len(raw):
            tag, start, size, packed = _RECORD_HEAD.unpack_from(raw, offset)
            end = offset + _RECORD_HEAD.size + packed
            if tag != _MAGIC or end > len(raw) or not 0 < size <= _MAX_PAGE:
                break
            try:
                body = _unpack(raw[offset + _RECORD_HEAD.size : end], size)
            except (pa.ArrowException, OSError, ValueError):
                break
            out.append((start, body))
            offset = end
        if offset < len(raw):
            # Cut the unreadable tail, so the pages a resumed fetch appends are read again
            # after another crash instead of hiding behind it.
            self._lake.check_fence()
            os.truncate(self._path, offset)
        return out

    def save(self, start: int, body: bytes) -> None:
        self._lake.check_fence()
        if not self._ready:
            os.makedirs(self._directory, exist_ok=True)
            self._ready = True
        packed = _pack(body)
        with open(self._path, "ab") as handle:
            handle.write(_RECORD_HEAD.pack(_MAGIC, start, len(body), len(packed)) + packed)

    def clear(self) -> None:
        self._lake.check_fence()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)


class ObjectPageStore:
    """The pages of one shard as objects ``<PAGES>/<slug>/<start>.zst`` (S3), written and
    deleted through the lake (and so behind its fence)."""

    inline = False  # a PUT is a network round trip: not on the event loop

    def __init__(self, lake: Lake, slug: str) -> None:
        self._lake = lake
        self._directory = f"{PAGES}/{slug}"

    def load(self) -> list[tuple[int, bytes]]:
        """The kept bodies by start, up to the first that cannot be read (a torn write)."""
        paths = self._lake.list_files(self._directory, suffix=SUFFIX)
        out = []
        for path, raw in zip(paths, self._lake.read_many(paths), strict=True):
            try:
                start = int(path.rsplit("/", 1)[-1].removesuffix(SUFFIX))
                out.append((start, _decompress(raw)))
            except (pa.ArrowException, OSError, ValueError):
                break
        return out

    def save(self, start: int, body: bytes) -> None:
        path = f"{self._directory}/{start:010d}{SUFFIX}"
        self._lake.write_bytes(path, _compress(body))

    def clear(self) -> None:
        for path in self._lake.list_files(self._directory):
            self._lake.delete(path)
        self._lake.remove_empty_dirs(self._directory)


_MAGIC = b"hvpage1\0"
_RECORD_HEAD = struct.Struct("<8sQQQ")  # tag, start, size, compressed size
_MAX_PAGE = 1 << 30  # no page of JSON comes near this; a larger size means damage


def _pack(body: bytes) -> bytes:
    packed: bytes = pa.compress(body, codec="zstd", asbytes=True)
    return packed


def _unpack(packed: bytes, size: int) -> bytes:
    body: bytes = pa.decompress(packed, decompressed_size=size, codec="zstd", asbytes=True)
    return body


def _compress(body: bytes) -> bytes:
    """One object: the same header as a log record (start unused), then the zstd frame."""
    packed = _pack(body)
    return _RECORD_HEAD.pack(_MAGIC, 0, len(body), len(packed)) + packed


def _decompress(raw: bytes) -> bytes:
    if len(raw) < _RECORD_HEAD.size:
        raise ValueError("not a kept page")
    tag, _, size, packed = _RECORD_HEAD.unpack_from(raw)
    if tag != _MAGIC or len(raw) != _RECORD_HEAD.size + packed or not 0 < size <= _MAX_PAGE:
        raise ValueError("not a kept page")
    return _unpack(raw[_RECORD_HEAD.size :], size)


class NoPageStore:
    """Keeps nothing: page checkpoints turned off, or a caller that does not resume."""

    inline = True

    def load(self) -> list[tuple[int, bytes]]:
        return []

    def save(self, start: int, body: bytes) -> None:
        pass

    def clear(self) -> None:
        pass


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
    for path in lake.list_files(PAGES):
        slug = path[len(PAGES) + 1 :].split("/", 1)[0].removesuffix(LOG_SUFFIX)
        if slug not in keep:
            lake.delete(path)
            removed += 1
    if removed:
        lake.remove_empty_dirs(PAGES)
    return removed
