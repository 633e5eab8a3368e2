"""The shard pipeline: fetch workers feed one writer; a shard is committed by its marker.

``concurrency`` workers take shards from a queue and fetch them page by page (the client's
limiter and semaphore keep the request rate and the in-flight count in bounds), keeping
each page in the sink's page store so a killed run resumes mid-shard. A fetched
shard goes to a small bounded queue; one writer decodes it, writes its Parquet files, its
quarantine file and finally its marker, off the event loop in a thread, so parsing and
writing never hold up the next request. The bounded queue is what keeps memory flat: at
most ``concurrency + 2`` shards of rows exist at once, whatever the size of the harvest.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from harvester.errors import RetriesExhausted, ShardTooLarge, ShardUnstable
from harvester.jobs.planner import Planner
from harvester.jobs.sink import Committed
from harvester.progress import Progress
from harvester.service.fetch import FetchedShard, PageSource, fetch_shard
from harvester.service.profile import Limits
from harvester.signals import to_thread_to_the_end
from harvester.storage.checkpoint import PageStore
from harvester.storage.shard import Shard

log = logging.getLogger("harvester.jobs.pipeline")


@dataclass
class PipelineTotals:
    """What one pipeline run did, for the run report."""

    shards_done: int = 0
    shards_failed: int = 0
    shards_split: int = 0
    rows_written: int = 0
    quarantined: int = 0
    pages: int = 0
    refetched_shards: int = 0
    reused_pages: int = 0
    unknown_fields: Counter[str] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)

    def merge(self, other: PipelineTotals) -> None:
        """Add another run's totals (refresh runs one pipeline per staging area)."""
        for name in (
            "shards_done",
            "shards_failed",
            "shards_split",
            "rows_written",
            "quarantined",
            "pages",
            "refetched_shards",
            "reused_pages",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.unknown_fields.update(other.unknown_fields)
        self.failures.update(other.failures)
        self.events.extend(other.events)


@dataclass(frozen=True)
class PipelineConfig:
    concurrency: int
    shard_attempts: int
    date_template: str
    limits: Limits  # shared and learned: page size, window, paging by key or offset
    # Rows changed since the plan's watermark (``fetch_shard``'s ``changed_scope``): what
    # proves a killed run's kept pages still hold before they are used. None: none kept.
    changed_scope: str | None = None


class ShardSink(Protocol):
    """Where finished shards go: ``sink.LakeSink`` over the lake itself (harvest) or over
    a staging area (refresh)."""

    def page_store(self, shard: Shard) -> PageStore: ...

    def commit(self, shard: Shard, fetched: FetchedShard) -> Committed: ...

    def record_split(self, shard: Shard, num_found: int, children: list[Shard]) -> None: ...

    def record_failure(self, shard: Shard, cause: str) -> None: ...


class ShardPipeline:
    """Runs a set of shards to completion: every one ends done, split or failed."""

    def __init__(
        self,
        source: PageSource,
        planner: Planner,
        sink: ShardSink,
        config: PipelineConfig,
        progress: Progress,
    ) -> None:
        self._source = source
        self._planner = planner
        self._sink = sink
        self._config = config
        self._progress = progress
        self.totals = PipelineTotals()

    async def run(self, shards: list[Shard]) -> PipelineTotals:
        work: asyncio.Queue[Shard] = asyncio.Queue()
        written: asyncio.Queue[tuple[Shard, FetchedShard] | None] = asyncio.Queue(
            maxsize=self._config.concurrency + 1
        )
        for shard in shards:
            work.put_nowait(shard)
        writer = asyncio.create_task(self._write_loop(written), name="writer")
        workers = [
            asyncio.create_task(self._fetch_loop(work, written), name=f"fetch-{i}")
            for i in range(self._config.concurrency)
        ]
        try:
            # Whichever ends first: all work done, or a worker/writer dying with a fatal error.
            joined = asyncio.create_task(work.join())
            done, _ = await asyncio.wait(
                [joined, writer, *workers], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not joined and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            await written.put(None)
            await writer
        finally:
            for task in [*workers, writer]:
                task.cancel()
            await asyncio.gather(*workers, writer, return_exceptions=True)
        return self.totals

    async def _fetch_loop(
        self, work: asyncio.Queue[Shard], written: asyncio.Queue[tuple[Shard, FetchedShard] | None]
    ) -> None:
        while True:
            shard = await work.get()
            try:
                await self._fetch_one(shard, work, written)
            finally:
                work.task_done()

    async def _fetch_one(
        self,
        shard: Shard,
        work: asyncio.Queue[Shard],
        written: asyncio.Queue[tuple[Shard, FetchedShard] | None],
    ) -> None:
        criteria = shard.criteria(self._config.date_template)
        try:
            try:
                fetched = await fetch_shard(
                    self._source,
                    criteria,
                    limits=self._config.limits,
                    attempts=self._config.shard_attempts,
                    store=self._sink.page_store(shard),
                    expected=shard.expected,
                    changed_scope=self._config.changed_scope,
                )
            except ShardTooLarge as exc:
                if shard.undated:
                    # Rows without a mail date cannot be split by date or id range further
                    # than the service allows; say so instead of looping.
                    raise ShardUnstable(
                        f"{exc.num_found} rows without a mail date exceed the paging window"
                    ) from None
                await self._split(shard, exc, work)
                return
        except (RetriesExhausted, ShardUnstable) as exc:
            cause = exc.cause if isinstance(exc, RetriesExhausted) else str(exc)
            await to_thread_to_the_end(self._sink.record_failure, shard, cause)
            self.totals.shards_failed += 1
            self.totals.failures[shard.key] = cause
            log.warning("shard %s failed: %s", shard.key, cause)
            self._progress.shard_finished(0, failed=True)
            return
        self.totals.pages += fetched.pages
        self.totals.reused_pages += fetched.reused_pages
        if fetched.attempts > 1:
            self.totals.refetched_shards += 1
            self.totals.events.extend(f"{shard.key}: {e}" for e in fetched.events)
        await written.put((shard, fetched))

    async def _split(self, shard: Shard, exc: ShardTooLarge, work: asyncio.Queue[Shard]) -> None:
        """Replace a shard that outgrew the window by its pieces, recorded by the sink."""
        children = await self._planner.refine(shard.with_expected(exc.num_found))
        await to_thread_to_the_end(self._sink.record_split, shard, exc.num_found, children)
        self.totals.shards_split += 1
        self.totals.events.append(f"{shard.key}: {exc}; split into {len(children)} shards")
        self._progress.add_shards(len(children) - 1)
        for child in children:
            work.put_nowait(child)

    async def _write_loop(self, written: asyncio.Queue[tuple[Shard, FetchedShard] | None]) -> None:
        while (item := await written.get()) is not None:
            shard, fetched = item
            await to_thread_to_the_end(self._commit, shard, fetched)

    def _commit(self, shard: Shard, fetched: FetchedShard) -> None:
        committed = self._sink.commit(shard, fetched)
        self.totals.shards_done += 1
        self.totals.rows_written += committed.rows
        self.totals.quarantined += committed.quarantined
        self.totals.unknown_fields.update(committed.unknown_fields)
        self._progress.shard_finished(committed.rows)
