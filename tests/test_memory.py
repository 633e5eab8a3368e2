"""The allocator choices of ``storage.memory``: Arrow on jemalloc giving pages back, and the
C heap's freed pages returned between a command's phases."""

from __future__ import annotations

import platform

import pyarrow as pa
import pytest

from harvester.storage import memory


def test_the_cli_allocator_is_jemalloc_unless_the_user_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = pa.default_memory_pool()
    try:
        monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
        try:
            pa.jemalloc_memory_pool()
        except NotImplementedError:
            pytest.skip("this pyarrow is built without jemalloc")
        assert memory.use_returning_allocator() == "jemalloc"
        pa.set_memory_pool(pa.system_memory_pool())
        monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")
        assert memory.use_returning_allocator() == "system"  # the user's choice stands
    finally:
        pa.set_memory_pool(before)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_c_heap_pages_are_released_where_glibc_can() -> None:
    # Python dicts of ~40 fields come from malloc: the shape a fetch phase leaves freed.
    held = [{f"field{k}": k for k in range(40)} for _ in range(20_000)]
    del held
    assert memory.release_freed_memory() is True
