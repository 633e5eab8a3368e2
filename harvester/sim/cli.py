"""``harvester simulate``: flags to SimConfig, then serve (or ``--export-truth`` and exit).

The top-level CLI (``harvester.cli``) calls ``add_arguments`` and ``run``;
``python -m harvester.sim.cli`` runs the same thing stand-alone.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import errno
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from harvester.errors import ConfigError, HarvesterError
from harvester.sim.config import (
    DATE_FIELD_KINDS,
    FAULT_PROFILES,
    KNOWN_FAULT_KINDS,
    OUTAGE_KINDS,
    PAGE_CAP_MODES,
    SORT_MODES,
    THROTTLE_STYLES,
    WINDOW_ERRORS,
    SimConfig,
)
from harvester.sim.corpus import Corpus
from harvester.sim.server import start


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KNOWN_FAULT_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(
            f"fault kinds are a comma list of: {', '.join(KNOWN_FAULT_KINDS)}"
        )
    return kinds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``simulate`` options; every one has a default (see docs/simulator.md)."""
    d = SimConfig()
    add = parser.add_argument
    add("--host", default=d.host, help=f"interface to listen on (default {d.host})")
    add("--port", type=int, default=d.port, help=f"port; 0 picks a free one (default {d.port})")
    add("--seed", type=int, default=d.seed, help=f"corpus, fault and order seed (default {d.seed})")
    add("--records", type=int, default=d.records, help=f"rows in the corpus (default {d.records})")
    add("--start", type=_date, default=d.start, help=f"first mail date (default {d.start})")
    add("--end", type=_date, default=d.end, help=f"last mail date (default {d.end})")
    add("--api-key", default=None, metavar="KEY", help="require X-API-KEY: KEY (default: none)")
    add("--rate", type=float, default=d.rate, help="requests/s per key; 0 = unlimited (default 0)")
    add("--burst", type=int, default=d.burst, help="requests in flight per key; 0 = unlimited")
    add(
        "--bucket-capacity",
        type=float,
        default=None,
        help="token bucket size (default max(1, rate))",
    )
    add(
        "--max-rows", type=int, default=d.max_rows, help=f"rows cap per page (default {d.max_rows})"
    )
    add(
        "--max-window",
        type=int,
        default=d.max_window,
        help=f"start+rows limit (default {d.max_window})",
    )
    add("--faults", choices=FAULT_PROFILES, default=d.faults, help="fault profile (default none)")
    add(
        "--fault-rate",
        type=float,
        default=None,
        help="share of requests faulted (flaky 0.03, hostile 0.25)",
    )
    add(
        "--fault-kinds",
        type=_kinds,
        default=None,
        help=f"only these kinds: {','.join(KNOWN_FAULT_KINDS)} (spurious-empty only if named)",
    )
    add(
        "--hang-seconds",
        type=float,
        default=d.hang_seconds,
        help="how long a hang lasts (default 30)",
    )
    add(
        "--trickle-seconds",
        type=float,
        default=d.trickle_seconds,
        help="duration of a trickled body",
    )
    add("--latency", type=float, default=d.latency_ms, metavar="MS", help="delay per request in ms")
    add(
        "--latency-base",
        type=float,
        default=d.latency_base,
        metavar="SECONDS",
        help="each records answer waits this plus --latency-per-row x its rows (default 0)",
    )
    add(
        "--latency-per-row",
        type=float,
        default=d.latency_per_row,
        metavar="SECONDS",
        help="seconds a records answer waits per row it serves (default 0)",
    )
    add("--admin", action="store_true", help="enable /_sim/mutate, /_sim/truth, /_sim/stats")
    add("--bad-rows", type=int, default=d.bad_rows, help="undecodable rows to inject (default 0)")
    add("--cache-rows", type=int, default=d.cache_rows, help="generated rows kept in memory")
    add("--export-truth", type=Path, default=None, metavar="PATH",
        help="write the unmutated corpus as JSON lines to PATH and exit")  # fmt: skip
    _add_habits(parser, d)


