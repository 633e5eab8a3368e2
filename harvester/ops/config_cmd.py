"""``harvester config``: the settings a run would use, and where each came from.

It prints what ``config.resolve_with_origins`` returns, the very resolution every command
runs (flag > environment > config file > default), so what it shows is what a run with
the same flags, variables and ``--config`` would use. The text form is a valid config
file: one ``key = value`` line per setting under its ``[section]``, a setting with no
value (``--from`` not given: probed) as a comment, and ``--show-origin`` adds a ``# from``
comment to each line; ``harvester config > mine.toml`` gives a file that resolves to the
same settings. The API key is never shown: only whether it is set (``***``) and which
variable gave it.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from harvester.config import (
    API_KEY_ENV,
    API_KEY_FILE_ENV,
    DEFAULT_ORIGIN,
    SPECS,
    Resolved,
    Spec,
)

# Comments line up in this column unless a line is longer (a long URL or template).
_COMMENT_COLUMN = 40


def toml_value(value: Any) -> str:
    """``value`` as TOML: a basic string, a bool, a number or a local date.

    JSON string escapes are TOML's, with two exceptions avoided here: no ``\\uD83D``
    surrogate pairs (``ensure_ascii=False`` keeps the character itself) and DEL, which
    TOML wants escaped and JSON leaves alone.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def _sections() -> list[tuple[str, list[Spec]]]:
    """The config file's sections in the order ``SPECS`` first names them."""
    grouped: dict[str, list[Spec]] = {}
    for spec in SPECS:
        grouped.setdefault(spec.toml[0], []).append(spec)
    return list(grouped.items())


def _origin_text(origin: str) -> str:
    return "default" if origin == DEFAULT_ORIGIN else f"from {origin}"


def key_line(resolved: Resolved, show_origin: bool) -> str:
    """The API key as a comment: ``***`` or ``(not set)``, never a character of it."""
    if resolved.settings.api_key:
        shown = "***"
        if show_origin:
            shown += f"  # from {resolved.origins['api_key']}"
    else:
        shown = f"(not set: set {API_KEY_ENV}, or {API_KEY_FILE_ENV} to a file holding it)"
    return f"# API key: {shown}"


def render(resolved: Resolved, show_origin: bool) -> list[str]:
    """The resolved settings as config-file lines (see the module's docstring)."""
    lines = [
        "# harvester settings: flag > environment (HARVESTER_*) > config file > default",
        key_line(resolved, show_origin),
    ]
    for section, specs in _sections():
        lines += ["", f"[{section}]"]
        for spec in specs:
            value = getattr(resolved.settings, spec.name)
            key = spec.toml[1]
            if value is None:
                text = f"# {key} = (not set: {spec.shown_default()})"
            else:
                text = f"{key} = {toml_value(value)}"
            if show_origin:
                origin = _origin_text(resolved.origins[spec.name])
                text = f"{text.ljust(_COMMENT_COLUMN)}  # {origin}"
            lines.append(text)
    return lines


def to_json(resolved: Resolved) -> dict[str, Any]:
    """The settings (``Settings.public_dict``: the key only as ``api_key_set``) and the
    origin of each, the key's included."""
    return {"settings": resolved.settings.public_dict(), "origins": dict(resolved.origins)}
