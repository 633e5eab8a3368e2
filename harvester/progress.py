"""Progress while a harvest or refresh runs: rich on a terminal, plain or JSON lines otherwise.

The pipeline only calls the small ``Progress`` interface; what the user sees is chosen here.
Counters that the client owns (requests, 429s, retries) are read through a callback so the
display never reaches into HTTP code.

Lines are driven by a clock, not by events: a shard of 10,000 rows or a long 429 pause can
go minutes without an event, and a log that falls silent looks like a hung job. So the
line displays print one line every ``interval`` seconds (``HARVESTER_PROGRESS_INTERVAL``,
default 10) from a daemon thread, from the moment they are made (planning included), and a
last line when the run stops.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TextIO

import orjson

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_INTERVAL = 10.0


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
    """Counts finished shards and rows; shows nothing (``--quiet``). Thread-safe."""

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
        self._changed()

    def add_shards(self, count: int) -> None:
        with self._lock:
            self.snap.shards_total += count
        self._changed()

    def shard_finished(self, rows: int, failed: bool = False) -> None:
        with self._lock:
            self.snap.shards_done += 1
            self.snap.rows += rows
            self.snap.shards_failed += int(failed)
        self._changed()

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

    def figures(self) -> dict[str, Any]:
        """The snapshot plus the derived rates, as every display shows them."""
        snap = self.current()
        elapsed = max(time.monotonic() - self.started, 1e-9)
        eta = self.eta_seconds(snap)
        return {
            **asdict(snap),
            "elapsed_s": round(elapsed, 1),
            "requests_per_s": round(snap.requests / elapsed, 2),
            "rows_per_s": round(snap.rows / elapsed, 1),
            "eta_s": None if eta is None else round(eta),
        }

    def _changed(self) -> None:
        """Called after every change; the base class shows nothing."""

    def stop(self) -> None:
        """Called at the end (possibly more than once)."""


class _Ticker:
    """Calls ``tick`` every ``interval`` seconds on a daemon thread until stopped."""

    def __init__(self, interval: float, tick: Callable[[], None]) -> None:
        self._interval = interval
        self._tick = tick
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval):
            self._tick()

    def stop(self) -> bool:
        """Stop the thread; True only the first time."""
        if self._stopped.is_set():
            return False
        self._stopped.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        return True


def _eta_text(eta: float | None) -> str:
    if eta is None:
        return "?"
    return str(dt.timedelta(seconds=int(eta)))


class LineProgress(Progress):
    """One line every ``interval`` seconds, for logs and non-terminals (text or JSON).

    JSON lines have the shape of ``--log-format json`` log records (time, level, logger,
    message) plus the figures as fields, so one parser reads both.
    """

    def __init__(
        self,
        interval: float = DEFAULT_INTERVAL,
        json_lines: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        super().__init__()
        self._json = json_lines
        self._stream = stream
        self._write_lock = threading.Lock()
        self._ticker = _Ticker(interval, self.emit)

    def line(self) -> str:
        f = self.figures()
        text = (
            f"shards {f['shards_done']}/{f['shards_total']} (failed {f['shards_failed']}),"
            f" rows {f['rows']:,} ({f['rows_per_s']:,.0f}/s), requests {f['requests']}"
            f" ({f['requests_per_s']:.1f}/s), retries {f['retries']}, 429s {f['throttled']},"
            f" eta {_eta_text(f['eta_s'])}"
        )
        now = dt.datetime.now().astimezone()
        stamp = now.strftime("%Y-%m-%d %H:%M:%S") + f",{now.microsecond // 1000:03d}"
        if self._json:
            record = {
                "time": stamp,
                "level": "info",
                "logger": "harvester.progress",
                "message": text,
                "event": "progress",
                **f,
            }
            return orjson.dumps(record).decode()
        return f"{stamp} INFO harvester.progress: {text}"

    def emit(self) -> None:
        """Write one line now (the ticker calls this; so does ``stop``)."""
        text = self.line()
        stream = self._stream or sys.stderr  # looked up late: tests swap sys.stderr
        with self._write_lock:
            stream.write(text + "\n")
            stream.flush()

    def stop(self) -> None:
        if self._ticker.stop():
            self.emit()


class RichProgress(Progress):
    """A live bar on a terminal: shards done of total, rows, requests/s, retries, 429s, ETA."""

    def __init__(self, console: Console | None = None) -> None:
        super().__init__()
        from rich.console import Console as RichConsole
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        self._bar = Bar(
            TextColumn("[bold]shards"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            # stderr, like logs: stdout carries the run's summary, which may be piped.
            console=console or RichConsole(stderr=True),
            transient=False,
        )
        self._task = self._bar.add_task("harvest", total=None, detail="")
        self._bar.start()
        # Rates move even when no shard finishes: refresh the figures on a clock too.
        self._ticker = _Ticker(0.5, self._changed)

    def detail(self) -> str:
        f = self.figures()
        return (
            f"rows {f['rows']:,} | {f['requests_per_s']:.1f} req/s ({f['requests']})"
            f" | retries {f['retries']} | 429s {f['throttled']} | failed {f['shards_failed']}"
        )

    def _changed(self) -> None:
        with self._lock:
            total, done = self.snap.shards_total, self.snap.shards_done
        self._bar.update(self._task, total=total or None, completed=done, detail=self.detail())

    def stop(self) -> None:
        if self._ticker.stop():
            self._changed()
            self._bar.stop()


def make_progress(quiet: bool, log_format: str, stream: TextIO | None = None) -> Progress:
    """``--quiet``: nothing; ``--log-format json``: JSON lines; a terminal: the rich bar;
    anything else (a file, a pipe, a CI log): plain lines."""
    if quiet:
        return Progress()
    interval = float(os.environ.get("HARVESTER_PROGRESS_INTERVAL", str(DEFAULT_INTERVAL)))
    if log_format == "json":
        return LineProgress(interval, json_lines=True, stream=stream)
    target = stream or sys.stderr
    if target.isatty():
        return RichProgress()
    return LineProgress(interval, stream=stream)
