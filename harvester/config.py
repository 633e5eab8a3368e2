"""Settings: what a run needs to know, resolved as flag > environment > config file > default.

Every setting is declared once in ``SPECS`` with its TOML location, its environment variable,
its command-line flag (and the sub-commands taking it), its help text and its parser, so the
three sources cannot drift apart: ``harvester.cli`` generates its flags from ``SPECS``. A bad
value fails at start with a one-line ``ConfigError`` naming the setting and where the value
came from (``--from``, ``$HARVESTER_FROM`` or ``[harvest] from in FILE``), in our words. The API key is the one
exception: it is read from ``USPTO_API_KEY``, or from the file that ``USPTO_API_KEY_FILE``
names (the convention of Docker secrets and systemd credentials), never from a flag or the
config file, so it cannot end up in shell history, ``ps`` or a committed config; it is
wrapped in ``Secret`` so it never prints. ``resolve_with_origins`` also says where each value
came from: ``harvester config --show-origin`` prints that, from the very same resolution.
"""

from __future__ import annotations

import calendar
import datetime as dt
import importlib.resources
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from harvester.errors import ConfigError
from harvester.humanize import nearest

API_KEY_ENV = "USPTO_API_KEY"
API_KEY_FILE_ENV = "USPTO_API_KEY_FILE"  # the path of a file holding the key, nothing else
DEFAULT_ORIGIN = "default"  # the origin of a setting that no source gave
DEFAULT_DATE_TEMPLATE = "submissionDate:[{start}T00:00:00Z TO {end}T23:59:59Z]"


class Secret:
    """A string that never shows itself in ``repr``/``str``/f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class Settings:
    """One run's resolved settings. Defaults respect ODP's published limits (see README)."""

    api_url: str = "https://api.uspto.gov"
    rate: float = 4.0
    concurrency: int = 1
    rows: int = 10_000  # a ceiling; the page is what the service honours, chosen by rows/s
    fixed_rows: bool = False  # the largest page honoured up to ``rows``: no choice by rows/s
    max_window: int = 10_000
    shard_size: int = 10_000
    timeout: float = 60.0
    max_attempts: int = 8
    min_429_wait: float = 5.0
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    shard_attempts: int = 3
    page_checkpoints: bool = True
    date_template: str = DEFAULT_DATE_TEMPLATE
    out: str = "./lake"
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    lookback_days: int = 2
    reconcile_days: int = 0  # 0: the whole coverage, every refresh
    drop_share: float = 0.25
    reload_share: float = 0.5  # changed rows above this share of the lake: a reload
    stamp_tolerance_days: float = 2.0
    weekly_quota: int = 5_000_000  # ODP: metadata calls per key per week, reset Sunday 00:00 UTC
    quota_wait: bool = False
    quota_after: float = 1_800.0
    quota_probe: float = 900.0
    max_requests: int = 0  # 0: no budget
    outage_after: int = 5
    outage_wait_max: float = 300.0
    max_outage: float = 86_400.0
    max_retry_after: float = 900.0
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    log_format: str = "text"
    quiet: bool = False
    rebind_source: bool = False  # a lake harvested from another source is bound to this one
    api_key: Secret | None = field(default=None, repr=False, compare=False)

    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options for the lake; credentials come from the AWS environment."""
        if not self.out.startswith("s3://"):
            return {}
        client_kwargs: dict[str, Any] = {}
        if self.s3_endpoint_url:
            client_kwargs["endpoint_url"] = self.s3_endpoint_url
        if self.s3_region:
            client_kwargs["region_name"] = self.s3_region
        return {"client_kwargs": client_kwargs} if client_kwargs else {}

    def public_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values, for reports and state: never the key."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "api_key":
                continue
            value = getattr(self, f.name)
            out[f.name] = value.isoformat() if isinstance(value, dt.date) else value
        out["api_key_set"] = bool(self.api_key)
        return out


