"""The ``harvester`` command: one sub-command per job, one clear line per error.

The settings flags are generated from ``harvester.config.SPECS`` (``add_settings_flags``), so
a flag, its setting, its variable and its TOML key are declared once. Exit codes are the
``EXIT_*`` constants of ``harvester.errors`` (its docstring has the table): 0 success;
1 unexpected error; 2 bad settings; 3 the API refused (bad key, bad query, unreachable);
4 the lake cannot be used; 5 the run finished but some shards failed (named in the output);
6 `verify` found differences (named in the output); 7 the weekly quota is spent, 8
``--max-requests`` reached, 9 an outage outlasted ``max_outage``; 11 an optional dependency
the command needs is missing (``show`` without DuckDB); 129, 130, 143 stopped by SIGHUP,
Ctrl-C, SIGTERM (``harvester.signals``). 7-9 and the signals are clean stops: the report is
saved and the same command resumes. A mistyped command or flag is answered with the
nearest one ("did you mean").
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from harvester.config import (
    API_KEY_ENV,
    API_KEY_FILE_ENV,
    LAKE_COMMANDS,
    RUN_COMMANDS,
    SETTINGS_COMMANDS,
    SPECS,
    Resolved,
    Secret,
    Settings,
    Spec,
    read_api_key,
    resolve_with_origins,
    shipped_configs,
)
from harvester.errors import (
    EXIT_FAILED_SHARDS,
    EXIT_INTERRUPTED,
    EXIT_MISMATCH,
    EXIT_UNEXPECTED,
    HarvesterError,
    Interrupted,
    RunStopped,
)
from harvester.humanize import did_you_mean, nearest
from harvester.signals import run_async

if TYPE_CHECKING:
    from harvester.jobs.report import RunReport


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


class TextFormatter(logging.Formatter):
    """``<time> LEVEL logger: message``, the time as ``utc_stamp`` writes it (ISO 8601 UTC,
    as in JSON logs and progress lines), not logging's local ``2026-11-30 12:30:19,387``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        from harvester.progress import utc_stamp

        return utc_stamp(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (ISO 8601 UTC with milliseconds and ``Z``, e.g.
    ``2026-11-30T12:30:19.387Z``), ``level``, ``logger``, ``message``; progress lines have
    the same shape (``harvester.progress``), so one parser reads both."""

    def format(self, record: logging.LogRecord) -> str:
        import orjson

        from harvester.progress import utc_stamp

        payload = {
            "time": utc_stamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        return orjson.dumps(payload).decode()


def setup_logging(log_format: str, verbose: bool, api_key: Secret | None = None) -> None:
    """Log to stderr; ``api_key`` is the resolved key (``Settings.api_key``) the filter
    scrubs. Without it, the key is read as ``resolve`` reads it (``USPTO_API_KEY`` or the
    file ``USPTO_API_KEY_FILE`` names), so a caller that forgets to pass it still scrubs."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    if api_key is None:
        try:
            api_key = read_api_key(os.environ)[0]
        except HarvesterError:  # resolve reports a bad key source; nothing to scrub then
            api_key = None
    handler.addFilter(RedactingFilter(api_key.reveal() if api_key else ""))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)


# The command that prints the resolved settings: it takes every settings flag of every
# command, so any command line's settings can be checked with it.
CONFIG_COMMAND = "config"
KEY_HELP = (
    f"The API key comes from {API_KEY_ENV} (the key itself) or {API_KEY_FILE_ENV} (the path"
    " of a file holding only the key: a systemd credential, a Docker secret), never from a"
    " flag or the config file."
)
PRECEDENCE_HELP = (
    "Settings resolve as flag > environment > config file > default;"
    f" 'harvester {CONFIG_COMMAND}' prints what they resolve to and where each came from."
)
_WIDTH = 79


def flag_help(spec: Spec) -> str:
    """A flag's help: what it means, its default, its variable and its config key."""
    where = f"default: {spec.shown_default()}; env {spec.env}; config {spec.origin_of_toml()}"
    return f"{spec.help} ({where})"


