"""Numbers and words as people read them in one line: the one way durations, sizes and
counted nouns are written in messages, plans, status, reports and ``show``, and the one
way a mistyped name is answered ("did you mean")."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def duration_text(seconds: float) -> str:
    """``2 d 3 h``, ``1 h 12 min``, ``4 min 5 s``, ``12 s``: two units are enough."""
    total = max(0, round(seconds))
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def size_text(size: int) -> str:
    """``512 B``, ``1.5 KiB``, ``12.3 MiB``, ``4.0 GiB``: bytes in the largest fitting unit."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 run``, ``2 runs``, ``1,234 shards``: a count and its noun, agreeing. ``many`` is
    the plural where adding ``s`` is wrong (``1 day``, ``3 days`` need none; ``1 entry``,
    ``2 entries`` do). The count is written with thousands separators, as every count."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


def nearest(word: str, known: Iterable[str]) -> str | None:
    """The one of ``known`` nearest to a mistyped ``word``, or None when none is near.
    ``difflib``'s default cut-off (0.6) keeps unrelated words out, and one name is offered:
    a list of guesses reads as a second usage message."""
    close = difflib.get_close_matches(word, list(known), n=1)
    return close[0] if close else None


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`` (did you mean --concurrency?)`` or ``""``: what the one-line error of an unknown
    flag, command or config key ends with (``nearest``)."""
    match = nearest(word, known)
    return f" (did you mean {match}?)" if match else ""