def show_value(value: Any) -> str:
    """A setting's value as a config file spells it, unquoted: ``true``, ``4.0``, a date."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _whole(text: Any, minimum: int) -> int:
    """Text or a TOML integer as an int >= ``minimum``; anything else fails with our words."""
    rule = f"must be a whole number >= {minimum}"
    if isinstance(text, bool):
        raise ValueError(rule)
    if isinstance(text, int):
        value = text
    elif isinstance(text, float) and text.is_integer():
        value = int(text)
    elif isinstance(text, str):
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(rule) from None
    else:
        raise ValueError(rule)
    if value < minimum:
        raise ValueError(rule)
    return value


def _number(text: Any, rule: str) -> float:
    """Text or a TOML number as a finite float; anything else fails with ``rule``."""
    if isinstance(text, bool) or not isinstance(text, int | float | str):
        raise ValueError(rule)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(rule) from None
    if not math.isfinite(value):
        raise ValueError(rule)
    return value


def _positive_int(text: Any) -> int:
    return _whole(text, 1)


def _non_negative_int(text: Any) -> int:
    return _whole(text, 0)


def _positive_float(text: Any) -> float:
    rule = "must be a number > 0"
    value = _number(text, rule)
    if not value > 0:
        raise ValueError(rule)
    return value


def _non_negative_float(text: Any) -> float:
    rule = "must be a number >= 0"
    value = _number(text, rule)
    if not value >= 0:
        raise ValueError(rule)
    return value


def _share(text: Any) -> float:
    rule = "must be a number from 0 to 1"
    value = _number(text, rule)
    if not 0 <= value <= 1:
        raise ValueError(rule)
    return value


_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _date(text: Any) -> dt.date:
    """A date as ``YYYY-MM-DD`` only (a TOML date too). ``date.fromisoformat`` alone would
    also take ``20190101`` and ``2019-W01-1``: a typo read as some date is worse than a
    refusal, so the form is checked first."""
    rule = "must be a date as YYYY-MM-DD, like 2019-01-31"
    if isinstance(text, dt.datetime):  # a TOML date-time: the time would be dropped silently
        raise ValueError(rule)
    if isinstance(text, dt.date):
        return text
    if not isinstance(text, str) or not _DATE_TEXT.fullmatch(text.strip()):
        raise ValueError(rule)
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:  # the form, but no such day (2019-02-30): say that, not the form
        raise ValueError(f"does not exist ({_no_such_day(text.strip())})") from None


def _no_such_day(text: str) -> str:
    """Why ``YYYY-MM-DD`` text names no day: its month, or its day within the month."""
    year, month, _ = (int(part) for part in text.split("-"))
    if year < 1:
        return "years start at 0001"
    if not 1 <= month <= 12:
        return f"there is no month {month:02d}"
    return f"{calendar.month_name[month]} {year} has {calendar.monthrange(year, month)[1]} days"


def _text(text: Any) -> str:
    if not isinstance(text, str):
        raise ValueError("must be text")
    return text


def _url(text: Any) -> str:
    rule = "must start with http:// or https://"
    if not isinstance(text, str):
        raise ValueError(rule)
    value = text.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError(rule)
    return value


def _template(text: Any) -> str:
    value = _text(text)
    if "{start}" not in value or "{end}" not in value:
        raise ValueError("must contain {start} and {end}")
    return value


def _lake_uri(text: Any) -> str:
    value = _text(text)
    if not value:
        raise ValueError("must not be empty")
    if "://" in value and not value.startswith(("s3://", "file://")):
        raise ValueError("must be a local path or s3://bucket/prefix")
    return value


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(text: Any) -> str:
        if not isinstance(text, str) or text not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return text

    return parse


def _bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    if isinstance(text, str):
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
    raise ValueError("must be true or false")


# The sub-commands that take settings, and which of them take which flags.
RUN_COMMANDS = ("harvest", "refresh", "plan", "verify")  # they talk to the API
LAKE_COMMANDS = ("status", "compact", "show", "changes")  # they only read or rewrite the lake
SETTINGS_COMMANDS = RUN_COMMANDS + LAKE_COMMANDS
_DATED = ("harvest", "plan", "verify")
_REFRESHING = ("refresh", "plan")
_FETCHING = ("harvest", "refresh", "verify")  # runs that may spend many requests


@dataclass(frozen=True)
class Spec:
    """One setting: where it may come from, how its text becomes a value, what it means.

    ``flag`` is its command-line option (None: config file and environment only) and
    ``commands`` the sub-commands that take that flag; ``harvester.cli`` generates its
    options from these, so a flag cannot exist without its setting or drift from it.
    ``default_text`` says what the default means where the value would not (None).
    """

    name: str
    toml: tuple[str, str]
    env: str
    parse: Callable[[Any], Any]
    help: str
    flag: str | None = None
    commands: tuple[str, ...] = ()
    metavar: str | None = None
    default_text: str | None = None

    @property
    def switch(self) -> bool:
        """A flag that takes no value: giving it means true."""
        return self.parse is _bool

    def origin_of_flag(self) -> str:
        return self.flag or f"the {self.name} argument"

    def shown_default(self) -> str:
        """The default as help and ``harvester config`` show it: ``default_text``, or the
        value of ``Settings()`` as a config file would spell it."""
        return self.default_text or show_value(getattr(Settings(), self.name))

    def origin_of_toml(self) -> str:
        """``[section] key``: where the setting lives in a config file."""
        return f"[{self.toml[0]}] {self.toml[1]}"


SPECS: tuple[Spec, ...] = (
    Spec("api_url", ("api", "url"), "HARVESTER_API_URL", _url, "service base URL",
         flag="--api-url", commands=RUN_COMMANDS, metavar="URL"),
    Spec("rate", ("api", "rate"), "HARVESTER_RATE", _non_negative_float,
         "requests per second at most (0 = unlimited)",
         flag="--rate", commands=RUN_COMMANDS, metavar="R"),
    Spec("concurrency", ("api", "concurrency"), "HARVESTER_CONCURRENCY", _positive_int,
         "requests in flight at most (ODP: 1)",
         flag="--concurrency", commands=RUN_COMMANDS, metavar="N"),
    Spec("rows", ("api", "rows"), "HARVESTER_ROWS", _positive_int,
         "largest page to ask for; the service's own cap (and the payload cap) is probed"
         " below it, and the page with the best rows per second chosen",
         flag="--rows", commands=RUN_COMMANDS, metavar="N"),
    Spec("fixed_rows", ("api", "fixed_rows"), "HARVESTER_FIXED_ROWS", _bool,
         "ask for the largest page the service honours up to rows: no choice by rows/s"),
    Spec("max_window", ("api", "max_window"), "HARVESTER_MAX_WINDOW", _positive_int,
         "deepest start+rows ever asked for (a ceiling: a smaller window is learned)"),
    Spec("timeout", ("api", "timeout"), "HARVESTER_TIMEOUT", _positive_float,
         "seconds per request"),
    Spec("max_attempts", ("api", "max_attempts"), "HARVESTER_MAX_ATTEMPTS", _positive_int,
         "attempts per request for retryable failures"),
    Spec("min_429_wait", ("api", "min_429_wait"), "HARVESTER_MIN_429_WAIT", _non_negative_float,
         "seconds to wait at least after a 429"),
    Spec("backoff_base", ("api", "backoff_base"), "HARVESTER_BACKOFF_BASE", _positive_float,
         "first retry backoff in seconds (doubles, jittered)"),
    Spec("backoff_max", ("api", "backoff_max"), "HARVESTER_BACKOFF_MAX", _positive_float,
         "longest retry backoff in seconds"),
    Spec("weekly_quota", ("api", "weekly_quota"), "HARVESTER_WEEKLY_QUOTA", _non_negative_int,
         "requests per key per week the service allows (ODP: 5,000,000); 0: none"),
    Spec("quota_wait", ("api", "quota_wait"), "HARVESTER_QUOTA_WAIT", _bool,
         "when the weekly quota is spent, wait for it to reset and go on (else: stop, exit 7)",
         flag="--wait-for-quota", commands=_FETCHING),
    Spec("quota_after", ("api", "quota_after"), "HARVESTER_QUOTA_AFTER", _positive_float,
         "seconds of unbroken 429s after which the weekly quota is taken as spent"),
    Spec("quota_probe", ("api", "quota_probe"), "HARVESTER_QUOTA_PROBE", _positive_float,
         "while waiting for the quota, seconds between single probe requests"),
    Spec("max_requests", ("api", "max_requests"), "HARVESTER_MAX_REQUESTS", _non_negative_int,
         "stop cleanly (exit 8) after this many requests; 0: no budget",
         flag="--max-requests", commands=_FETCHING, metavar="N"),
    Spec("outage_after", ("api", "outage_after"), "HARVESTER_OUTAGE_AFTER", _non_negative_int,
         "consecutive failed requests (5xx, timeouts, refused) that pause every worker"
         " (at most max_attempts; 0: never pause)"),
    Spec("outage_wait_max", ("api", "outage_wait_max"), "HARVESTER_OUTAGE_WAIT_MAX",
         _positive_float, "longest pause in seconds between probes during an outage"),
    Spec("max_outage", ("api", "max_outage"), "HARVESTER_MAX_OUTAGE", _positive_float,
         "seconds an outage may last before the run stops cleanly (exit 9)"),
    Spec("max_retry_after", ("api", "max_retry_after"), "HARVESTER_MAX_RETRY_AFTER",
         _positive_float, "longest Retry-After honoured in seconds; a longer one is capped"),
    Spec("date_template", ("api", "date_template"), "HARVESTER_DATE_TEMPLATE", _template,
         "query of one date range, with {start} and {end}"),
    Spec("out", ("lake", "out"), "HARVESTER_OUT", _lake_uri,
         "lake root: a local path or s3://bucket/prefix",
         flag="--out", commands=SETTINGS_COMMANDS, metavar="URI"),
    Spec("rebind_source", ("lake", "rebind_source"), "HARVESTER_REBIND_SOURCE", _bool,
         "bind a lake harvested from another source (API URL, dataset) to this run's, on"
         " purpose (else: exit 10 before any request); a refresh then makes it equal to it",
         flag="--rebind-source", commands=RUN_COMMANDS),
    Spec("s3_endpoint_url", ("lake", "endpoint_url"), "HARVESTER_S3_ENDPOINT_URL", _url,
         "S3-compatible endpoint (MinIO, moto)", default_text="AWS S3"),
    Spec("s3_region", ("lake", "region"), "HARVESTER_S3_REGION", _text, "S3 region",
         default_text="the AWS environment's"),
    Spec("date_from", ("harvest", "from"), "HARVESTER_FROM", _date,
         "first mail date, YYYY-MM-DD",
         flag="--from", commands=_DATED, metavar="DATE",
         default_text="probed from the service, for verify the lake's coverage"),
    Spec("date_to", ("harvest", "to"), "HARVESTER_TO", _date,
         "last mail date, YYYY-MM-DD",
         flag="--to", commands=_DATED, metavar="DATE",
         default_text="today, for verify the lake's coverage"),
    Spec("shard_size", ("harvest", "shard_size"), "HARVESTER_SHARD_SIZE", _positive_int,
         "rows per shard at most (<= max_window)"),
    Spec("shard_attempts", ("harvest", "shard_attempts"), "HARVESTER_SHARD_ATTEMPTS",
         _positive_int, "fetches of one shard when the index moves under it"),
    Spec("page_checkpoints", ("harvest", "page_checkpoints"), "HARVESTER_PAGE_CHECKPOINTS",
         _bool, "keep each page until its shard is committed"),
    Spec("lookback_days", ("refresh", "lookback"), "HARVESTER_LOOKBACK", _non_negative_int,
         "days of overlap below the watermark",
         flag="--lookback", commands=_REFRESHING, metavar="DAYS"),
    Spec("reconcile_days", ("refresh", "reconcile_days"), "HARVESTER_RECONCILE_DAYS",
         _non_negative_int,
         "mail days (back from the newest) checked against the service; 0: the whole coverage",
         flag="--reconcile-days", commands=_REFRESHING, metavar="DAYS"),
    Spec("drop_share", ("refresh", "drop_share"), "HARVESTER_DROP_SHARE", _share,
         "a day losing more than this share of its rows (or all) waits for a later count"),
    Spec("reload_share", ("refresh", "reload_share"), "HARVESTER_RELOAD_SHARE", _share,
         "changed rows at least this share of the lake's: a reload, fetched month by month"),
    Spec("stamp_tolerance_days", ("refresh", "stamp_tolerance_days"),
         "HARVESTER_STAMP_TOLERANCE_DAYS", _non_negative_float,
         "createDateTime this far past now is reported, never taken as the watermark"),
    Spec("log_format", ("log", "format"), "HARVESTER_LOG_FORMAT", _choice("text", "json"),
         "log lines as text or JSON",
         flag="--log-format", commands=SETTINGS_COMMANDS, metavar="{text,json}"),
    Spec("quiet", ("log", "quiet"), "HARVESTER_QUIET", _bool, "show no progress (bar or lines)",
         flag="--quiet", commands=RUN_COMMANDS),
)  # fmt: skip
_SPEC_BY_NAME = {spec.name: spec for spec in SPECS}


def shipped_configs() -> dict[str, Traversable]:
    """The configs that ship with the package, by name (``demo`` for ``demo.toml``), sorted.

    They are the repository's top-level ``configs/*.toml``: ``harvester/configs`` is a
    symlink to that folder, so a wheel carries copies as package data and an editable
    install reads the folder itself (docs/decisions.md, "Install").
    """
    folder = importlib.resources.files("harvester") / "configs"
    if not folder.is_dir():
        return {}
    found = {e.name.removesuffix(".toml"): e for e in folder.iterdir() if e.name.endswith(".toml")}
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class ConfigFile:
    """What ``--config VALUE`` names: the file to read and how messages name it."""

    source: Traversable
    label: str


def find_config(value: str | Path) -> ConfigFile:
    """``--config VALUE``: an existing path, else the name of a shipped config.

    A path always wins over a name: a file called ``demo`` in the working directory is read
    rather than the shipped ``demo``, so adding a shipped config can never change what an
    existing command line reads. Anything that exists is taken as the path (a directory
    then fails to read, one line); neither a path nor a name is a ``ConfigError`` that
    lists the names.
    """
    path = Path(value)
    if path.exists():
        return ConfigFile(path, str(value))
    shipped = shipped_configs()
    if str(value) in shipped:
        source = shipped[str(value)]
        return ConfigFile(source, f"{value} (shipped: {source})")
    names = ", ".join(shipped) or "none"
    raise ConfigError(f"config file not found: {value} (shipped configs: {names})")


def load_toml(path: str | Path | ConfigFile) -> dict[str, Any]:
    """Read a config file (a path or a shipped name, see ``find_config``); unknown sections
    or keys are errors, not silently ignored."""
    config = path if isinstance(path, ConfigFile) else find_config(path)
    label = config.label
    try:
        with config.source.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {label}") from None
    except OSError as exc:  # a directory, no permission: one line, not a traceback
        raise ConfigError(f"config file {label} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {label} is not valid TOML: {exc}") from None
    known = {spec.toml for spec in SPECS}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"config file {label}: '{section}' must be a [section]")
        for key in table:
            if (section, key) not in known:
                hint = _nearest_setting(section, key, known)
                raise ConfigError(f"config file {label}: unknown setting [{section}] {key}{hint}")
    return data


def _nearest_setting(section: str, key: str, known: set[tuple[str, str]]) -> str:
    """What a mistyped key's error ends with, e.g. `` (did you mean [api] concurrency?)``:
    the nearest key of its own section first (the usual typo), else the nearest of every
    section (a key put in the wrong section, or a mistyped section); "" when none is near."""
    same = nearest(key, sorted(k for s, k in known if s == section))
    if same is not None:
        return f" (did you mean [{section}] {same}?)"
    # Keys alone: "[lake] " shared by every key of a section would make any two look near.
    other = nearest(key, sorted({k for _, k in known}))
    if other is None:
        return ""
    home = min(s for s, k in known if k == other)
    return f" (did you mean [{home}] {other}?)"


@dataclass(frozen=True)
class Resolved:
    """Resolved settings and where each value came from.

    ``origins`` has an entry for every setting of ``SPECS`` and for ``api_key``: the flag
    (``--rate``), the variable (``$HARVESTER_RATE``), the file (``[api] rate in c.toml``) or
    ``default``; for the key ``$USPTO_API_KEY``, ``$USPTO_API_KEY_FILE (PATH)`` or
    ``not set``. An origin never holds a value, so it is safe to print.
    """

    settings: Settings
    origins: Mapping[str, str]


def resolve(
    flags: Mapping[str, Any],
    config_path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings: ``flags`` (None = not given) > environment > config file > defaults.

    ``flags`` is keyed by setting name (``date_from``), as ``harvester.cli`` fills it; a bad
    value is reported with where it came from: the flag (``--from``), the variable
    (``$HARVESTER_FROM``) or the file (``[harvest] from in c.toml``).
    """
    return resolve_with_origins(flags, config_path, environ).settings