def _flag_specs(command: str) -> list[Spec]:
    if command == CONFIG_COMMAND:
        return [spec for spec in SPECS if spec.flag]
    return [spec for spec in SPECS if spec.flag and command in spec.commands]


def settings_epilog(command: str) -> str:
    """The settings ``command`` reads that have no flag (environment and config file only),
    each with its default, then where the key comes from (for the commands that call the
    API) and how settings resolve: with the flags' help, every setting is listed."""
    unflagged = [spec for spec in SPECS if spec.flag is None]
    if command in LAKE_COMMANDS:  # they read only the lake's own settings
        unflagged = [spec for spec in unflagged if spec.toml[0] == "lake"]
    lines = ["settings without a flag (set in the environment or the config file):"]
    for spec in unflagged:
        head = f"{spec.env}, config {spec.origin_of_toml()} (default: {spec.shown_default()})"
        lines.append(_fill(head, "  ", "    "))
        lines.append(_fill(spec.help, "      ", "      "))
    closing = PRECEDENCE_HELP if command in LAKE_COMMANDS else f"{KEY_HELP} {PRECEDENCE_HELP}"
    return "\n".join([*lines, "", _fill(closing)])


def _fill(text: str, first: str = "", rest: str = "") -> str:
    # Never break inside a word: variable names, config keys and templates stay whole.
    return textwrap.fill(
        text, _WIDTH, initial_indent=first, subsequent_indent=rest,
        break_long_words=False, break_on_hyphens=False,
    )  # fmt: skip


def add_settings_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """Add ``command``'s flags: ``--config``, one per setting whose ``Spec`` lists the command
    (generated from ``SPECS``; ``config`` takes them all), and ``-v``. A flag not given is
    None, so ``config.resolve`` falls back to the environment, the config file, then the
    default. Each flag's help ends with its default, variable and config key, and the
    command's epilog lists the settings that have no flag and where the key comes from."""
    if command not in (*SETTINGS_COMMANDS, CONFIG_COMMAND):
        raise ValueError(f"{command!r} takes no settings flags")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file, or a shipped config by name: "
        + ", ".join(shipped_configs())
        + " (a file path wins over a name)",
    )
    for spec in _flag_specs(command):
        assert spec.flag is not None  # _flag_specs keeps flagged specs only
        help_text = flag_help(spec).replace("%", "%%")  # argparse formats help with %
        if spec.switch:
            parser.add_argument(
                spec.flag, dest=spec.name, action="store_const", const=True, default=None,
                help=help_text,
            )  # fmt: skip
        else:
            parser.add_argument(spec.flag, dest=spec.name, metavar=spec.metavar, help=help_text)
    # The epilog is laid out here (lists, paragraphs): argparse must not re-wrap it.
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = settings_epilog(command)
    if command == CONFIG_COMMAND:
        return  # it logs nothing
    verbose_help = "log retries and progress" if command in RUN_COMMANDS else "log what is done"
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose_help)


def resolved_from(args: argparse.Namespace) -> Resolved:
    """Resolve the settings, with their origins, from the parsed flags (those of
    ``add_settings_flags``)."""
    flags: dict[str, Any] = {
        spec.name: getattr(args, spec.name, None) for spec in SPECS if spec.flag
    }
    return resolve_with_origins(flags, getattr(args, "config", None))


def settings_from(args: argparse.Namespace) -> Settings:
    """Resolve the settings from the parsed flags (those of ``add_settings_flags``)."""
    return resolved_from(args).settings


