"""What the committed lake is, and how a partition is replaced without losing a row.

During a harvest each data file is owned by the ``done`` marker of its shard, and
``LakeSink`` is the harvest's commit protocol: data files, quarantine, then the marker. Once
refresh or compact rewrites a partition, its manifest (``state.PartitionManifest``) names
that partition's files instead, and it wins over the markers. Any data file that
neither names is uncommitted: a leftover of a killed run, removed by ``sweep``.

Only files of the harvester's own naming scheme in its own partitions are ever deleted or
replaced (``is_own_file``, the one test); any other file in the lake is foreign: left
alone, and named by ``verify``. A new lake is only created where nothing lives yet
(``refuse_foreign_root``), so a harvest never shares a directory or prefix by accident.

Replacing a partition's files (refresh, reload, compact, repair: ``replace_files``) goes:
write the new files hidden under temp names, write the manifest naming their real names
(the commit point: one atomic put), publish them (a rename each locally, a server-side
copy each on S3), then delete the old files. A reader listing the directory between the
first publish and the last delete may see old and new files together, so rows of that
partition can appear twice (microseconds locally, a few requests on S3); a run killed
there leaves that state until the next run's ``sweep``. Readers that want a stable view
can read the manifest's file list.
"""

from __future__ import annotations

from collections import defaultdict

import pyarrow as pa
import pyarrow.parquet as pq

from harvester.errors import LakeError
from harvester.storage.datafile import SUFFIX as DATA_SUFFIX
from harvester.storage.datafile import is_data_file_name
from harvester.storage.partition import Partition
from harvester.storage.schema import ARROW_SCHEMA
from harvester.storage.state import LOCK, HarvestState, PartitionManifest, ShardMarker, StoredPlan
from harvester.storage.state import ROOT as STATE_ROOT
from harvester.storage.store import TEMP_MARK, Lake, is_temp_name
from harvester.storage.writer import HiddenFile


def committed_files(
    state: HarvestState, plan: StoredPlan, markers: dict[str, ShardMarker]
) -> dict[str, list[str]]:
    """Partition -> the data files that make up the committed lake."""
    files: dict[str, list[str]] = defaultdict(list)
    for leaf in state.leaves(plan, markers):
        marker = markers.get(leaf.key)
        if marker is not None and marker.done:
            for path in marker.files:
                files[Partition.of_file(path).path].append(path)
    files.update(state.load_manifests())
    return {p: sorted(f) for p, f in files.items() if f}


def is_own_data_file(path: str) -> bool:
    """True for a data file of the harvester's naming scheme in one of its partitions:
    ``year=YYYY/month=M/<name>`` with ``<name>`` one a ``DataFileName`` makes (committed or
    staged; a staged one never lies outside ``_harvest/``, but a name alone is ours)."""
    try:
        Partition.of_file(path)
    except ValueError:
        return False
    return is_data_file_name(path.rsplit("/", 1)[-1])


def is_own_file(path: str) -> bool:
    """The one test of "the harvester wrote this, so it may delete or replace it" (a path
    relative to the lake root): anything under ``_harvest/`` (``state``'s), its data files
    (``is_own_data_file``), and the temp files ``Lake.write_bytes`` makes of either. Every
    other file is foreign: never deleted, named by ``verify``."""
    if path.startswith(f"{STATE_ROOT}/"):
        return True
    directory, _, name = path.rpartition("/")
    if is_temp_name(name):
        name = name[1 : name.rindex(TEMP_MARK)]  # ".<name>.tmp-<uuid32>"
    return is_own_data_file(f"{directory}/{name}" if directory else name)


def refuse_foreign_root(lake: Lake) -> None:
    """A lake is declared by ``_harvest/lake.json``, written only where nothing else lives:
    LakeError when the root of a new lake (a directory, a prefix, or a whole bucket) holds
    any file besides a lock of ours (a run killed right after taking it)."""
    example = lake.example_file(skip={LOCK})
    if example is not None:
        raise LakeError(
            f"{lake.uri} already holds files that are not a harvester lake (e.g. {example}):"
            " harvest into an empty directory or a new prefix"
        )


