"""Duplicate ids across a whole lake, in memory of a sixteenth of its ids, not all of them.

A lake of ~87M rows holds ~2.8 GB of ids: too many to keep in a set. Each id becomes a
64-bit key (its first 16 hex digits; a hash for ids that are not 32-hex), tagged with the
number of the file it came from, and is spilled to one of 16 bucket files on local temp
disk (12 bytes a row) by its key's top 4 bits. Each bucket then fits in memory on its own
(~5M keys of ~87M, ~130 MB to sort), and a sort finds the keys seen more than once. Those are
only candidates (two distinct ids may share a prefix, ~1e-4 chance in the whole lake), so
the caller confirms them by reading the ids of the few files involved.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from types import TracebackType

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

BUCKET_BITS = 4
_HEX32 = "^[0-9a-fA-F]{32}$"
_SCHEMA = pa.schema([("key", pa.uint64()), ("file", pa.uint32())])


def id_keys(ids: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The 64-bit key of each (non-null) id, in order."""
    flat = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    if len(flat) == 0:
        return pa.array([], pa.uint64())
    if pc.all(pc.match_substring_regex(flat, _HEX32)).as_py():
        # The fast path, all in C: join the 16-digit prefixes and parse them as hex at once.
        prefixes = pc.utf8_slice_codeunits(flat, 0, 16)
        joined = pc.binary_join(pa.ListArray.from_arrays([0, len(prefixes)], prefixes), "")
        raw = bytes.fromhex(joined[0].as_py())
    else:
        raw = b"".join(
            hashlib.blake2b(str(i).encode("utf-8", "surrogatepass"), digest_size=8).digest()
            for i in flat.to_pylist()
        )
    return pa.Array.from_buffers(pa.uint64(), len(flat), [None, pa.py_buffer(raw)])


class DuplicateFinder:
    """Feed ``add(file_number, ids)`` for every file; ``candidates()`` gives the keys seen
    more than once, each with the numbers of the files it was seen in."""

    def __init__(self, directory: str | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="harvester-dupes-", dir=directory)
        self._paths = [
            os.path.join(self._dir.name, f"bucket-{b}.arrow") for b in range(1 << BUCKET_BITS)
        ]
        self._writers = [ipc.new_stream(path, _SCHEMA) for path in self._paths]

    def __enter__(self) -> DuplicateFinder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers = []
        self._dir.cleanup()

    def add(self, file_number: int, ids: pa.Array | pa.ChunkedArray) -> None:
        keys = id_keys(ids.drop_null())
        if len(keys) == 0:
            return
        files = pa.repeat(pa.scalar(file_number, pa.uint32()), len(keys))
        buckets = pc.shift_right(keys, pa.scalar(64 - BUCKET_BITS, pa.uint64()))
        batch = pa.record_batch([keys, files], schema=_SCHEMA)
        for number, writer in enumerate(self._writers):
            part = batch.filter(pc.equal(buckets, pa.scalar(number, pa.uint64())))
            if part.num_rows:
                writer.write_batch(part)

    def candidates(self) -> dict[int, list[int]]:
        """Key -> file numbers it was seen in (a number twice: twice in that file)."""
        for writer in self._writers:
            writer.close()
        self._writers = []
        found: dict[int, list[int]] = {}
        for path in self._paths:
            with pa.memory_map(path) as source:
                table = ipc.open_stream(source).read_all()
            if table.num_rows == 0:
                continue
            repeated = _repeated(table.column("key"))
            if len(repeated) == 0:
                continue
            hits = table.filter(pc.is_in(table.column("key"), value_set=repeated))
            for key, file_number in zip(
                hits.column("key").to_pylist(), hits.column("file").to_pylist(), strict=True
            ):
                found.setdefault(key, []).append(file_number)
        return found


def _repeated(keys: pa.ChunkedArray) -> pa.Array:
    """The keys that occur more than once, by sorting (neighbours equal), not hashing: a
    ``group_by`` over a bucket of a 10 M-row lake (625,000 keys) peaked at ~170 MiB above
    the finder's own, and a bucket grows with the lake; a sort of uint64 keys holds about
    two copies of the column."""
    flat = keys.combine_chunks()
    if len(flat) < 2:
        return pa.array([], pa.uint64())
    ordered = pc.sort_indices(flat)
    sorted_keys = flat.take(ordered)
    del ordered
    same = pc.equal(sorted_keys.slice(1), sorted_keys.slice(0, len(sorted_keys) - 1))
    return pc.unique(sorted_keys.slice(1).filter(same))
