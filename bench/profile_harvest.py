"""Profile one harvest with pyinstrument: where does the harvester's CPU go?

Run: ``python -m bench.profile_harvest --profile-out DIR -- <harvester harvest flags>``.

pyinstrument samples only the main thread, and the harvester decodes and writes shards in
a worker thread (``asyncio.to_thread``), which would make that work invisible. So this
driver runs those calls inline on the event loop thread: the overlap of fetching and
writing is lost (the run is slower than a normal one), but every CPU-second the harvester
spends is in the profile, attributed to the code that spends it. That is what the profile
is for: deciding what to optimise, not timing.

It writes ``profile.txt`` (the call tree), ``profile-flat.txt`` (self time by function)
and ``profile.json`` (self time by category, for the benchmark report).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pyinstrument import Profiler
from pyinstrument.frame import Frame

T = TypeVar("T")

# First match wins: (category, substrings of the frame's file path or function).
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("JSON parse of pages (orjson, in client._parse_page)", ("_parse_page", "_load_json")),
    ("decode docs -> Arrow (harvester.service.decode)", ("harvester/service/decode.py",)),
    (
        "Parquet write (harvester.storage.writer, pyarrow)",
        ("harvester/storage/writer.py", "pyarrow"),
    ),
    (
        "lake and state files (harvester.storage.store/state/commit, fsspec)",
        (
            "harvester/storage/store.py",
            "harvester/storage/state.py",
            "harvester/storage/commit.py",
            "fsspec",
        ),
    ),
    ("HTTP (aiohttp, yarl, multidict)", ("aiohttp", "yarl", "multidict")),
    (
        "fetch and checks (harvester.service.fetch, client, pipeline)",
        (
            "harvester/service/fetch.py",
            "harvester/service/client.py",
            "harvester/jobs/pipeline.py",
            "harvester/service/backoff.py",
            "aiolimiter",
        ),
    ),
    ("asyncio event loop", ("asyncio",)),
    ("start-up: imports", ("<frozen importlib", "importlib")),
)


IDLE = "idle: waiting for the server (epoll)"


def _category(frame: Frame, inherited: str) -> str:
    """A frame's category; C functions (``<built-in>``) count for the code calling them."""
    where = f"{frame.file_path or ''}:{frame.function}"
    if "epoll" in frame.function or "select.poll" in frame.function:
        return IDLE
    if where.startswith("<built-in>"):
        return inherited
    for name, needles in CATEGORIES:
        if any(n in where for n in needles):
            return name
    if "harvester/" in where:
        return "harvester, other"
    return inherited


def self_times(root: Frame) -> tuple[dict[str, float], dict[str, float], float]:
    """Self time by category and by function, and the total, from a pyinstrument tree.

    A frame's self time is its time minus its children's; pyinstrument's synthetic
    "[self]" leaves are folded back into their parent, which is where the time was spent.
    """
    by_category: dict[str, float] = {}
    by_function: dict[str, float] = {}
    stack = [(root, "other")]
    while stack:
        frame, inherited = stack.pop()
        category = inherited if frame.is_synthetic else _category(frame, inherited)
        children = [c for c in frame.children if not c.is_synthetic_leaf]
        own = frame.time - sum(c.time for c in children)
        if own > 0 and not frame.is_synthetic:
            by_category[category] = by_category.get(category, 0.0) + own
            short = (frame.file_path_short or "").split("site-packages/")[-1]
            where = f"{frame.function} ({short}:{frame.line_no})"
            by_function[where] = by_function.get(where, 0.0) + own
        stack.extend((c, category) for c in children)
    return by_category, by_function, float(root.time)


def _descending(times: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(times.items(), key=lambda item: -item[1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.profile_harvest", description=__doc__)
    parser.add_argument("--profile-out", required=True, type=Path)
    parser.add_argument("harvest_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    harvest_args = [a for a in args.harvest_args if a != "--"]

    async def inline(func: Callable[..., T], /, *a: Any, **kw: Any) -> T:
        return func(*a, **kw)

    asyncio.to_thread = inline  # see the module docstring

    from harvester.cli import main as harvester_main

    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    code = harvester_main(["harvest", *harvest_args])
    profiler.stop()

    out: Path = args.profile_out
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.txt").write_text(profiler.output_text(unicode=False, color=False))
    (out / "profile-flat.txt").write_text(
        profiler.output_text(unicode=False, color=False, flat=True)
    )
    session = profiler.last_session
    root = session.root_frame(trim_stem=False) if session else None
    if root is not None:
        by_category, by_function, total = self_times(root)
        summary = {
            "exit_code": code,
            "sampled_s": round(total, 3),
            "cpu_s": round(session.cpu_time, 3) if session and session.cpu_time else None,
            "by_category": {k: round(v, 3) for k, v in _descending(by_category)},
            "top_functions": {k: round(v, 3) for k, v in _descending(by_function)[:15]},
        }
        (out / "profile.json").write_text(json.dumps(summary, indent=2))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
