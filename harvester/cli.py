"""The ``harvester`` command: one sub-command per job, one clear line per error.

The settings flags are generated from ``harvester.config.SPECS`` (``add_settings_flags``), so
a flag, its setting, its variable and its TOML key are declared once. Exit codes are the
``EXIT_*`` constants of ``harvester.errors`` (its docstring has the table): 0 success;
1 unexpected error; 2 bad settings; 3 the API refused (bad key, bad query, unreachable);
4 the lake cannot be used; 5 the run finished but some shards failed (named in the output);
6 `verify` found differences (named in the output); 130 interrupted (progress is saved).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence

from harvester.config import API_KEY_ENV, RUN_COMMANDS, SETTINGS_COMMANDS, SPECS, Settings, resolve
from harvester.errors import EXIT_FAILED_SHARDS, EXIT_INTERRUPTED, EXIT_MISMATCH, HarvesterError


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


def add_settings_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """Add ``command``'s flags: ``--config``, one per setting whose ``Spec`` lists the command
    (generated from ``SPECS``), and ``-v``. A flag not given is None, so ``config.resolve``
    falls back to the environment, the config file, then the default."""
    if command not in SETTINGS_COMMANDS:
        raise ValueError(f"{command!r} takes no settings flags")
    parser.add_argument("--config", metavar="FILE", help="TOML config file (see configs/)")
    for spec in SPECS:
        if spec.flag is None or command not in spec.commands:
            continue
        help_text = spec.help.replace("%", "%%")  # argparse formats help with %
        if spec.switch:
            parser.add_argument(
                spec.flag, dest=spec.name, action="store_const", const=True, default=None,
                help=help_text,
            )  # fmt: skip
        else:
            parser.add_argument(spec.flag, dest=spec.name, metavar=spec.metavar, help=help_text)
    verbose_help = "log retries and progress" if command in RUN_COMMANDS else "log what is done"
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose_help)


def settings_from(args: argparse.Namespace) -> Settings:
    """Resolve the settings from the parsed flags (those of ``add_settings_flags``)."""
    flags = {spec.name: getattr(args, spec.name, None) for spec in SPECS if spec.flag}
    return resolve(flags, getattr(args, "config", None))


def _run_job(args: argparse.Namespace, job: str) -> int:
    """Run harvest or refresh with progress, print the report, map the outcome to an exit code."""
    settings = settings_from(args)  # first: bad settings fail before anything is loaded
    setup_logging(settings.log_format, args.verbose)
    from harvester.progress import make_progress

    progress = make_progress(settings.quiet, settings.log_format)
    from harvester.harvest import run_harvest
    from harvester.refresh import run_refresh

    try:
        run = run_harvest if job == "harvest" else run_refresh
        outcome = asyncio.run(run(settings, progress))
        report, complete = outcome.report, outcome.complete
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
    settings = settings_from(args)
    setup_logging(settings.log_format, args.verbose)
    from harvester.ops.plan_cmd import plan_job

    plan = asyncio.run(plan_job(settings, args.job))
    if args.json:
        _print_json(plan.to_json())
    else:
        print("\n".join(plan.lines(every_shard=args.shards)))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings.log_format, args.verbose)
    from harvester.ops.status import lake_status

    status = lake_status(settings)
    if args.json:
        _print_json(status.to_json())
    else:
        print("\n".join(status.render()))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings.log_format, args.verbose)
    from harvester.ops.deep import DeepOptions
    from harvester.ops.verify import verify_lake
    from harvester.progress import make_progress

    if args.sample is not None and not args.deep:
        args.command_parser.error("--sample needs --deep")
    if args.sample is not None and args.sample < 1:
        args.command_parser.error(f"--sample must be at least 1, not {args.sample}")
    if args.sample_seed is not None and args.sample is None:
        args.command_parser.error("--sample-seed needs --sample")
    deep = DeepOptions(args.sample, args.sample_seed) if args.deep else None
    progress = make_progress(settings.quiet or not args.repair, settings.log_format)
    try:
        outcome = asyncio.run(verify_lake(settings, args.repair, progress, deep))
    finally:
        progress.stop()
    print("\n".join(outcome.lines()))
    if outcome.repair_failed:
        return EXIT_FAILED_SHARDS
    return EXIT_MISMATCH if outcome.final.problems else 0


def cmd_compact(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings.log_format, args.verbose)
    from harvester.ops.compact import compact_lake

    print("\n".join(compact_lake(settings).lines()))
    return 0


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

    def command(name: str, help_text: str, func: Command) -> argparse.ArgumentParser:
        command_parser = sub.add_parser(name, help=help_text)
        if name in SETTINGS_COMMANDS:
            add_settings_flags(command_parser, name)
        # main() reports an unknown flag with the usage of the command it was given to.
        command_parser.set_defaults(func=func, command_parser=command_parser)
        return command_parser

    command("harvest", "download everything into the lake (resumable)", cmd_harvest)
    command("refresh", "bring a harvested lake up to date (daily)", cmd_refresh)
    plan = command(
        "plan",
        "shards, requests and time a harvest or refresh would take (writes nothing)",
        cmd_plan,
    )
    plan.add_argument(
        "--job",
        choices=["auto", "harvest", "refresh"],
        default="auto",
        help="auto (default): refresh if the lake holds a completed harvest, else harvest",
    )
    plan.add_argument("--shards", action="store_true", help="list every shard")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    status = command("status", "what the lake's _harvest/ says (no API call)", cmd_status)
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    verify = command(
        "verify", "compare the lake with the service; --repair fetches what differs", cmd_verify
    )
    verify.add_argument(
        "--repair", action="store_true", help="fetch the days that differ again, then re-check"
    )
    verify.add_argument(
        "--deep",
        action="store_true",
        help="also fetch whole days and compare every row, field by field",
    )
    verify.add_argument(
        "--sample",
        type=int,
        metavar="N",
        help="with --deep: compare N random days of the range, not all of them",
    )
    verify.add_argument(
        "--sample-seed",
        type=int,
        metavar="S",
        help="the seed of --sample's draw, to repeat a run's days (default: a new one, printed)",
    )
    command("compact", "merge each partition's small files (no API call)", cmd_compact)
    add_sim_arguments(command("simulate", "run the offline API simulator", cmd_simulate))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    args, extras = parser.parse_known_args(words)
    if extras:
        # parse_args would report a sub-command's unknown flag with the top-level usage
        # ("usage: harvester [-h] [--version] COMMAND ..."); report it with the usage of the
        # sub-command it was given to. Words before the command belong to the top level.
        target: argparse.ArgumentParser = args.command_parser
        if extras[0] in words and words.index(extras[0]) < words.index(args.command):
            target = parser
        target.error(f"unrecognized arguments: {' '.join(extras)}")
    func: Command = args.func
    try:
        return func(args)
    except HarvesterError as exc:
        print(f"harvester: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