def resolve_with_origins(
    flags: Mapping[str, Any],
    config_path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Resolved:
    """``resolve``, also returning where each value came from (``Resolved.origins``).

    The one resolution: ``resolve`` returns its settings, so what ``harvester config
    --show-origin`` prints is what a run with the same flags and environment would use.
    """
    env = os.environ if environ is None else environ
    config = find_config(config_path) if config_path else None
    file_data = load_toml(config) if config else {}
    in_file = config.label if config else ""
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for spec in SPECS:
        section, key = spec.toml
        raw: Any = None
        origin = ""
        if flags.get(spec.name) is not None:
            raw, origin = flags[spec.name], spec.origin_of_flag()
        elif env.get(spec.env):
            raw, origin = env[spec.env], f"${spec.env}"
        elif key in file_data.get(section, {}):
            raw, origin = file_data[section][key], f"[{section}] {key} in {in_file}"
        if raw is None:
            continue
        try:
            values[spec.name] = spec.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"invalid {spec.name} from {origin}: {raw!r} {exc}") from None
        except TypeError:  # a parser's own bug: still one line, never Python's wording
            raise ConfigError(f"invalid {spec.name} from {origin}: {raw!r}") from None
        origins[spec.name] = origin
    api_key, key_origin = read_api_key(env)
    settings = validate(replace(Settings(), **values, api_key=api_key), origins)
    every = {spec.name: origins.get(spec.name, DEFAULT_ORIGIN) for spec in SPECS}
    return Resolved(settings, {**every, "api_key": key_origin})


