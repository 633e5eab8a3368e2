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
"""

from __future__ import annotations

import os

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
