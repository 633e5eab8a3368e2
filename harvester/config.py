"""Settings: what a run needs to know, resolved as flag > environment > config file > default.

Every setting is declared once in ``SPECS`` with its TOML location, its environment variable
and its parser, so the three sources cannot drift apart. A bad value fails at start with a
``ConfigError`` naming the setting and where the value came from. The API key is the one
exception: it is read from ``USPTO_API_KEY`` only (never a flag or a file, so it cannot end up
in shell history or a committed config) and is wrapped in ``Secret`` so it never prints.
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from harvester.errors import ConfigError

API_KEY_ENV = "USPTO_API_KEY"
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
    rows: int = 100
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
    reconcile_days: int = 30
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    log_format: str = "text"
    quiet: bool = False
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


def _positive_int(text: Any) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be a whole number >= 1")
    return value


def _non_negative_int(text: Any) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be a whole number >= 0")
    return value


def _positive_float(text: Any) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be a number > 0")
    return value


def _non_negative_float(text: Any) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError("must be a number >= 0")
    return value


def _date(text: Any) -> dt.date:
    if isinstance(text, dt.date):
        return text
    try:
        return dt.date.fromisoformat(str(text))
    except ValueError:
        raise ValueError("must be a date like 2019-01-31") from None


def _url(text: Any) -> str:
    value = str(text).rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


def _template(text: Any) -> str:
    value = str(text)
    if "{start}" not in value or "{end}" not in value:
        raise ValueError("must contain {start} and {end}")
    return value


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(text: Any) -> str:
        if str(text) not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return str(text)

    return parse


def _bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _str(text: Any) -> str:
    return str(text)


@dataclass(frozen=True)
class Spec:
    """Where one setting may come from and how its text becomes a value."""

    name: str
    toml: tuple[str, str]
    env: str
    parse: Callable[[Any], Any]


SPECS: tuple[Spec, ...] = (
    Spec("api_url", ("api", "url"), "HARVESTER_API_URL", _url),
    Spec("rate", ("api", "rate"), "HARVESTER_RATE", _non_negative_float),
    Spec("concurrency", ("api", "concurrency"), "HARVESTER_CONCURRENCY", _positive_int),
    Spec("rows", ("api", "rows"), "HARVESTER_ROWS", _positive_int),
    Spec("max_window", ("api", "max_window"), "HARVESTER_MAX_WINDOW", _positive_int),
    Spec("timeout", ("api", "timeout"), "HARVESTER_TIMEOUT", _positive_float),
    Spec("max_attempts", ("api", "max_attempts"), "HARVESTER_MAX_ATTEMPTS", _positive_int),
    Spec("min_429_wait", ("api", "min_429_wait"), "HARVESTER_MIN_429_WAIT", _non_negative_float),
    Spec("backoff_base", ("api", "backoff_base"), "HARVESTER_BACKOFF_BASE", _positive_float),
    Spec("backoff_max", ("api", "backoff_max"), "HARVESTER_BACKOFF_MAX", _positive_float),
    Spec("date_template", ("api", "date_template"), "HARVESTER_DATE_TEMPLATE", _template),
    Spec("out", ("lake", "out"), "HARVESTER_OUT", _str),
    Spec("s3_endpoint_url", ("lake", "endpoint_url"), "HARVESTER_S3_ENDPOINT_URL", _url),
    Spec("s3_region", ("lake", "region"), "HARVESTER_S3_REGION", _str),
    Spec("date_from", ("harvest", "from"), "HARVESTER_FROM", _date),
    Spec("date_to", ("harvest", "to"), "HARVESTER_TO", _date),
    Spec("shard_size", ("harvest", "shard_size"), "HARVESTER_SHARD_SIZE", _positive_int),
    Spec(
        "shard_attempts", ("harvest", "shard_attempts"), "HARVESTER_SHARD_ATTEMPTS", _positive_int
    ),
    Spec(
        "page_checkpoints",
        ("harvest", "page_checkpoints"),
        "HARVESTER_PAGE_CHECKPOINTS",
        _bool,
    ),
    Spec("lookback_days", ("refresh", "lookback"), "HARVESTER_LOOKBACK", _non_negative_int),
    Spec(
        "reconcile_days",
        ("refresh", "reconcile_days"),
        "HARVESTER_RECONCILE_DAYS",
        _non_negative_int,
    ),
    Spec("log_format", ("log", "format"), "HARVESTER_LOG_FORMAT", _choice("text", "json")),
    Spec("quiet", ("log", "quiet"), "HARVESTER_QUIET", _bool),
)
_SPEC_BY_NAME = {spec.name: spec for spec in SPECS}


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a config file; unknown sections or keys are errors, not silently ignored."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    known = {spec.toml for spec in SPECS}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"config file {path}: '{section}' must be a [section]")
        for key in table:
            if (section, key) not in known:
                raise ConfigError(f"config file {path}: unknown setting [{section}] {key}")
    return data


def resolve(
    flags: Mapping[str, Any],
    config_path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings: ``flags`` (None = not given) > environment > config file > defaults."""
    env = os.environ if environ is None else environ
    file_data = load_toml(config_path) if config_path else {}
    values: dict[str, Any] = {}
    for spec in SPECS:
        section, key = spec.toml
        raw: Any = None
        origin = ""
        if flags.get(spec.name) is not None:
            raw, origin = flags[spec.name], f"--{spec.name.replace('_', '-')}"
        elif env.get(spec.env):
            raw, origin = env[spec.env], f"${spec.env}"
        elif key in file_data.get(section, {}):
            raw, origin = file_data[section][key], f"[{section}] {key} in {config_path}"
        if raw is None:
            continue
        try:
            values[spec.name] = spec.parse(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"invalid {spec.name} from {origin}: {raw!r} {exc}") from None
    key_text = env.get(API_KEY_ENV, "").strip()
    settings = replace(Settings(), **values, api_key=Secret(key_text) if key_text else None)
    return validate(settings)


def validate(settings: Settings) -> Settings:
    """Checks that involve more than one setting."""
    if settings.date_from and settings.date_to and settings.date_from > settings.date_to:
        raise ConfigError(
            f"invalid date range: --from {settings.date_from} is after --to {settings.date_to}"
        )
    if settings.rows > settings.max_window:
        raise ConfigError(
            f"rows ({settings.rows}) cannot exceed max_window ({settings.max_window})"
        )
    if settings.shard_size > settings.max_window:
        raise ConfigError(
            f"shard_size ({settings.shard_size}) cannot exceed max_window ({settings.max_window}):"
            " a shard must be readable without paging past the window"
        )
    if not settings.out:
        raise ConfigError("out (the lake URI) must not be empty")
    if "://" in settings.out and not settings.out.startswith(("s3://", "file://")):
        raise ConfigError(f"out must be a local path or s3://bucket/prefix, not {settings.out!r}")
    return settings


def spec(name: str) -> Spec:
    return _SPEC_BY_NAME[name]