# A key file is a few dozen bytes; reading at most this much keeps a wrong path (a log, a
# device) from being read whole, and anything longer is not a key file.
_KEY_FILE_MAX_BYTES = 4096


def read_api_key(environ: Mapping[str, str]) -> tuple[Secret | None, str]:
    """The API key and where it came from: ``$USPTO_API_KEY`` (the key itself) or the file
    that ``$USPTO_API_KEY_FILE`` names (``$USPTO_API_KEY_FILE (PATH)``); ``(None, "not set")``
    when neither is set (an empty variable counts as not set).

    Both set is an error, not a precedence: a key left exported in a shell would otherwise
    silently win over (or lose to) the credential a scheduler provides, and a run would
    fail with a 403 that names neither. Every error names the variable or the path, never
    the file's content.
    """
    direct = environ.get(API_KEY_ENV, "").strip()
    path = environ.get(API_KEY_FILE_ENV, "")
    if direct and path:
        raise ConfigError(
            f"both {API_KEY_ENV} and {API_KEY_FILE_ENV} are set: unset one of them"
            " (the key must come from one place)"
        )
    if direct:
        return Secret(direct), f"${API_KEY_ENV}"
    if not path:
        return None, "not set"
    return Secret(_read_key_file(path)), f"${API_KEY_FILE_ENV} ({path})"


