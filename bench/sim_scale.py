"""The simulator at the real size: the harvester's query shapes against 10 M rows, 8 years.

    .venv/bin/python -m bench.sim_scale                 # ~1-2 minutes on 2 cores
    .venv/bin/python -m bench.sim_scale --samples 40 --records 2000000

Starts ``harvester simulate --records 10000000 --start 2018-06-01 --end 2026-05-31
--max-rows 1000 --admin`` and sends, one request at a time over loopback, the queries a
harvest and a refresh send, each built by the harvester's own code (``Shard.criteria``,
``ChangedScope.query``, ``stamps.newest_stamp``, ``plan.id_bounds``):

- the service probe's pages of ``*:*`` and its counts of one row (``... AND id:X``);
- the watermark's stamp counts (``createDateTime:[a TO b]``, the bisection to a day);
- month counts and day counts (``submissionDate:[...]``);
- id-range counts of a day and of a month cut in pieces (``... AND id:[lo TO hi}``);
- the refresh's changed rows of a month (``(createDateTime:[s TO x} OR
  createDateTime:{x TO *]) AND submissionDate:[...]``) and the undated shard;
- pages of 1000 rows of each id piece of a month, at ``start=0`` and deep (up to
  ``start=9000``); a month's first page builds the month's skeletons, so it is shown apart.

It prints the median and the maximum latency per shape (client-side wall time: parsing,
planning, generating, serialising and loopback) and the simulator's peak RSS (VmHWM), and
the rows the simulator generated against the rows it served. Not part of the test suite:
it takes too long for CI. The figures live in docs/simulator.md, "At the real size".
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import math
import os
import platform
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

from harvester.config import DEFAULT_DATE_TEMPLATE
from harvester.jobs.decision import ChangedScope
from harvester.jobs.planner import id_bounds
from harvester.service.stamps import newest_stamp
from harvester.sim.server import RECORDS_PATH
from harvester.sim.testing import run_simulator_process
from harvester.storage.shard import UNDATED_CRITERIA, Shard, month_spans

STAMP_FORM = "{stamp}Z"
START, END = dt.date(2018, 6, 1), dt.date(2026, 5, 31)
PAGE = 1000
WINDOW = 10_000  # the simulator's default --max-window: the deepest page starts at 9000
PIECES = 11  # a month of ~104k rows cut in pieces under the window, as the planner does


@dataclass
class Shape:
    """Latencies of one query shape, in seconds."""

    name: str
    seconds: list[float] = field(default_factory=list)

    def line(self) -> str:
        ms = [s * 1000 for s in self.seconds]
        return (
            f"| {self.name} | {len(ms)} | {statistics.median(ms):.1f} | {max(ms):.1f} |"
            if ms
            else f"| {self.name} | 0 | | |"
        )


class Client:
    """One session, one request at a time; every answer's time is kept under its shape."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url + RECORDS_PATH
        self.shapes: dict[str, Shape] = {}
        self.served = 0
        self.last_docs: list[dict[str, str]] = []

    async def ask(self, shape: str, criteria: str, start: int = 0, rows: int = 0) -> int:
        form = {"criteria": criteria, "start": str(start), "rows": str(rows)}
        began = time.perf_counter()
        async with self.session.post(self.url, data=form) as response:
            body = await response.read()
        self.shapes.setdefault(shape, Shape(shape)).seconds.append(time.perf_counter() - began)
        if response.status == 404:
            return 0
        if response.status != 200:
            raise RuntimeError(f"{response.status} for {criteria!r}: {body[:200]!r}")
        page = orjson.loads(body)["response"]
        self.served += len(page["docs"])
        self.last_docs = page["docs"]
        found: int = page["numFound"]
        return found


