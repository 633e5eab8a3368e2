"""The ``harvester`` command: one sub-command per job, one clear line per error.

Exit codes: 0 success; 1 unexpected error; 2 bad settings; 3 the API refused (bad key,
bad query, unreachable); 4 the lake cannot be used; 5 the run finished but some shards
failed (named in the output); 6 `verify` found differences (named in the output);
130 interrupted (progress is saved).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence

from harvester.config import API_KEY_ENV, Settings, resolve
from harvester.errors import HarvesterError

EXIT_FAILED_SHARDS = 5
EXIT_MISMATCH = 6
EXIT_INTERRUPTED = 130


class RedactingFilter(logging.Filter):
    """Defence in depth: scrub the API key from any log line, whoever wrote it."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self._secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secret and self._secret in record.getMessage():
            record.msg = record.getMessage().replace(self._secret, "***")
            record.args = ()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import orjson

        payload = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        return orjson.dumps(payload).decode()


def setup_logging(log_format: str, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(os.environ.get(API_KEY_ENV, "").strip()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)


def add_run_arguments(parser: argparse.ArgumentParser, *, dates: bool = True) -> None:
    """Flags shared by the commands that talk to the API; None means 'not given'."""
    parser.add_argument("--config", help="TOML config file (see configs/)")
    parser.add_argument("--api-url", dest="api_url", help="service base URL")
    parser.add_argument("--out", help="lake root: a local path or s3://bucket/prefix")
    if dates:
        parser.add_argument("--from", dest="date_from", help="first mail date, YYYY-MM-DD")
        parser.add_argument("--to", dest="date_to", help="last mail date, YYYY-MM-DD")
    parser.add_argument("--concurrency", help="requests in flight at most (ODP: 1)")
    parser.add_argument("--rate", help="requests per second at most (0 = unlimited)")
    parser.add_argument("--rows", help="rows asked for per request")
    parser.add_argument("--quiet", action="store_const", const=True, default=None)
    parser.add_argument("--log-format", dest="log_format", choices=["text", "json"])
    parser.add_argument("-v", "--verbose", action="store_true", help="log retries and progress")


def settings_from(args: argparse.Namespace) -> Settings:
    keys = (
        "api_url",
        "out",
        "date_from",
        "date_to",
        "concurrency",
        "rate",
        "rows",
        "quiet",
        "log_format",
        "lookback_days",
        "reconcile_days",
    )
    flags = {key: getattr(args, key, None) for key in keys}
    return resolve(flags, getattr(args, "config", None))


def _run_job(args: argparse.Namespace, job: str) -> int:
    """Run harvest or refresh with progress, print the report, map the outcome to an exit code."""
    from harvester.progress import make_progress

    settings = settings_from(args)
    setup_logging(settings.log_format, args.verbose)
    progress = make_progress(settings.quiet, settings.log_format)
    from harvester.harvest import run_harvest
    from harvester.refresh import run_refresh

    try:
        if job == "harvest":
            report, complete = asyncio.run(run_harvest(settings, progress)).astuple()
        else:
            report, complete = asyncio.run(run_refresh(settings, progress)).astuple()
    except KeyboardInterrupt:
        print(
            f"interrupted: finished work is saved in the lake's _harvest/;"
            f" run the same command again to resume the {job}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        progress.stop()
    for line in report.summary_lines():
        print(line)
    if not complete:
        print(
            f"the {job} is incomplete (see above); run the same command again to retry",
            file=sys.stderr,
        )
        return EXIT_FAILED_SHARDS
    return 0


def cmd_harvest(args: argparse.Namespace) -> int:
    return _run_job(args, "harvest")


def cmd_refresh(args: argparse.Namespace) -> int:
    return _run_job(args, "refresh")


def _print_json(data: object) -> None:
    import orjson

    print(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode())


def cmd_plan(args: argparse.Namespace) -> int:
    from harvester.ops.plan_cmd import plan_job

    settings = settings_from(args)
    setup_logging(settings.log_format, args.verbose)
    plan = asyncio.run(plan_job(settings, args.job))
    if args.json:
        _print_json(plan.to_json())
    else:
        print("\n".join(plan.lines(every_shard=args.shards)))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from harvester.ops.status import lake_status

    settings = settings_from(args)
    setup_logging(settings.log_format, args.verbose)
    status = lake_status(settings)
    if args.json:
        _print_json(status.to_json())
    else:
        print("\n".join(status.render()))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from harvester.ops.verify import verify_lake
    from harvester.progress import make_progress

    settings = settings_from(args)
    setup_logging(settings.log_format, args.verbose)
    progress = make_progress(settings.quiet or not args.repair, settings.log_format)
    try:
        outcome = asyncio.run(verify_lake(settings, args.repair, progress))
    finally:
        progress.stop()
    print("\n".join(outcome.lines()))
    if outcome.repair_failed:
        return EXIT_FAILED_SHARDS
    return EXIT_MISMATCH if outcome.final.problems else 0


def cmd_compact(args: argparse.Namespace) -> int:
    from harvester.ops.compact import compact_lake

    settings = settings_from(args)
    setup_logging(settings.log_format, args.verbose)
    print("\n".join(compact_lake(settings).lines()))
    return 0


def add_lake_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the commands that only read or rewrite the lake (no API)."""
    parser.add_argument("--config", help="TOML config file (see configs/)")
    parser.add_argument("--out", help="lake root: a local path or s3://bucket/prefix")
    parser.add_argument("--log-format", dest="log_format", choices=["text", "json"])
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done")


def cmd_simulate(args: argparse.Namespace) -> int:
    from harvester.sim.cli import run

    return run(args)


Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    from harvester import __version__
    from harvester.sim.cli import add_arguments as add_sim_arguments

    parser = argparse.ArgumentParser(
        prog="harvester",
        description="Harvest the USPTO Office Action Rejection API v2 into a Parquet lake.",
    )
    parser.add_argument("--version", action="version", version=f"harvester {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    harvest = sub.add_parser("harvest", help="download everything into the lake (resumable)")
    add_run_arguments(harvest)
    harvest.set_defaults(func=cmd_harvest)

    refresh = sub.add_parser("refresh", help="bring a harvested lake up to date (daily)")
    add_run_arguments(refresh, dates=False)
    refresh.add_argument(
        "--lookback", dest="lookback_days", help="days of overlap below the watermark"
    )
    refresh.add_argument(
        "--reconcile-days",
        dest="reconcile_days",
        help="recent mail days to check against the service",
    )
    refresh.set_defaults(func=cmd_refresh)

    plan = sub.add_parser(
        "plan", help="shards, requests and time a harvest or refresh would take (writes nothing)"
    )
    add_run_arguments(plan)
    plan.add_argument(
        "--job",
        choices=["auto", "harvest", "refresh"],
        default="auto",
        help="auto (default): refresh if the lake holds a completed harvest, else harvest",
    )
    plan.add_argument("--lookback", dest="lookback_days", help="as for refresh")
    plan.add_argument("--reconcile-days", dest="reconcile_days", help="as for refresh")
    plan.add_argument("--shards", action="store_true", help="list every shard")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.set_defaults(func=cmd_plan)

    status = sub.add_parser("status", help="what the lake's _harvest/ says (no API call)")
    add_lake_arguments(status)
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=cmd_status)

    verify = sub.add_parser(
        "verify", help="compare the lake with the service; --repair fetches what differs"
    )
    add_run_arguments(verify)
    verify.add_argument(
        "--repair", action="store_true", help="fetch the days that differ again, then re-check"
    )
    verify.set_defaults(func=cmd_verify)

    compact = sub.add_parser("compact", help="merge each partition's small files (no API call)")
    add_lake_arguments(compact)
    compact.set_defaults(func=cmd_compact)

    simulate = sub.add_parser("simulate", help="run the offline API simulator")
    add_sim_arguments(simulate)
    simulate.set_defaults(func=cmd_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except HarvesterError as exc:
        print(f"harvester: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
