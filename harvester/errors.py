"""Every error of the harvester and every exit code of the ``harvester`` command.

Every failure a user can cause or meet has its own class, so the CLI can print one clear
line and pick an exit code without parsing messages. None of them ever carries the API key.
Foreign exceptions (aiohttp's, fsspec's) are mapped to these where they are met: the HTTP
client maps transport errors, the lake maps storage errors.

The hierarchy::

    Exception
    ├── HarvesterError            one line to the user; ``exit_code``
    │   ├── ConfigError           2: a setting is missing or invalid
    │   ├── ApiError              3: the API stops the run (no retry would help)
    │   │   ├── AuthError         401/403: the key is missing, wrong or not active yet
    │   │   ├── QueryError        400/413: the query, its window or its page size refused
    │   │   ├── ApiUnreachable    the service cannot be reached at start-up
    │   │   └── CountsDisagree    the service's counts contradict each other
    │   ├── LakeError             4: the lake cannot be used for this command
    │   │   └── LockLost          another run took the lake's lock: stop before writing
    │   ├── RetriesExhausted      a request kept failing: its shard is marked failed (5)
    │   ├── Interrupted           a signal (Ctrl-C, SIGTERM, SIGHUP): 130, 143, 129
    │   ├── RunStopped            the run stopped cleanly before its end; progress is saved
    │   │   ├── QuotaExhausted    7: the key's weekly quota is spent (says when it resets)
    │   │   ├── BudgetSpent       8: ``--max-requests`` requests were sent
    │   │   └── OutageTooLong     9: the service stayed down longer than ``max_outage``
    │   ├── SourceMismatch        10: the lake was harvested from another source
    │   ├── ShardUnstable         a shard's index kept moving: marked failed (5)
    │   └── MissingExtra          11: an optional dependency a command needs is missing
    └── ShardTooLarge             not an error: a shard outgrew the window, split it

Exit codes (the constants below; ``harvester.cli`` returns them, the error classes carry
theirs as ``exit_code``):

====  ======================  ============================================================
code  constant                meaning
====  ======================  ============================================================
0     ``EXIT_OK``             success
1     ``EXIT_UNEXPECTED``     unexpected error (``HarvesterError`` and anything unforeseen)
2     ``EXIT_CONFIG``         bad settings, named in the message (``ConfigError``; also a
                              wrong flag, reported by argparse)
3     ``EXIT_API``            the API refused or could not be reached: bad key, bad query,
                              unreachable (``ApiError`` and its subclasses)
4     ``EXIT_LAKE``           the lake cannot be used for this command (``LakeError``)
5     ``EXIT_FAILED_SHARDS``  the run finished but some shards failed (named in the output),
                              or ``verify --repair`` could not fetch what differs
6     ``EXIT_MISMATCH``       ``verify`` found differences (named in the output)
7     ``EXIT_QUOTA``          the weekly quota is spent: stopped cleanly, progress saved;
                              the message says when it resets (``--wait-for-quota`` waits)
8     ``EXIT_BUDGET``         ``--max-requests`` reached: stopped cleanly, progress saved
9     ``EXIT_OUTAGE``         the service stayed down longer than ``max_outage``: stopped
                              cleanly, progress saved
10    ``EXIT_SOURCE``         the lake was harvested from another source: refused before
                              any request (``SourceMismatch``); a new ``--out``, or
                              ``--rebind-source`` on purpose
11    ``EXIT_MISSING_EXTRA``  an optional dependency the command needs is not installed
                              (``MissingExtra``: ``show`` without DuckDB); the message
                              says how to add it
129   ``EXIT_HANGUP``         stopped by SIGHUP; finished work and the report are saved
130   ``EXIT_INTERRUPTED``    interrupted (Ctrl-C, SIGINT); finished work and the report
                              are saved
143   ``EXIT_TERMINATED``     stopped by SIGTERM (systemd, Kubernetes, Airflow); finished
                              work and the report are saved
====  ======================  ============================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_CONFIG = 2
EXIT_API = 3
EXIT_LAKE = 4
EXIT_FAILED_SHARDS = 5
EXIT_MISMATCH = 6
EXIT_QUOTA = 7
EXIT_BUDGET = 8
EXIT_OUTAGE = 9
EXIT_SOURCE = 10
EXIT_MISSING_EXTRA = 11
EXIT_HANGUP = 129
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class HarvesterError(Exception):
    """Base of every error the harvester reports to its user as one line."""

    exit_code: int = EXIT_UNEXPECTED


class ConfigError(HarvesterError):
    """A setting is missing or invalid (named in the message). Raised before any work."""

    exit_code = EXIT_CONFIG


class ApiError(HarvesterError):
    """The API answered in a way that stops the run at once (no retry would help)."""

    exit_code = EXIT_API


class AuthError(ApiError):
    """401 or 403: the API key is missing, wrong or not active yet (or the URL is wrong:
    gateways answer 403 for unknown routes)."""


class QueryError(ApiError):
    """400 or 413: the service refused a query, its paging window or its page size.

    ``status`` and ``server_message`` (the service's own words) let ``service`` tell a
    window error or a payload cap, which a run learns from, from a bad query, which stops
    it."""

    def __init__(self, message: str, status: int = 400, server_message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.server_message = server_message or message


class CountsDisagree(ApiError):
    """Counts that must add up (a range and its months, a month and its shards) do not, even
    when counted again: planning or finishing on them would lose rows silently."""


class ApiUnreachable(ApiError):
    """The service could not be reached at all (DNS, refused connection) at start-up."""


class RetriesExhausted(HarvesterError):
    """A request kept failing with retryable errors; carries the last cause."""

    def __init__(self, cause: str, attempts: int) -> None:
        super().__init__(f"gave up after {attempts} attempts: {cause}")
        self.cause = cause
        self.attempts = attempts


class Interrupted(HarvesterError):
    """A signal stopped the run (``cli.run_async``): the request in flight was abandoned,
    finished work and the run's report are saved. ``exit_code``: 128 + the signal."""

    def __init__(self, signal_name: str, exit_code: int) -> None:
        super().__init__(f"stopped by {signal_name}")
        self.signal_name = signal_name
        self.exit_code = exit_code


class RunStopped(HarvesterError):
    """The run stopped cleanly before its end, for a reason outside the harvester: no
    shard is marked failed, finished work is committed, and running the same command
    again resumes. Raised by the client, so every worker stops at once."""


class QuotaExhausted(RunStopped):
    """The key's weekly quota is spent (a quota 429, or 429s that outlast ``quota_after``).
    ``resets_at``: when the service's week starts again (ODP: Sunday 00:00 UTC)."""

    exit_code = EXIT_QUOTA

    def __init__(self, message: str, resets_at: str) -> None:
        super().__init__(message)
        self.resets_at = resets_at


class BudgetSpent(RunStopped):
    """The run sent the ``--max-requests`` it was allowed."""

    exit_code = EXIT_BUDGET


class OutageTooLong(RunStopped):
    """The service kept failing (5xx, timeouts, refused connections) for longer than
    ``max_outage``: a pause that long is better ended and resumed by the scheduler."""

    exit_code = EXIT_OUTAGE


class LakeError(HarvesterError):
    """The lake is not in a state this command can work on (e.g. no completed harvest)."""

    exit_code = EXIT_LAKE


class SourceMismatch(HarvesterError):
    """The lake records another source (``source``: API URL and dataset) than this run's:
    its rows and this service's would mix, and refresh would then "repair" one into the
    other. Raised before any request; not a ``LakeError`` (4), as the lake itself is fine:
    the same command with its own source, a new ``--out``, or ``--rebind-source`` goes on."""

    exit_code = EXIT_SOURCE


class LockLost(LakeError):
    """This run no longer holds the lake's lock (another run took it over, or it was
    deleted): raised by the fence before the next write, so the run stops writing."""


class ShardUnstable(HarvesterError):
    """Every attempt at a shard saw the index move under it; the shard is marked failed."""

    exit_code = EXIT_FAILED_SHARDS


class MissingExtra(HarvesterError):
    """A command needs an optional dependency (an extra of the package) that is not
    installed. Its own exit code, not 1: nothing went wrong, the install is one step short,
    and the message says which step (for pip and for pipx, which keeps its own venv)."""

    exit_code = EXIT_MISSING_EXTRA


class ShardTooLarge(Exception):
    """A shard's numFound no longer fits in the paging window: it must be split. Control
    flow between the fetch and the pipeline, never shown to a user."""

    def __init__(self, num_found: int) -> None:
        super().__init__(f"numFound {num_found} exceeds the paging window")
        self.num_found = num_found
