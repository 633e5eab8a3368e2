"""What the ops commands share: opening an existing lake, its committed files, file footers.

Footers are read through the lake's filesystem with ranged reads, never whole files: on S3
a lake of ~87M rows holds thousands of files of up to ~100 MB, and these commands only need
row counts, schemas or two columns of each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from harvester.config import Settings
from harvester.errors import LakeError
from harvester.storage.commit import committed_files
from harvester.storage.state import HarvestState, ShardMarker, StoredPlan
from harvester.storage.store import Lake, open_lake

T = TypeVar("T")
R = TypeVar("R")


def open_state(settings: Settings) -> HarvestState:
    """The state of an existing lake; LakeError if ``settings.out`` holds no harvester lake.

    Only reads: a mistyped ``--out`` must not leave an empty directory or prefix behind.
    """
    state = HarvestState(open_lake(settings))
    state.require_lake()
    return state


@dataclass
class CommittedLake:
    """The harvest's plan and markers, and the data files they (and manifests) commit."""

    plan: StoredPlan
    markers: dict[str, ShardMarker]
    files: dict[str, list[str]]  # partition -> committed data files


def load_committed(state: HarvestState) -> CommittedLake:
    plan = state.load_plan()
    if plan is None:
        raise LakeError(f"{state.lake.uri} holds no harvest plan: run `harvester harvest` first")
    markers = state.load_markers()
    return CommittedLake(plan, markers, committed_files(state, plan, markers))


def require_quiet_lake(state: HarvestState, command: str) -> None:
    """Refuse to rewrite a lake whose harvest is unfinished or whose refresh was interrupted.

    A partition manifest overrides the shard markers, so files a resumed harvest adds to a
    rewritten partition would count as uncommitted and be swept; and an interrupted refresh
    holds half-merged staging that a rewrite would race with.
    """
    if state.load_complete() is None:
        raise LakeError(
            f"{state.lake.uri}: the harvest is not complete; run `harvester harvest` again to"
            f" finish it before `harvester {command}`"
        )
    if state.refresh_interrupted():
        raise LakeError(
            f"{state.lake.uri}: a refresh was interrupted; run `harvester refresh` to finish it"
            f" before `harvester {command}`"
        )


def is_visible(path: str) -> bool:
    """What DuckDB globs and Spark partition discovery read: no part starts with _ or ."""
    return not any(part.startswith(("_", ".")) for part in path.split("/"))


def parallel_map(lake: Lake, func: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``func`` over ``items`` in order; threaded on S3, where each call waits on the network."""
    listed = list(items)
    if lake.is_local or len(listed) < 2:
        return [func(item) for item in listed]
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(func, listed))


@contextmanager
def parquet_file(lake: Lake, path: str) -> Iterator[pq.ParquetFile]:
    """A Parquet file opened for ranged reads (footer first, then only the columns asked)."""
    with lake.fs.open(lake.full_path(path), "rb") as handle:
        yield pq.ParquetFile(handle)


def footer(lake: Lake, path: str) -> tuple[int, pa.Schema]:
    """(rows, Arrow schema) of one data file, from its footer alone."""
    with parquet_file(lake, path) as parquet:
        return parquet.metadata.num_rows, parquet.schema_arrow


def file_rows(lake: Lake, paths: Iterable[str]) -> dict[str, int]:
    listed = list(paths)
    rows = parallel_map(lake, lambda p: footer(lake, p)[0], listed)
    return dict(zip(listed, rows, strict=True))


def service_lines(service: dict[str, Any] | None) -> list[str]:
    """How ``plan`` and ``status`` show what the service was found to do."""
    if not service:
        return ["service: not probed yet (the first harvest, refresh or plan probes it)"]
    window = service.get("window")
    where = "probed now" if service.get("probed_now") else f"probed {service.get('probed_at')}"
    lines = [
        f"service ({where}): pages of {service.get('page_size')} rows,"
        f" paging window {window if window else 'none met'},"
        f" sort {service.get('sort')} (paging {service.get('paging')})",
        f"service: date form {service.get('date_template')} (proven on a real row),"
        f" createDateTime bounds as {service.get('stamp_form')}",
    ]
    lines.extend(f"service learned: {event}" for event in service.get("learned") or [])
    return lines
