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
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, TextIO

import orjson

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_INTERVAL = 10.0


def utc_stamp(seconds: float) -> str:
    """A moment (seconds since the epoch) as every log line and progress line shows it:
    ISO 8601 in UTC with milliseconds and ``Z``, e.g. ``2026-11-30T12:30:19.387Z``. UTC,
    not the local zone: lines from machines in different zones sort and compare as text."""
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class Snapshot:
    """The live numbers a display shows, in the vocabulary of docs/operations.md ("Shards
    and rows"), which the run report and ``harvester status`` use too:

    - ``shards_total``: the leaves of the plans this run works on (a split shard counts as
      its pieces; a refresh adds each staging area's plan); 0 while planning;
    - ``shards_done``: of those, committed, by this run or an earlier one (shards planned
      empty are committed at once, without a request);
    - ``shards_failed``: whose last attempt failed; the rest are pending;
    - ``shards_fetched``: fetches this run committed (a shard the closing check fetches
      again counts again);
    - ``rows_written``: rows this run committed (a refresh: into its staging areas).
    """

    shards_total: int = 0
    shards_done: int = 0
    shards_failed: int = 0
    shards_fetched: int = 0
    rows_written: int = 0
    requests: int = 0
    throttled: int = 0
    retries: int = 0
    planning: bool = True  # no plan has joined yet (``start``)

    @property
    def shards_pending(self) -> int:
        return max(0, self.shards_total - self.shards_done - self.shards_failed)


class Progress:
    """Counts shards and rows; shows nothing (``--quiet``). Thread-safe.

    Invariant: ``shards_done + shards_failed <= shards_total``, and at the end of a run the
    three equal what the lake's markers say of the plans this run worked on (the report's
    and ``status``'s counts)."""

    def __init__(self, stats: Callable[[], tuple[int, int, int]] | None = None) -> None:
        self._lock = threading.Lock()
        self._stats = stats
        self.snap = Snapshot()
        self.started = time.monotonic()

    def bind_stats(self, stats: Callable[[], tuple[int, int, int]]) -> None:
        """``stats`` returns (requests, 429s, retries) from the client."""
        self._stats = stats

    def start(self, total: int, done: int, rows: int) -> None:
        """A plan joins the display: ``total`` leaves, ``done`` of them committed already
        (holding ``rows`` rows, not shown: the display counts what this run writes). Adds
        to what is shown, as a refresh works through one plan per staging area."""
        del rows
        with self._lock:
            self.snap.shards_total += total
            self.snap.shards_done += done
            self.snap.planning = False
        self._changed()

    def add_shards(self, count: int) -> None:
        """A shard was split: ``count`` more leaves (its pieces, less itself)."""
        with self._lock:
            self.snap.shards_total += count
        self._changed()

    def refetch(self, done: int, failed: int) -> None:
        """Shards are fetched again (the closing check): ``done`` of them were committed,
        ``failed`` had failed; each is pending until it ends again. The total stays."""
        with self._lock:
            self.snap.shards_done -= done
            self.snap.shards_failed -= failed
        self._changed()

    def shard_finished(self, rows: int, failed: bool = False) -> None:
        """A shard ended: committed with ``rows`` rows, or ``failed``."""
        with self._lock:
            if failed:
                self.snap.shards_failed += 1
            else:
                self.snap.shards_done += 1
                self.snap.shards_fetched += 1
                self.snap.rows_written += rows
        self._changed()

    def current(self) -> Snapshot:
        with self._lock:
            snap = replace(self.snap)
        if self._stats is not None:
            snap.requests, snap.throttled, snap.retries = self._stats()
        return snap

    def eta_seconds(self, snap: Snapshot) -> float | None:
        """The pending shards at the pace of this run's fetches so far (None before one)."""
        elapsed = time.monotonic() - self.started
        if snap.shards_fetched == 0 or elapsed <= 0:
            return None
        return elapsed / snap.shards_fetched * snap.shards_pending

    def figures(self) -> dict[str, Any]:
        """The snapshot plus the derived figures, as every display shows them."""
        snap = self.current()
        elapsed = max(time.monotonic() - self.started, 1e-9)
        eta = self.eta_seconds(snap)
        return {
            **asdict(snap),
            "shards_pending": snap.shards_pending,
            "elapsed_s": round(elapsed, 1),
            "requests_per_s": round(snap.requests / elapsed, 2),
            "rows_per_s": round(snap.rows_written / elapsed, 1),
            "eta_s": None if eta is None else round(eta),
        }

    def _changed(self) -> None:
        """Called after every change; the base class shows nothing."""

    def stop(self) -> None:
        """Called at the end (possibly more than once)."""


def progress_text(f: dict[str, Any]) -> str:
    """One progress line's words, from ``Progress.figures``: "planning" until a plan joins
    (there is no total to show yet), then shards and rows in the one vocabulary."""
    client = (
        f"requests {f['requests']} ({f['requests_per_s']:.1f}/s), retries {f['retries']},"
        f" 429s {f['throttled']}"
    )
    if f["planning"]:
        return f"planning: {client}"
    return (
        f"shards {f['shards_done']:,}/{f['shards_total']:,} done"
        f" ({f['shards_fetched']:,} fetched by this run), {f['shards_failed']:,} failed,"
        f" rows written {f['rows_written']:,} ({f['rows_per_s']:,.0f}/s), {client},"
        f" eta {_eta_text(f['eta_s'])}"
    )


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
        text = progress_text(f)
        stamp = utc_stamp(time.time())
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
        # A run that ended before its first request (a bad --out, bad settings) has nothing
        # to show: its one-line error stands alone.
        if self._ticker.stop() and (self.current().requests or not self.snap.planning):
            self.emit()


class RichProgress(Progress):
    """A live bar on a terminal: shards done of total (or "planning" before there is a
    total), shards fetched and failed, rows written, requests/s, retries, 429s, ETA."""

    def __init__(self, console: Console | None = None) -> None:
        super().__init__()
        from rich.console import Console as RichConsole
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        self._bar = Bar(
            TextColumn("[bold]shards"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            # stderr, like logs: stdout carries the run's summary, which may be piped.
            console=console or RichConsole(stderr=True),
            transient=False,
        )
        self._task = self._bar.add_task("harvest", total=None, count="planning", detail="")
        self._bar.start()
        # Rates move even when no shard finishes: refresh the figures on a clock too.
        self._ticker = _Ticker(0.5, self._changed)

    def detail(self) -> str:
        f = self.figures()
        if f["planning"]:
            return f"{f['requests_per_s']:.1f} req/s ({f['requests']}) | retries {f['retries']}"
        return (
            f"fetched {f['shards_fetched']:,} | failed {f['shards_failed']:,}"
            f" | rows written {f['rows_written']:,} | {f['requests_per_s']:.1f} req/s"
            f" ({f['requests']}) | retries {f['retries']} | 429s {f['throttled']}"
        )

    def _changed(self) -> None:
        with self._lock:
            total, done, planning = (
                self.snap.shards_total,
                self.snap.shards_done,
                self.snap.planning,
            )
        count = "planning" if planning else f"{done:,}/{total:,} done"
        self._bar.update(
            self._task, total=None if planning else total, completed=done, count=count,
            detail=self.detail(),
        )  # fmt: skip

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
