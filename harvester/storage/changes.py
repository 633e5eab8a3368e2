"""The change feed: the ids every refresh, reload and repair added, updated and deleted.

Each merge that changes a partition writes its ``MergeStats.changes`` (one row per id:
``id``, ``submissionDate``, ``createDateTime``, ``change``) to
``_harvest/changes/<run-id>/<YYYY-MM>-<step>.pq`` **before** the partition's new files are
committed. The name depends only on the run, the partition and the step, so a run killed
before its commit writes the same file again when it is resumed; a run killed after it
finds nothing left to change there and leaves the file as it is. So the feed of a run is
exactly what it changed, however often it was killed and resumed, and a run's report counts
its added, updated and deleted rows from its feed (``totals``).

The files are Parquet, but named ``.pq``: no ``**/*.parquet`` query of the lake reads them,
and Spark's discovery skips ``_harvest/``. ``harvester changes`` prints or exports them
(``ops.changes``); a downstream job can read them with DuckDB directly
(``docs/querying.md``). A run's feed is complete once its report says it ended: the runs
still in progress are left out by ``harvester changes``.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harvester.storage.schema import ARROW_SCHEMA
from harvester.storage.state import HarvestState

KINDS: Final = ("added", "updated", "deleted")
SCHEMA: Final = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("change", pa.string(), nullable=False),
        ARROW_SCHEMA.field("id"),
        ARROW_SCHEMA.field("submissionDate"),
        ARROW_SCHEMA.field("createDateTime"),
    ]
)


# Rows per row group of a feed file, and per copy the write makes: a reload's month is a
# million updated rows, and a sorted copy of it whole, with its run id a million times from
# a Python list, was a reload's peak (+155 MB over a 1 M-row feed of 40 pieces; sliced,
# +102 MB, most of it each take joining a column's pieces again; from a feed joined once by
# ``merge.join_feed``, ~+55 MB: the sort's positions, one slice and the writer's buffers).
_SLICE: Final = 131_072


def write(state: HarvestState, run_id: str, partition: str, step: str, changes: pa.Table) -> None:
    """Keep one merge's changes (nothing when it changed nothing: an earlier write of the
    same merge, before a kill, stands). The rows are written sorted by change and id, a
    row group at a time: the sort's positions and one slice of the rows are what it copies
    when ``changes`` has a chunk per column, as ``merge.join_feed`` leaves it (a take from a
    column of many chunks joins them all again for each slice)."""
    if changes.num_rows == 0:
        return
    columns = [name for name in SCHEMA.names if name != "run_id"]
    rows = changes.select(columns)
    order = pc.sort_indices(
        rows.select(["change", "id"]), sort_keys=[("change", "ascending"), ("id", "ascending")]
    )
    run = pa.scalar(run_id, pa.string())
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, SCHEMA, compression="zstd", coerce_timestamps="us") as writer:
        for start in range(0, len(order), _SLICE):
            piece = rows.take(order.slice(start, _SLICE))
            table = pa.table([pa.repeat(run, piece.num_rows), *piece.columns], schema=SCHEMA)
            writer.write_table(table, row_group_size=_SLICE)
    state.check_fence()
    state.lake.write_bytes(state.change_path(run_id, partition, step), sink.getvalue().to_pybytes())


def read(state: HarvestState, run_ids: list[str]) -> pa.Table:
    """The feed of the given runs, in run order (one table, ``SCHEMA``)."""
    files = [path for run_id in run_ids for path in state.change_files(run_id)]
    tables = [
        pq.read_table(pa.BufferReader(data)).cast(SCHEMA) for data in state.lake.read_many(files)
    ]
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


def runs(state: HarvestState) -> list[str]:
    """The run ids that have a feed, oldest first (run ids begin with their start time)."""
    return sorted({path.split("/")[2] for path in state.change_files()})


def totals(state: HarvestState, run_id: str) -> dict[str, int]:
    """Rows added, updated and deleted by one run, from its feed (the ``change`` column)."""
    out = dict.fromkeys(KINDS, 0)
    files = state.change_files(run_id)
    for data in state.lake.read_many(files):
        column = pq.read_table(pa.BufferReader(data), columns=["change"]).column("change")
        for item in pc.value_counts(column).to_pylist():
            out[str(item["values"])] = out.get(str(item["values"]), 0) + int(item["counts"])
    return out