def _run_job(args: argparse.Namespace, job: str) -> int:
    """Run harvest or refresh with progress, print the report, map the outcome to an exit code."""
    settings = settings_from(args)  # first: bad settings fail before anything is loaded
    setup_logging(settings.log_format, args.verbose, settings.api_key)
    from harvester.progress import make_progress

    progress = make_progress(settings.quiet, settings.log_format, label=job)
    from harvester.jobs.harvest import run_harvest
    from harvester.jobs.refresh import run_refresh

    try:
        run = run_harvest if job == "harvest" else run_refresh
        outcome = run_async(run(settings, progress))
        report, complete = outcome.report, outcome.complete
    finally:
        progress.stop()  # before main() prints why a run stopped early
    print_summary(settings, report, report.summary_lines())
    if not complete:
        print(
            f"the {job} is incomplete (see above); run the same command again to retry",
            file=sys.stderr,
        )
        return EXIT_FAILED_SHARDS
    return 0


def print_summary(settings: Settings, report: RunReport, lines: list[str]) -> None:
    """A run's closing summary on stdout: ``lines`` for a person, or with ``--log-format
    json`` one JSON object on one line (the run report as saved, plus ``saved_to``: its
    path, null when none was saved), so a pipeline reads it without parsing text. Why a run
    is incomplete stays on stderr, as every message does."""
    if settings.log_format == "json":
        import orjson

        data = {**report.to_json(), "saved_to": report.saved_to or None}
        print(orjson.dumps(data, default=str).decode())
    else:
        print("\n".join(lines))


def cmd_harvest(args: argparse.Namespace) -> int:
    return _run_job(args, "harvest")


def cmd_refresh(args: argparse.Namespace) -> int:
    return _run_job(args, "refresh")


def _print_json(data: object) -> None:
    import orjson

    print(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode())


def cmd_plan(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings.log_format, args.verbose, settings.api_key)
    from harvester.ops.plan_cmd import plan_job

    plan = run_async(plan_job(settings, args.job))
    if args.json:
        _print_json(plan.to_json())
    else:
        print("\n".join(plan.lines(every_shard=args.shards)))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings.log_format, args.verbose, settings.api_key)
    from harvester.ops.status import lake_status

    status = lake_status(settings)
    if args.json:
        _print_json(status.to_json())
    else:
        print("\n".join(status.render()))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings.log_format, args.verbose, settings.api_key)
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
    progress = make_progress(settings.quiet or not args.repair, settings.log_format, label="repair")
    try:
        outcome = run_async(verify_lake(settings, args.repair, progress, deep))
    finally:
        progress.stop()
    print_summary(settings, outcome.report, outcome.lines())
    if outcome.repair_failed:
        return EXIT_FAILED_SHARDS
    return EXIT_MISMATCH if outcome.final.problems else 0


def cmd_compact(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings.log_format, args.verbose, settings.api_key)
    from harvester.ops.compact import compact_lake

    outcome = compact_lake(settings)
    print_summary(settings, outcome.report, outcome.lines())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings.log_format, args.verbose, settings.api_key)
    from harvester.ops.show import show_lake

    summary = show_lake(settings)
    if args.json:
        _print_json(summary.to_json())
    else:
        print("\n".join(summary.lines()))
    return 0


def cmd_changes(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings.log_format, args.verbose, settings.api_key)
    from harvester.ops.changes import read_feed, write_parquet

    feed = read_feed(settings, args.since)
    if args.parquet:
        write_parquet(feed, args.parquet)
        print(f"{feed.table.num_rows:,} changes of {len(feed.runs)} runs written to {args.parquet}")
    elif args.json:
        import orjson

        for row in feed.table.to_pylist():  # one object a line: what a job reads line by line
            print(orjson.dumps(row, default=str).decode())
    else:
        print("\n".join(feed.lines()))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from harvester.ops.config_cmd import render, to_json

    resolved = resolved_from(args)
    if args.json:
        _print_json(to_json(resolved))
    else:
        print("\n".join(render(resolved, args.show_origin)))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from harvester.sim.cli import run

    return run(args)


Command = Callable[[argparse.Namespace], int]


class CommandParser(argparse.ArgumentParser):
    """The top-level parser, knowing its sub-commands' names (``commands``) so ``main`` can
    answer a mistyped one with the nearest ("did you mean harvest?")."""

    commands: tuple[str, ...] = ()