def _read_key_file(path: str) -> str:
    """The key held by the file at ``path``: its text without surrounding whitespace (a
    trailing newline is the norm), which must be one word: a file of several lines or
    words is not a key file (``KEY=...`` environment files, a wrong path)."""
    where = f"the API key file {path} (from ${API_KEY_FILE_ENV})"
    try:
        with open(path, "rb") as handle:
            data = handle.read(_KEY_FILE_MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{where} is a directory, not a file") from None
    except PermissionError:
        raise ConfigError(f"{where} cannot be read by this user") from None
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror or type(exc).__name__}") from None
    if len(data) > _KEY_FILE_MAX_BYTES:
        raise ConfigError(f"{where} is too large to hold only a key")
    try:
        key = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not text") from None
    if not key:
        raise ConfigError(f"{where} is empty")
    if any(char.isspace() for char in key):
        raise ConfigError(f"{where} must hold the key alone, on one line")
    return key


def validate(settings: Settings, origins: Mapping[str, str] | None = None) -> Settings:
    """Checks that involve more than one setting; ``origins`` (setting name -> where its
    value came from, as ``resolve`` records it) lets the message say where to fix it."""

    def show(name: str) -> str:
        where = (origins or {}).get(name)
        return f"{name} {getattr(settings, name)} ({'from ' + where if where else 'default'})"

    if settings.date_from and settings.date_to and settings.date_from > settings.date_to:
        raise ConfigError(f"invalid date range: {show('date_from')} is after {show('date_to')}")
    # rows, shard_size and max_window are ceilings: the run uses the smallest that applies
    # (a page never reaches past the window, a shard never holds more than it), so they
    # cannot contradict each other.
    return settings


def spec(name: str) -> Spec:
    return _SPEC_BY_NAME[name]