def uncommitted_files(lake: Lake, committed: dict[str, list[str]]) -> list[str]:
    """Data files of ours (``is_own_data_file``) that nothing commits: leftovers of a killed
    run. Foreign files are never among them."""
    owned = {f for files in committed.values() for f in files}
    return [
        path
        for path in lake.list_files("", suffix=DATA_SUFFIX)
        if is_own_data_file(path) and path not in owned
    ]


def sweep(lake: Lake, committed: dict[str, list[str]]) -> int:
    """Finish a partition swap a killed run committed (``publish_committed``), then delete
    uncommitted data files and leftover temp files of ours (``is_own_file``); returns how
    many files it published or removed. Foreign files stay where they are."""
    listed = set(lake.list_files("", suffix=DATA_SUFFIX))
    published = publish_committed(lake, committed, listed)
    stale = uncommitted_files(lake, committed)
    for path in stale:
        lake.delete(path)
    return published + len(stale) + lake.cleanup_temp_files(is_own_file)


def replace_files(
    state: HarvestState,
    partition: str,
    committed: list[str],
    removed: list[str],
    hidden: list[HiddenFile],
) -> list[str]:
    """Swap some of a partition's files (a file-grain merge, ``rewrite.merge_files``; a
    compaction, ``rewrite.compact_files``): ``removed`` of its ``committed`` files for the
    ``hidden`` ones, every other committed file staying as it is, same path and bytes.

    The order keeps a reader's view of a mix shortest: the new files are already written
    hidden (the slow part: encoding, uploading), then the manifest naming the kept and the
    new files is the commit point, then they are published in one burst and the removed
    ones deleted. A reader can list old and new together only between the first publish and
    the last delete. A run killed after the commit and before every file is published
    leaves hidden files the manifest names: the next run's ``sweep`` publishes them first; a
    run killed before its last delete leaves old files that nothing commits, which the same
    sweep removes. The manifest is the stable view of the partition throughout: old files
    before the commit, kept + new after. Returns the partition's files as committed now."""
    lake = state.lake
    state.check_fence()
    written = [item.file.path for item in hidden]
    gone = set(removed)
    files = sorted({f for f in committed if f not in gone} | set(written))
    state.save_manifest(PartitionManifest(partition, files))
    for item in hidden:
        lake.publish(item.temp, item.file.path)
    for path in removed:
        if path not in files:  # (a repair's missing file is gone already: deleting is fine)
            lake.delete(path)
    return files


def publish_committed(lake: Lake, committed: dict[str, list[str]], listed: set[str]) -> int:
    """Publish the hidden files of a swap killed between its commit and its publishing
    (committed, not ``listed``, but written under a temp name beside their path); returns
    how many. A committed file with no such temp file stays missing: ``verify`` names it."""
    missing = {f for files in committed.values() for f in files} - listed
    if not missing:
        return 0
    temps: dict[str, str] = {}
    for temp in lake.temp_files():
        directory, _, name = temp.rpartition("/")
        target = name[1 : name.rindex(TEMP_MARK)]
        temps[f"{directory}/{target}" if directory else target] = temp
    published = 0
    for path in sorted(missing & temps.keys()):
        lake.publish(temps[path], path)
        published += 1
    return published


def read_files(lake: Lake, files: list[str], columns: list[str] | None = None) -> pa.Table:
    """The rows of the given data files as one table (ARROW_SCHEMA unless ``columns``)."""
    names = columns or list(ARROW_SCHEMA.names)
    schema = pa.schema([ARROW_SCHEMA.field(n) for n in names])
    tables = [
        pq.read_table(pa.BufferReader(data), columns=names).cast(schema)
        for data in lake.read_many(files)
    ]
    return pa.concat_tables(tables) if tables else schema.empty_table()
