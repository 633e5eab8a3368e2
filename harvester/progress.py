"""Progress while a harvest or refresh runs: rich on a terminal, plain or JSON lines otherwise.

The pipeline only calls the small ``Progress`` interface; what the user sees is chosen here.
Counters that the client owns (requests, 429s, retries) are read through a callback so the
display never reaches into HTTP code.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

log = logging.getLogger("harvester.progress")


@dataclass
class Snapshot:
    """The live numbers a display shows."""

    shards_total: int = 0
    shards_done: int = 0
    shards_failed: int = 0
    rows: int = 0
    requests: int = 0
    throttled: int = 0
    retries: int = 0


class Progress:
    """Counts finished shards and rows; subclasses decide how (and whether) to show them."""

    def __init__(self, stats: Callable[[], tuple[int, int, int]] | None = None) -> None:
        self._lock = threading.Lock()
        self._stats = stats
        self.snap = Snapshot()
        self.started = time.monotonic()

    def bind_stats(self, stats: Callable[[], tuple[int, int, int]]) -> None:
        """``stats`` returns (requests, 429s, retries) from the client."""
        self._stats = stats

    def start(self, total: int, done: int, rows: int) -> None:
        with self._lock:
            self.snap.shards_total, self.snap.shards_done, self.snap.rows = total, done, rows
        self._render()

    def add_shards(self, count: int) -> None:
        with self._lock:
            self.snap.shards_total += count
        self._render()

    def shard_finished(self, rows: int, failed: bool = False) -> None:
        with self._lock:
            self.snap.shards_done += 1
            self.snap.rows += rows
            self.snap.shards_failed += int(failed)
        self._render()

    def current(self) -> Snapshot:
        with self._lock:
            snap = Snapshot(**vars(self.snap))
        if self._stats is not None:
            snap.requests, snap.throttled, snap.retries = self._stats()
        return snap

    def eta_seconds(self, snap: Snapshot) -> float | None:
        elapsed = time.monotonic() - self.started
        if snap.shards_done == 0 or elapsed <= 0:
            return None
        return elapsed / snap.shards_done * max(0, snap.shards_total - snap.shards_done)

    def _render(self) -> None:
        """Called after every change; the base class shows nothing (``--quiet``)."""

    def stop(self) -> None:
        """Called once at the end."""


class LineProgress(Progress):
    """One line at a steady interval, for logs and non-terminals (text or JSON)."""

    def __init__(self, interval: float = 10.0, json_lines: bool = False) -> None:
        super().__init__()
        self._interval = interval
        self._json = json_lines
        self._last = 0.0
        self._stopped = False

    def _render(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self._interval:
            return
        self._last = now
        snap = self.current()
        elapsed = now - self.started
        rps = snap.requests / elapsed if elapsed > 0 else 0.0
        eta = self.eta_seconds(snap)
        if self._json:
            record = {
                "event": "progress",
                **vars(snap),
                "requests_per_s": round(rps, 2),
                "eta_s": eta,
            }
            sys.stderr.write(orjson.dumps(record).decode() + "\n")
        else:
            eta_text = "?" if eta is None else f"{eta:.0f}s"
            sys.stderr.write(
                f"progress: shards {snap.shards_done}/{snap.shards_total}"
                f" (failed {snap.shards_failed}), rows {snap.rows:,}, requests {snap.requests}"
                f" ({rps:.1f}/s), retries {snap.retries}, 429s {snap.throttled}, eta {eta_text}\n"
            )
        sys.stderr.flush()

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._render(force=True)


class RichProgress(Progress):
    """A live bar on a terminal: shards, rows, requests/s, retries and 429s, ETA."""

    def __init__(self) -> None:
        super().__init__()
        from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        self._bar = Bar(
            TextColumn("[bold]shards"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[detail]}"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._bar.add_task("harvest", total=None, detail="")
        self._bar.start()

    def _render(self) -> None:
        snap = self.current()
        elapsed = time.monotonic() - self.started
        rps = snap.requests / elapsed if elapsed > 0 else 0.0
        detail = (
            f"rows {snap.rows:,} | req {snap.requests} ({rps:.1f}/s) | retries {snap.retries}"
            f" | 429s {snap.throttled} | failed {snap.shards_failed}"
        )
        self._bar.update(
            self._task, total=snap.shards_total, completed=snap.shards_done, detail=detail
        )

    def stop(self) -> None:
        if self._bar.live.is_started:
            self._render()
            self._bar.stop()


def make_progress(quiet: bool, log_format: str) -> Progress:
    if quiet:
        return Progress()
    if log_format == "json":
        return LineProgress(json_lines=True)
    if sys.stderr.isatty():
        return RichProgress()
    return LineProgress(interval=float(os.environ.get("HARVESTER_PROGRESS_INTERVAL", "10")))