class StampCounter:
    """``stamps.Counter`` over the client: the watermark's counts under one shape."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def count(self, criteria: str) -> int:
        return await self.client.ask("stamp range count (watermark)", criteria)


async def run(url: str, samples: int, seed: int) -> Client:
    rng = random.Random(seed)
    months = month_spans(START, END)
    template = DEFAULT_DATE_TEMPLATE
    async with aiohttp.ClientSession() as session:
        client = Client(session, url)
        # The service probe (service.py): *:* pages doubling to the cap; the date form
        # proved on a row's day and its neighbours; the stamp form on the same row.
        for size in (100, 200, 400, 800, PAGE):
            await client.ask("probe: page of *:*", "*:*", 0, size)
        row = client.last_docs[0]
        day = dt.date.fromisoformat(row["submissionDate"][:10])
        for other in (day, day - dt.timedelta(days=1), day + dt.timedelta(days=1)):
            criteria = f"{Shard(other, other).criteria(template)} AND id:{row['id']}"
            await client.ask("probe: day AND id:X count", criteria)
        later = dt.datetime.fromisoformat(row["createDateTime"]) + dt.timedelta(seconds=1)
        for stamp in (row["createDateTime"], later.isoformat()):
            criteria = f"createDateTime:[{STAMP_FORM.format(stamp=stamp)} TO *] AND id:{row['id']}"
            await client.ask("probe: stamp AND id:X count", criteria)
        # A harvest: the watermark from 1900, the range and its months, then shards.
        now = dt.datetime.combine(END + dt.timedelta(days=46), dt.time(12))
        newest = await newest_stamp(
            StampCounter(client), STAMP_FORM, low=None, tolerance=dt.timedelta(days=1), now=now
        )
        await client.ask("month count", Shard(START, END).criteria(template))
        for first, last in rng.sample(months, samples):
            await client.ask("month count", Shard(first, last).criteria(template))
        for _ in range(samples):
            day = START + dt.timedelta(days=rng.randrange((END - START).days + 1))
            await client.ask("day count", Shard(day, day).criteria(template))
            low, high = rng.choice(list(itertools.pairwise(id_bounds("0", None, 8))))
            shard = Shard(day, day, low, high or None)
            await client.ask("day id-range count", shard.criteria(template))
        for first, last in rng.sample(months, max(1, samples // 4)):
            bounds = id_bounds("0", None, PIECES)
            for low, high in itertools.pairwise(bounds):
                shard = Shard(first, last, low, high or None)
                await client.ask("month id-range count", shard.criteria(template))
        # Pages as the fetchers ask them: every id piece of a month, its first page and a
        # deep one. A month's first page pays for the month's skeletons (cold): apart.
        for first, last in rng.sample(months, max(1, samples // PIECES + 1)):
            bounds = id_bounds("0", None, PIECES)
            for k, (low, high) in enumerate(itertools.pairwise(bounds)):
                criteria = Shard(first, last, low, high or None).criteria(template)
                shape = "page of 1000, start 0" if k else "page of 1000, a month's first (cold)"
                found = await client.ask(shape, criteria, 0, PAGE)
                deep = min(WINDOW - PAGE, max(0, found - PAGE // 2))
                await client.ask("page of 1000, deep (start up to 9000)", criteria, deep, PAGE)
        # A refresh: changed rows since the watermark minus a week, one load skipped.
        since = (dt.datetime.fromisoformat(newest.stamp or "2026-07-01T00:00:00")
                 - dt.timedelta(days=30)).isoformat()  # fmt: skip
        cut = (dt.datetime.fromisoformat(since) + dt.timedelta(days=9, seconds=4321)).isoformat()
        scope = ChangedScope(since, (cut,))
        for first, last in months[-6:] + rng.sample(months, samples // 2):
            criteria = scope.shard((first, last), STAMP_FORM).criteria(template)
            await client.ask("refresh changed rows count (month)", criteria)
        for _ in range(max(1, samples // 4)):
            await client.ask("undated count", UNDATED_CRITERIA)
        return client


def peak_rss_mib(pid: int) -> float:
    """The process' peak resident memory (VmHWM) in MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sim_scale", description=__doc__)
    parser.add_argument("--records", default="10000000")
    parser.add_argument("--samples", type=int, default=20, help="queries per shape (about)")
    parser.add_argument("--seed", type=int, default=1, help="which months, days and pieces")
    args = parser.parse_args(argv)
    flags = ("--records", args.records, "--start", str(START), "--end", str(END))
    began = time.perf_counter()
    with run_simulator_process(*flags, "--max-rows", str(PAGE), "--admin") as sim:
        ready = time.perf_counter() - began
        client = asyncio.run(run(sim.url, args.samples, args.seed))
        stats = sim.stats()
        rss = peak_rss_mib(sim.process.pid)
    print(
        f"simulator: {args.records} rows, {START}..{END}; ready in {ready:.2f} s;"
        f" {platform.python_implementation()} {platform.python_version()},"
        f" {os.cpu_count()} cores"
    )
    print("| query shape | n | median ms | max ms |")
    print("| --- | --- | --- | --- |")
    for shape in client.shapes.values():
        print(shape.line())
    every = [s for shape in client.shapes.values() for s in shape.seconds]
    print(
        f"all {len(every)} queries: median {statistics.median(every) * 1000:.1f} ms,"
        f" max {max(every) * 1000:.1f} ms; simulator peak RSS {rss:.0f} MiB;"
        f" rows generated {stats['generated_rows']} for {client.served} served"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