def _add_habits(parser: argparse.ArgumentParser, d: SimConfig) -> None:
    """The real service's reported habits (docs/simulator.md, "Habits"); all off by default."""
    group = parser.add_argument_group("habits of the real service (default: off)")
    add = group.add_argument
    add(
        "--window-error",
        type=int,
        choices=WINDOW_ERRORS,
        default=d.window_error,
        help="status past --max-window: 400 (Solr message) or 500 (bare gateway body)",
    )
    add(
        "--page-cap-mode",
        choices=PAGE_CAP_MODES,
        default=d.page_cap_mode,
        help="rows above --max-rows: capped silently, or refused with 400",
    )
    add(
        "--max-response-bytes",
        type=int,
        default=d.max_response_bytes,
        metavar="N",
        help="records bodies above N bytes answer ODP's 413 (default 0 = no limit)",
    )
    add(
        "--date-field",
        choices=DATE_FIELD_KINDS,
        default=d.date_field,
        help="date ranges compared as dates, or as strings letter by letter",
    )
    add(
        "--sort",
        choices=SORT_MODES,
        default=d.sort,
        help="the sort parameter: ignore (default), honour, or refuse (400)",
    )
    add(
        "--gateway-errors",
        action="store_true",
        help="API gateway auth bodies (401 missing key, 403 wrong key), 403 unknown routes",
    )
    add(
        "--throttle-style",
        choices=THROTTLE_STYLES,
        default=d.throttle_style,
        help='429s: solr (Retry-After) or gateway ({"message": ...}, no Retry-After)',
    )
    add(
        "--count-drift",
        type=int,
        default=d.count_drift,
        metavar="N",
        help="add N to numFound of multi-day count queries (rows <= 1)",
    )
    add(
        "--weekly-quota",
        type=int,
        default=d.weekly_quota,
        metavar="N",
        help="429 Limit Exceeded after N requests per key until POST /_sim/quota-reset",
    )
    add(
        "--outage-after",
        type=int,
        default=d.outage_after,
        metavar="N",
        help="begin an outage after N API requests (default 0 = never)",
    )
    add(
        "--outage-seconds",
        type=float,
        default=d.outage_seconds,
        metavar="S",
        help="how long the outage lasts",
    )
    add("--outage-kind", choices=OUTAGE_KINDS, default=d.outage_kind,
        help="503 with an empty body, or refuse connections (then listen again)")  # fmt: skip


def config_from_args(args: argparse.Namespace) -> SimConfig:
    try:
        return SimConfig(
            host=args.host, port=args.port, seed=args.seed, records=args.records,
            start=args.start, end=args.end, api_key=args.api_key, rate=args.rate,
            burst=args.burst, bucket_capacity=args.bucket_capacity, max_rows=args.max_rows,
            max_window=args.max_window, faults=args.faults, fault_rate=args.fault_rate,
            fault_kinds=args.fault_kinds, hang_seconds=args.hang_seconds,
            trickle_seconds=args.trickle_seconds, latency_ms=args.latency,
            latency_base=args.latency_base, latency_per_row=args.latency_per_row, admin=args.admin,
            bad_rows=args.bad_rows, cache_rows=args.cache_rows,
            window_error=args.window_error, page_cap_mode=args.page_cap_mode,
            max_response_bytes=args.max_response_bytes, date_field=args.date_field,
            sort=args.sort, gateway_errors=args.gateway_errors,
            throttle_style=args.throttle_style, count_drift=args.count_drift,
            weekly_quota=args.weekly_quota, outage_after=args.outage_after,
            outage_seconds=args.outage_seconds, outage_kind=args.outage_kind,
        )  # fmt: skip
    except ValueError as exc:
        raise ConfigError(f"simulate: {exc}") from None


def export_truth(config: SimConfig, path: Path) -> int:
    """Write the unmutated corpus' truth to ``path`` (atomically); returns the row count."""
    corpus = Corpus.from_config(config)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as out:
        for chunk in corpus.truth_chunks():
            out.write(chunk)
    os.replace(tmp, path)
    return corpus.total


async def start_listening(config: SimConfig) -> tuple[web.AppRunner, str]:
    """``server.start``, with a port or host that cannot be had reported as a setting
    (``ConfigError``, one line, exit 2), not an unexpected error: a port already taken is
    the commonest way to start a second simulator, and it is the user's to change."""
    try:
        return await start(config)
    except OSError as exc:
        where = f"{config.host}:{config.port}"
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"simulate: port {config.port} is already in use on {config.host}"
                " (pick another --port, or --port 0 for a free one)"
            ) from None
        if exc.errno == errno.EACCES:
            raise ConfigError(
                f"simulate: not allowed to listen on {where} (ports below 1024 need"
                " privileges: pick another --port)"
            ) from None
        # aiohttp's strerror repeats the address; the errno's own words say it once.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"simulate: cannot listen on {where}: {reason} (check --host)") from None


async def serve(config: SimConfig) -> None:
    """Serve until SIGINT or SIGTERM; announce the URL on stdout first."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before the announcement: no gap to race
        loop.add_signal_handler(sig, stop.set)
    runner, url = await start_listening(config)
    extras = ", admin" if config.admin else ""
    print(
        f"simulator listening on {url} ({config.records} records, {config.start}..{config.end}, "
        f"seed {config.seed}, faults {config.faults}{extras})",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.export_truth is not None:
        rows = export_truth(config, args.export_truth)
        print(f"wrote {rows} rows to {args.export_truth}", flush=True)
        return 0
    asyncio.run(serve(config))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harvester simulate", description=__doc__)
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except HarvesterError as exc:
        print(f"harvester: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
