"""One finished shard into its state: decode the fetched pages, write the Parquet files,
quarantine the rows that do not fit, then the marker (the commit point). The pipeline's
``ShardSink``; the harvest runs one over the lake, a refresh one per staging area.

It sits above the service (it decodes what ``fetch`` returned) and the lake (it writes
through ``writer``, ``quarantine`` and ``state``), which is why it is a job's part and
neither side's."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from harvester.service.decode import decode_docs
from harvester.service.fetch import FetchedShard
from harvester.storage import quarantine
from harvester.storage.checkpoint import NoPageStore, PageStore, page_store
from harvester.storage.datafile import DataFileName
from harvester.storage.shard import Shard
from harvester.storage.state import HarvestState, ShardMarker
from harvester.storage.writer import write_shard


@dataclass
class Committed:
    """What committing one shard produced."""

    rows: int
    quarantined: int
    unknown_fields: Counter[str]


def max_create_of(table: pa.Table) -> str | None:
    if table.num_rows == 0:
        return None
    value = pc.max(table.column("createDateTime")).as_py()
    return value.isoformat() if value is not None else None


class LakeSink:
    """The harvest's commit protocol (a ``pipeline.ShardSink``): Parquet files into the
    partitions, quarantine, then the marker. A refresh uses one per staging area."""

    def __init__(self, state: HarvestState, *, page_checkpoints: bool = True) -> None:
        self._state = state
        self._page_checkpoints = page_checkpoints

    def page_store(self, shard: Shard) -> PageStore:
        if not self._page_checkpoints:
            return NoPageStore()
        return page_store(self._state.lake, shard.slug)

    def commit(self, shard: Shard, fetched: FetchedShard) -> Committed:
        result = decode_docs(fetched.docs, source=shard.key)
        # Fenced here (no data files) and again by the marker's write (no commit record).
        self._state.check_fence()
        name = DataFileName.of_shard(shard, staged=self._state.staged).name
        files = write_shard(self._state.lake, name, result.table)
        quarantine.write(self._state, shard, [q.to_json() for q in result.quarantined])
        marker = ShardMarker(
            shard.key,
            "done",
            rows=result.table.num_rows,
            num_found=fetched.num_found,
            quarantined=len(result.quarantined),
            files=[f.path for f in files],
            attempts=fetched.attempts,
            events=fetched.events,
            max_create=max_create_of(result.table),
        )
        # The marker is the commit point: written only once the files are complete.
        self._state.save_marker(shard, marker)
        self.page_store(shard).clear()  # a crash before this leaves them to the next sweep
        return Committed(result.table.num_rows, len(result.quarantined), result.unknown_fields)

    def record_split(self, shard: Shard, num_found: int, children: list[Shard]) -> None:
        previous = self._state.load_marker(shard)
        marker = ShardMarker(
            shard.key, "split", num_found=num_found, children=[c.to_json() for c in children]
        )
        self._state.save_marker(shard, marker)
        # Files of an earlier, smaller version of this shard are no longer owned by any
        # marker; drop them now (a crash here leaves them to the next run's sweep).
        if previous is not None:
            for path in previous.files:
                self._state.lake.delete(path)

    def record_failure(self, shard: Shard, cause: str) -> None:
        self._state.save_marker(shard, ShardMarker(shard.key, "failed", cause=cause))
