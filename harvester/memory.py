"""Give freed pages back to the system between the phases of a command: the C heap's and
Arrow's allocator's.

A fetch phase parses pages of JSON into Python dicts of ~40 fields each; dicts that large
are allocated by the C library's ``malloc``, not by Python's small-object allocator, and
glibc keeps the pages of freed ones for reuse instead of returning them. Arrow allocates
through its own allocator (mimalloc), which cannot reuse those pages, so the merge that
follows a fetch stood on top of ~50 MB the fetch had already freed (``verify --repair``
of a million-row month: 380 MB peak RSS, 339 MB once trimmed between the phases).

Arrow's allocator keeps freed pages too, for reuse by the next allocation; that is what
it is for within a phase, but after one it held the phase's peak under the next one.
``MemoryPool.release_unused`` is Arrow's call to give them back.

``malloc_trim(0)`` is glibc's own call for the C heap (dask's workers make the same call for
the same reason). Elsewhere (musl, macOS, Windows) it does not exist and this is a no-op:
their allocators return memory on their own terms, and nothing here depends on it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

import pyarrow as pa


@functools.cache
def _trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def release_freed_memory() -> bool:
    """Return Arrow's and the C heap's free pages to the system; False where the C heap's
    cannot be. Costs a few milliseconds: called between phases, never per row."""
    pa.default_memory_pool().release_unused()
    trim = _trim()
    if trim is None:
        return False
    trim(0)
    return True
