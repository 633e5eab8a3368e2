"""Numbers as people read them in one line: the one way durations and sizes are written in
messages, plans, status, reports and ``show``."""

from __future__ import annotations


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
