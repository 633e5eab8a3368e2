"""Measure the simulator's own throughput: pages per second over loopback, as a harvest asks.

``python -m harvester.sim.bench --records 5000000`` starts a simulator process, then pages
through whole mail days with ``rows=100`` the way the harvester shards: one day per shard,
split by id range so each shard stays under the result window. It reports pages/s, rows/s
and the simulator's resident memory, which must stay flat however far the harvest goes.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import orjson

from harvester.sim.server import RECORDS_PATH
from harvester.sim.testing import run_simulator_process

WINDOW = 10_000  # the simulator's default --max-window
DAY_QUERY = "submissionDate:[{d}T00:00:00Z TO {d}T23:59:59Z]"
ID_SPLITS = {1: [""], 2: ["id:[* TO 8}", "id:[8 TO *]"]}
ID_SPLITS[4] = ["id:[* TO 4}", "id:[4 TO 8}", "id:[8 TO c}", "id:[c TO *]"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by ``pid`` (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _harvest(url: str, shards: list[str], concurrency: int, rows: int) -> tuple[int, int]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for shard in shards:
        queue.put_nowait(shard)
    totals = [0, 0]

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            criteria = queue.get_nowait()
            start, found = 0, 1
            while start < found and start + rows <= WINDOW:
                form = {"criteria": criteria, "start": str(start), "rows": str(rows)}
                async with session.post(url + RECORDS_PATH, data=form) as response:
                    if response.status == 404:
                        break
                    page = orjson.loads(await response.read())["response"]
                found = page["numFound"]
                start += len(page["docs"])
                totals[0] += 1
                totals[1] += len(page["docs"])

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return totals[0], totals[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harvester.sim.bench", description=__doc__)
    parser.add_argument("--records", default="5000000")
    parser.add_argument("--first-day", type=dt.date.fromisoformat, default=dt.date(2019, 1, 2))
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--split", type=int, choices=sorted(ID_SPLITS), default=4)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--latency", default="0", help="simulator --latency (ms)")
    args = parser.parse_args(argv)
    days = [args.first_day + dt.timedelta(days=k) for k in range(args.days)]
    shards = [
        " AND ".join(filter(None, [DAY_QUERY.format(d=day.isoformat()), ids]))
        for day in days
        for ids in ID_SPLITS[args.split]
    ]
    started = time.perf_counter()
    with run_simulator_process("--records", args.records, "--latency", args.latency) as sim:
        ready = time.perf_counter() - started
        pid = sim.process.pid
        before, cpu_before = rss_mb(pid), cpu_seconds(pid)
        t0 = time.perf_counter()
        pages, rows = asyncio.run(_harvest(sim.url, shards, args.concurrency, args.rows))
        elapsed = time.perf_counter() - t0
        after, cpu = rss_mb(pid), cpu_seconds(pid) - cpu_before
    print(
        f"records={args.records} days={args.days} split={args.split} "
        f"concurrency={args.concurrency} latency={args.latency}ms: ready in {ready:.2f}s; "
        f"{pages} pages, {rows} rows in {elapsed:.1f}s = {pages / elapsed:.0f} pages/s, "
        f"{rows / elapsed:.0f} rows/s; simulator CPU {cpu:.1f}s = {1000 * cpu / pages:.2f} ms/page "
        f"(capacity ~{pages / cpu:.0f} pages/s per core); RSS {before:.0f} -> {after:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
