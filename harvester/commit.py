"""What the committed lake is, and how a partition is replaced without losing a row.

During a harvest each data file is owned by the ``done`` marker of its shard. Once refresh
or compact rewrites a partition, a manifest (``_harvest/partitions/<partition>.json``)
names that partition's files instead, and it wins over the markers. Any data file that
neither names is uncommitted: a leftover of a killed run, removed by ``sweep``.

Replacing a partition (refresh, compact) goes: write the new files under new names, write
the manifest (the commit point: one atomic put), then delete the old files. A reader
listing the directory in that short window may see old and new files together, so rows
of that partition can appear twice until the old files are gone (milliseconds locally, a
few DELETE calls on S3); a killed run leaves that state until the next run's sweep.
Readers that want a stable view can read the manifest's file list.
"""

from __future__ import annotations

import re
from collections import defaultdict

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from harvester.lake import Lake
from harvester.schema import ARROW_SCHEMA
from harvester.state import ROOT, HarvestState, ShardMarker, StoredPlan, utc_now

MANIFESTS = f"{ROOT}/partitions"
_PARTITION = re.compile(r"^(year=\d{4}/month=(?:[1-9]|1[0-2]))/[^/]+\.parquet$")


def partition_of_path(path: str) -> str:
    match = _PARTITION.match(path)
    if match is None:
        raise ValueError(f"not a data file path: {path}")
    return match[1]


def manifest_path(partition: str) -> str:
    return f"{MANIFESTS}/{partition.replace('/', '_')}.json"


def load_manifests(lake: Lake) -> dict[str, list[str]]:
    paths = lake.list_files(MANIFESTS, suffix=".json")
    out: dict[str, list[str]] = {}
    for raw in lake.read_many(paths):
        data = orjson.loads(raw)
        out[data["partition"]] = list(data["files"])
    return out


def committed_files(
    state: HarvestState, plan: StoredPlan, markers: dict[str, ShardMarker]
) -> dict[str, list[str]]:
    """Partition -> the data files that make up the committed lake."""
    files: dict[str, list[str]] = defaultdict(list)
    for leaf in state.leaves(plan, markers):
        marker = markers.get(leaf.key)
        if marker is not None and marker.status == "done":
            for path in marker.files:
                files[partition_of_path(path)].append(path)
    files.update(load_manifests(state.lake))
    return {p: sorted(f) for p, f in files.items() if f}


def uncommitted_files(lake: Lake, committed: dict[str, list[str]]) -> list[str]:
    owned = {f for files in committed.values() for f in files}
    return [
        path
        for path in lake.list_files("", suffix=".parquet")
        if not path.startswith(("_", ".")) and path not in owned
    ]


def sweep(lake: Lake, committed: dict[str, list[str]]) -> int:
    """Delete uncommitted data files and leftover temp files; returns how many."""
    stale = uncommitted_files(lake, committed)
    for path in stale:
        lake.delete(path)
    return len(stale) + lake.cleanup_temp_files()


def replace_partition(
    lake: Lake, partition: str, old_files: list[str], table: pa.Table, name_prefix: str
) -> list[str]:
    """New files first, then the manifest (commit), then the old files go."""
    from harvester.writer import write_partition_files

    written = [w.path for w in write_partition_files(lake, partition, table, name_prefix)]
    manifest = {"partition": partition, "files": sorted(written), "written_at": utc_now()}
    lake.write_bytes(manifest_path(partition), orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    for path in old_files:
        if path not in written:
            lake.delete(path)
    return written


def read_files(lake: Lake, files: list[str], columns: list[str] | None = None) -> pa.Table:
    """The rows of the given data files as one table (ARROW_SCHEMA unless ``columns``)."""
    names = columns or list(ARROW_SCHEMA.names)
    schema = pa.schema([ARROW_SCHEMA.field(n) for n in names])
    tables = [
        pq.read_table(pa.BufferReader(data), columns=names).cast(schema)
        for data in lake.read_many(files)
    ]
    return pa.concat_tables(tables) if tables else schema.empty_table()
