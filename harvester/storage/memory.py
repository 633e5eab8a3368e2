"""Which allocator Arrow's buffers come from, and why it is not the default.

pyarrow allocates from mimalloc by default, which keeps the pages a burst of allocation
touched: a partition merge's peak RSS was about twice the Arrow memory live at that moment
(410 MB against ~170 MB on a 900,000-row month, ``bench/merge_rss.py``), because each
group's transient tables leave pages behind that the next group does not reuse. jemalloc
with its decay at 0 gives freed pages back at once: the same merge peaked at 311 MB, at
the same CPU within the noise of one run (docs/benchmarks.md, "One partition's steps").

``use_returning_allocator`` is called once per process by the CLI (and by the benchmark's
merge children, which measure what the CLI does). A user who set
``ARROW_DEFAULT_MEMORY_POOL`` keeps their choice; a pyarrow built without jemalloc (the
Windows wheels) keeps its default.

``release_freed_memory`` is the other half, for the C heap: a fetch phase parses pages of
JSON into Python dicts of ~40 fields each; dicts that large come from the C library's
``malloc``, not Python's small-object allocator, and glibc keeps the pages of freed ones
for reuse instead of returning them. Arrow's jemalloc cannot reuse those pages, so the
merge after a fetch stood on top of ~50 MB the fetch had already freed (``verify
--repair`` of a million-row month, each step its own process: 412 MB peak RSS before this
and the leaner bookkeeping of ``rewrite``, ~310 MB after; ``make bench-month``).
``malloc_trim(0)`` is glibc's own call for it (dask's workers make the same call for the
same reason); elsewhere (musl, macOS, Windows) it does not exist and the call is a no-op.
Arrow's pool is asked to release too: a no-op for jemalloc at decay 0, not for a pool a
user chose.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable

import pyarrow as pa


def use_returning_allocator() -> str:
    """Make jemalloc, returning freed pages at once, Arrow's default pool; returns the
    backend in use afterwards."""
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        try:
            pool = pa.jemalloc_memory_pool()
        except NotImplementedError:  # built without jemalloc
            return str(pa.default_memory_pool().backend_name)
        pa.set_memory_pool(pool)
        pa.jemalloc_set_decay_ms(0)
    return str(pa.default_memory_pool().backend_name)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def release_freed_memory() -> bool:
    """Return the C heap's (and Arrow's pool's) free pages to the system between the
    phases of a command; False where the C heap's cannot be. A few milliseconds: called
    between phases, never per row."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