def build_parser() -> CommandParser:
    from harvester import __version__
    from harvester.sim.cli import add_arguments as add_sim_arguments

    parser = CommandParser(
        prog="harvester",
        description="Harvest the USPTO Office Action Rejection API v2 into a Parquet lake.",
        epilog=_fill(
            f"{KEY_HELP} {PRECEDENCE_HELP} 'harvester COMMAND --help' lists every setting the"
            " command reads."
        ),
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
    show = command(
        "show",
        "a first look at the data through DuckDB: rows per month, size, newest row (no API call)",
        cmd_show,
    )
    show.add_argument("--json", action="store_true", help="print the summary as JSON")
    feed = command(
        "changes",
        "the ids each refresh, reload and repair added, updated, deleted (no API call)",
        cmd_changes,
    )
    feed.add_argument(
        "--since", metavar="RUN|DATE", help="only runs after this run id, or begun on or after"
    )
    feed.add_argument("--json", action="store_true", help="one JSON object per change")
    feed.add_argument("--parquet", metavar="PATH", help="write the changes as one Parquet file")
    config = command(
        CONFIG_COMMAND,
        "the settings a run would use and where each came from (the key masked)",
        cmd_config,
    )
    add_settings_flags(config, CONFIG_COMMAND)
    config.add_argument(
        "--show-origin",
        action="store_true",
        help="say where each value came from: a flag, a variable, the config file or default",
    )
    config.add_argument("--json", action="store_true", help="print the settings as JSON")
    add_sim_arguments(command("simulate", "run the offline API simulator", cmd_simulate))
    parser.commands = tuple(sub.choices)
    return parser


def _check_command(parser: CommandParser, words: list[str]) -> None:
    """An unknown command: one line naming the nearest command and all of them, instead of
    argparse's "invalid choice". The top level has no option taking a value, so the
    command is the first word that is not an option."""
    word = next((w for w in words if not w.startswith("-")), None)
    if word is None or word in parser.commands:
        return
    parser.error(
        f"unknown command {word!r}{did_you_mean(word, parser.commands)};"
        f" the commands: {', '.join(parser.commands)}"
    )


def _unknown_flags(target: argparse.ArgumentParser, extras: list[str]) -> str:
    """argparse's "unrecognized arguments" for the words ``target`` did not take, then the
    nearest flag ``target`` has to each option among them, where one is near."""
    # Compared without their dashes: "--" shared by every flag would make any two look near
    # ("--bogus" and "--rows").
    flags = {
        flag.lstrip("-"): flag
        for action in target._actions
        for flag in action.option_strings
        if flag.startswith("--")
    }
    options = [word.split("=", 1)[0].lstrip("-") for word in extras if word.startswith("--")]
    near = [flags[match] for word in options if (match := nearest(word, flags)) is not None]
    hint = f" (did you mean {', '.join(near)}?)" if near else ""
    return f"unrecognized arguments: {' '.join(extras)}{hint}"


def run() -> NoReturn:
    """The console script and ``python -m harvester``: ``main``, then an exit that skips the
    native libraries' teardown. pyarrow's and DuckDB's C++ thread pools are destroyed by
    static destructors at interpreter exit, and a worker still alive then makes libstdc++
    abort ("terminate called without an active exception", exit -6) after the command has
    done everything right (apache/arrow#34314; we saw it once in CI, from `changes`). Every
    file the harvester writes is complete and closed before ``main`` returns, so the only
    thing left to do is flush the two streams; ``os._exit`` then ends the process with the
    command's own exit code."""
    try:
        code = main()
    except SystemExit as exc:  # argparse's usage errors and --help
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`... | head`)
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    _check_command(parser, words)
    args, extras = parser.parse_known_args(words)
    if extras:
        # parse_args would report a sub-command's unknown flag with the top-level usage
        # ("usage: harvester [-h] [--version] COMMAND ..."); report it with the usage of the
        # sub-command it was given to. Words before the command belong to the top level.
        target: argparse.ArgumentParser = args.command_parser
        if extras[0] in words and words.index(extras[0]) < words.index(args.command):
            target = parser
        target.error(_unknown_flags(target, extras))
    func: Command = args.func
    from harvester.storage.memory import use_returning_allocator  # (imports pyarrow)

    use_returning_allocator()  # a merge's peak RSS, not its CPU (``storage.memory``)
    try:
        return func(args)
    except (Interrupted, RunStopped) as exc:
        # Not errors: the run stopped on purpose, its work and report are saved.
        print(f"harvester: {exc}", file=sys.stderr)
        print(_resume_hint(args), file=sys.stderr)
        return exc.exit_code
    except HarvesterError as exc:
        print(f"harvester: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C outside an async run (loading, printing)
        print("harvester: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # the last resort: still one line, the details kept in a file
        return report_unexpected(exc, bool(getattr(args, "verbose", False)))


def _resume_hint(args: argparse.Namespace) -> str:
    """How to go on after a run stopped early: the same command, and what it left, saying
    only what is true. A stopped run's report is saved whenever its lake exists
    (``report.RunReport.kept``), and nothing before it is written; so a run stopped while
    planning a new lake left nothing. ``plan`` never writes."""
    again = f"run the same `harvester {args.command}` command again"
    if args.command == "plan":
        return f"plan writes nothing; {again}"
    try:
        settings: Settings | None = settings_from(args)  # as the run resolved them
    except HarvesterError:
        settings = None
    out = settings.out if settings is not None else "the lake"
    exists = None if settings is None else _local_lake_exists(settings)
    if exists is False:
        return f"nothing was saved: the run stopped before it wrote to {out}; {again}"
    saved = (
        f"finished work and this run's report are saved under {out}/_harvest/; {again} to"
        " resume (`harvester status` shows where it stopped)"
    )
    return saved if exists else f"if the run got as far as writing to {out}, {saved}"


def _local_lake_exists(settings: Settings) -> bool | None:
    """Whether a local lake is there now (None: an S3 lake, or one that cannot be looked
    at: no request is made on the way out of a stopped run, where a stalled one would
    hold up the user's Ctrl-C)."""
    from harvester.storage.state import HarvestState
    from harvester.storage.store import Lake

    try:
        lake = Lake.open(settings.out)
        return HarvestState(lake).is_lake() if lake.is_local else None
    except (ValueError, OSError, HarvesterError):
        return None


def report_unexpected(exc: BaseException, verbose: bool) -> int:
    """An exception nothing foresaw (a bug, or a failure no module maps): one line naming
    the file that holds the traceback, and the traceback itself on stderr only with ``-v``.
    The file goes to the system's temp directory, not the lake: the lake may be what
    failed. The API key is scrubbed from both, as the log filter scrubs log lines."""
    import datetime as dt
    import tempfile
    import traceback

    from harvester import __version__

    try:
        key = read_api_key(os.environ)[0]
    except HarvesterError:
        key = None
    secret = key.reveal() if key else ""

    def scrub(text: str) -> str:
        return text.replace(secret, "***") if secret else text

    details = scrub("".join(traceback.format_exception(exc)))
    try:
        fd, path = tempfile.mkstemp(prefix="harvester-error_", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(
                f"harvester {__version__}, {dt.datetime.now(dt.UTC).isoformat()}\n"
                f"command: {' '.join(sys.argv)}\n\n{details}"
            )
        where = f"details: {path}"
    except OSError as write_error:
        where = f"the details could not be saved ({write_error.strerror})"
    if verbose:
        print(details, file=sys.stderr, end="")
    else:
        where += "; run with -v for the traceback"
    lines = str(exc).strip().splitlines()
    message = scrub(lines[0]) if lines else "(no message)"
    print(
        f"harvester: error: unexpected {type(exc).__name__}: {message} ({where})", file=sys.stderr
    )
    return EXIT_UNEXPECTED
