"""Progress while a harvest or refresh runs: rich on a terminal, plain or JSON lines otherwise.

The pipeline only calls the small ``Progress`` interface; what the user sees is chosen here.
Counters that the client owns (requests, 429s, retries) are read through a callback so the
display never reaches into HTTP code.

Lines are driven by a clock, not by events: a shard of 10,000 rows or a long 429 pause can
go minutes without an event, and a log that falls silent looks like a hung job. So the
line displays print one line every ``interval`` seconds (``HARVESTER_PROGRESS_INTERVAL``,
default 10) from a daemon thread, from the moment they are made (planning included), and a
last line when the run stops.

What the displays count as work: the shards that must be fetched. Shards planned empty
(the months up to today the service holds nothing of yet) are committed at once without a
request (``session.pending_shards``); they stay in the vocabulary's totals (``Snapshot``),
but a display shows them apart ("93 planned empty"), never as work done: a new lake's first
line said "shards 93/141 done" before a single fetch.

Rates and the ETA are measured, not guessed (``RateMeter``): what was observed over the
last ``RATE_WINDOW`` seconds, from the moment the first plan joined (probing and planning
take no part: they made the first ETA of a short run say minutes). No ETA is shown before
there is a rate to base it on.

The terminal line is laid out for the terminal's width (``fit``): what is being done,
shards done of the total, the rate and the ETA first, detail (rows, requests, retries,
elapsed time, zero counters) only as room allows, the bar in what is left. Nothing is left
to rich to cut short.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, TextIO

import orjson

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions
    from rich.text import Text

DEFAULT_INTERVAL = 10.0
RATE_WINDOW = 60.0  # seconds: rates are what was observed over about this much recent time
MIN_SPAN = 2.0  # seconds: a rate measured over less is noise, not a measurement

Clock = Callable[[], float]


def utc_stamp(seconds: float) -> str:
    """A moment (seconds since the epoch) as every log line and progress line shows it:
    ISO 8601 in UTC with milliseconds and ``Z``, e.g. ``2026-11-30T12:30:19.387Z``. UTC,
    not the local zone: lines from machines in different zones sort and compare as text."""
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class RateMeter:
    """A rate observed over a recent window: a running total is sampled at moments
    (``add``), and ``rate`` is its growth from the window's oldest sample to the newest,
    over the time from that oldest sample to now.

    Invariants: samples ascend in time; at least the two newest are kept, however old (a
    slow run, one shard a few minutes, still has a rate; time without growth lowers it, so
    a stalled run's rate falls towards 0 instead of standing still); older ones go once a
    newer one is at or before the window's start. Not thread-safe: ``Progress`` holds its
    lock around it."""

    def __init__(self, window: float = RATE_WINDOW, min_span: float = MIN_SPAN) -> None:
        self._window = window
        self._min_span = min_span
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, at: float, total: float) -> None:
        """The running total was ``total`` at ``at`` (a clock's seconds)."""
        if self._samples and at < self._samples[-1][0]:
            at = self._samples[-1][0]  # a clock never runs back; keep the order anyway
        self._samples.append((at, total))
        self._prune(at)

    def _prune(self, now: float) -> None:
        start = now - self._window
        while len(self._samples) > 2 and self._samples[1][0] <= start:
            self._samples.popleft()

    def rate(self, now: float) -> float | None:
        """Growth per second over the window, or None before ``min_span`` was observed."""
        self._prune(now)
        if not self._samples:
            return None
        since, base = self._samples[0]
        span = now - since
        if span < self._min_span:
            return None
        return (self._samples[-1][1] - base) / span


@dataclass
class Snapshot:
    """The live numbers a display shows, in the vocabulary of docs/operations.md ("Shards
    and rows"), which the run report and ``harvester status`` use too:

    - ``shards_total``: the leaves of the plans this run works on (a split shard counts as
      its pieces; a refresh adds each staging area's plan); 0 while planning;
    - ``shards_done``: of those, committed, by this run or an earlier one (shards planned
      empty are committed at once, without a request);
    - ``shards_empty``: of ``shards_done``, the shards planned empty: no work, so the
      displays leave them out of done and total alike (``work_done``, ``work_total``);
    - ``shards_failed``: whose last attempt failed; the rest are pending;
    - ``shards_fetched``: fetches this run committed (a shard the closing check fetches
      again counts again);
    - ``rows_written``: rows this run committed (a refresh: into its staging areas);
    - ``plan_months``: while planning, the months of the range being counted (0: not yet).
    """

    shards_total: int = 0
    shards_done: int = 0
    shards_failed: int = 0
    shards_fetched: int = 0
    shards_empty: int = 0
    rows_written: int = 0
    requests: int = 0
    throttled: int = 0
    retries: int = 0
    planning: bool = True  # no plan has joined yet (``start``)
    plan_months: int = 0

    @property
    def shards_pending(self) -> int:
        return max(0, self.shards_total - self.shards_done - self.shards_failed)

    @property
    def work_total(self) -> int:
        """The shards that need a fetch: the total less those planned empty."""
        return max(0, self.shards_total - self.shards_empty)

    @property
    def work_done(self) -> int:
        """Of ``work_total``, those committed (by this run or an earlier one)."""
        return max(0, self.shards_done - self.shards_empty)


class Progress:
    """Counts shards and rows; shows nothing (``--quiet``). Thread-safe.

    Invariant: ``shards_done + shards_failed <= shards_total``, and at the end of a run the
    three equal what the lake's markers say of the plans this run worked on (the report's
    and ``status``'s counts). ``clock`` (seconds, monotonic) is what rates are measured by;
    tests pass their own."""

    def __init__(
        self,
        stats: Callable[[], tuple[int, int, int]] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._stats = stats
        self._clock = clock
        self.snap = Snapshot()
        self.started = clock()
        self._fetch_started: float | None = None  # when the first plan joined
        self._plan_base = 0  # requests when the months began to be counted
        self._ended = 0  # shards that ended (done or failed) since the first plan joined
        self._ends = RateMeter()
        self._rows = RateMeter()
        self._requests = RateMeter()

    def bind_stats(self, stats: Callable[[], tuple[int, int, int]]) -> None:
        """``stats`` returns (requests, 429s, retries) from the client."""
        self._stats = stats

    def planning(self, months: int) -> None:
        """Planning counts the range's ``months`` now: the display says so, with the count
        queries sent from here on ("planning: 45 counts, 92 months")."""
        requests = self._stats()[0] if self._stats is not None else 0
        with self._lock:
            self.snap.plan_months = months
            self._plan_base = requests
        self._changed()

    def planned_empty(self, count: int) -> None:
        """``count`` leaves of a plan that joins (``start``, before or after this call)
        were planned empty: committed without a request, they are no work done."""
        with self._lock:
            self.snap.shards_empty += count
        self._changed()

    def start(self, total: int, done: int, rows: int) -> None:
        """A plan joins the display: ``total`` leaves, ``done`` of them committed already
        (holding ``rows`` rows, not shown: the display counts what this run writes). Adds
        to what is shown, as a refresh works through one plan per staging area. The first
        one starts the rates' clock: planning is not fetching."""
        del rows
        now = self._clock()
        with self._lock:
            self.snap.shards_total += total
            self.snap.shards_done += done
            self.snap.planning = False
            if self._fetch_started is None:
                self._fetch_started = now
            self._ends.add(now, self._ended)
            self._rows.add(now, self.snap.rows_written)
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
        now = self._clock()
        with self._lock:
            if failed:
                self.snap.shards_failed += 1
            else:
                self.snap.shards_done += 1
                self.snap.shards_fetched += 1
                self.snap.rows_written += rows
            self._ended += 1
            self._ends.add(now, self._ended)
            self._rows.add(now, self.snap.rows_written)
        self._changed()

    def current(self) -> Snapshot:
        with self._lock:
            snap = replace(self.snap)
        if self._stats is not None:
            snap.requests, snap.throttled, snap.retries = self._stats()
        return snap

    def figures(self) -> dict[str, Any]:
        """The snapshot plus the derived figures, as every display shows them: rates over
        the recent window (``RateMeter``; until one is measured, the average since the
        first plan joined, or since the start for requests), the ETA from the rate shards
        ended at (None until measured)."""
        snap = self.current()
        now = self._clock()
        with self._lock:
            self._requests.add(now, snap.requests)
            requests_rate = self._requests.rate(now)
            rows_rate = self._rows.rate(now)
            ends_rate = self._ends.rate(now)
            fetching = None if self._fetch_started is None else now - self._fetch_started
            plan_counts = max(0, snap.requests - self._plan_base)
        elapsed = max(now - self.started, 1e-9)
        if requests_rate is None:
            requests_rate = snap.requests / elapsed
        if rows_rate is None:
            rows_rate = snap.rows_written / fetching if fetching else 0.0
        pending = snap.shards_pending
        eta: float | None = None
        if pending == 0 and not snap.planning:
            eta = 0.0
        elif ends_rate:  # None (not measured yet) or 0 (nothing ended lately): no ETA
            eta = pending / ends_rate
        return {
            **asdict(snap),
            "shards_pending": pending,
            "work_total": snap.work_total,
            "work_done": snap.work_done,
            "plan_counts": plan_counts,
            "elapsed_s": round(elapsed, 1),
            "requests_per_s": round(requests_rate, 2),
            "rows_per_s": round(rows_rate, 1),
            "eta_s": None if eta is None else round(eta),
        }

    def _changed(self) -> None:
        """Called after every change; the base class shows nothing."""

    def stop(self) -> None:
        """Called at the end (possibly more than once)."""


def _planning_words(f: dict[str, Any]) -> str:
    """``45 counts, 92 months`` once the months are being counted, else ``""``."""
    if not f["plan_months"]:
        return ""
    return f"{f['plan_counts']:,} counts, {f['plan_months']:,} months"


def progress_text(f: dict[str, Any]) -> str:
    """One progress line's words, from ``Progress.figures``: "planning" until a plan joins
    (there is no total to show yet), then shards to fetch and rows in the one vocabulary,
    the shards planned empty apart."""
    client = (
        f"requests {f['requests']} ({f['requests_per_s']:.1f}/s), retries {f['retries']},"
        f" 429s {f['throttled']}"
    )
    if f["planning"]:
        words = _planning_words(f)
        return f"planning: {words + ', ' if words else ''}{client}"
    empty = f" {f['shards_empty']:,} planned empty," if f["shards_empty"] else ""
    return (
        f"shards {f['work_done']:,}/{f['work_total']:,} done"
        f" ({f['shards_fetched']:,} fetched by this run), {f['shards_failed']:,} failed,{empty}"
        f" rows written {f['rows_written']:,} ({f['rows_per_s']:,.0f}/s), {client},"
        f" eta {_eta_text(f['eta_s'])}"
    )


def _eta_text(eta: float | None) -> str:
    if eta is None:
        return "?"
    return str(dt.timedelta(seconds=int(eta)))


# -- the terminal line, laid out for its width ---------------------------------------------

SEPARATOR = "  "
BAR_MIN = 10  # a bar narrower than this says nothing the count does not
BAR_WANT = 20  # the bar's width before detail gets room (pieces ranked above DETAIL)
BAR_MAX = 40
DETAIL = 7  # pieces ranked above this are detail


@dataclass(frozen=True)
class Piece:
    """One piece of the terminal line. ``rank``: lower is kept longer when the line is
    narrow; ``bar``: the share done, for the bar (its text is drawn to the room left)."""

    text: str
    rank: int
    style: str = ""
    bar: float | None = None

    @property
    def width(self) -> int:
        return BAR_MIN if self.bar is not None else len(self.text)


def _counter(name: str, value: int, rank_if_any: int, rank_if_zero: int, style: str) -> Piece:
    """A counter of trouble (failed, 429s, retries): in front when it is not 0, the first
    thing dropped when it is."""
    if value:
        return Piece(f"{name} {value:,}", rank_if_any, style)
    return Piece(f"{name} 0", rank_if_zero)


def line_pieces(f: dict[str, Any], label: str) -> list[Piece]:
    """The pieces of the terminal line, in the order they are shown, ranked: what is being
    done (``label``), shards done of total, the ETA and the rate first; then failures, the
    bar, 429s, rows, requests per second, retries, elapsed time, planned-empty shards,
    fetches; zero counters last."""
    elapsed = Piece(f"elapsed {_eta_text(f['elapsed_s'])}", 10, "dim")
    requests = Piece(f"{f['requests_per_s']:.1f} req/s", 8)
    retries = _counter("retries", f["retries"], 9, 14, "yellow")
    throttled = _counter("429s", f["throttled"], 6, 15, "yellow")
    if f["planning"]:
        words = _planning_words(f) or f"{f['requests']:,} requests"
        return [
            Piece(label, 0, "bold"),
            Piece(f"planning: {words}", 1),
            Piece(f"{f['requests_per_s']:.1f} req/s", 2),
            throttled,
            retries,
            elapsed,
        ]
    total, done = f["work_total"], f["work_done"]
    share = done / total if total else 1.0
    empty = f["shards_empty"]
    return [
        Piece(label, 0, "bold"),
        Piece("", 5, bar=share),
        Piece(f"{done:,}/{total:,} shards", 1, "bold"),
        Piece(f"{f['rows_per_s']:,.0f} rows/s", 3),
        Piece(f"eta {_eta_text(f['eta_s'])}", 2, "cyan"),
        _counter("failed", f["shards_failed"], 4, 13, "red"),
        throttled,
        Piece(f"rows {f['rows_written']:,}", 7),
        requests,
        retries,
        Piece(f"fetched {f['shards_fetched']:,}", 12),
        *([Piece(f"{empty:,} planned empty", 11, "dim")] if empty else []),
        elapsed,
    ]


def fit(pieces: list[Piece], width: int) -> list[tuple[str, str]]:
    """The pieces that fit in ``width`` columns, as (text, style) segments in their order,
    separators included: taken by rank while they fit (a later, shorter one may still fit
    where a longer one did not); the bar, once taken at ``BAR_MIN``, widens to ``BAR_WANT``
    before detail is taken, and into whatever room is left at the end, up to ``BAR_MAX``.
    At least the first-ranked piece is shown, cut to the width."""
    order = sorted(range(len(pieces)), key=lambda i: pieces[i].rank)
    chosen: list[int] = []
    used = 0
    bar = 0  # the bar's width, once taken
    for i in order:
        if bar and pieces[i].rank > DETAIL and bar < BAR_WANT:
            grown = min(BAR_WANT, bar + width - used)
            used += grown - bar
            bar = grown
        need = pieces[i].width + (len(SEPARATOR) if chosen else 0)
        if used + need <= width:
            chosen.append(i)
            used += need
            bar = BAR_MIN if pieces[i].bar is not None else bar
    if not chosen:
        top = pieces[order[0]]
        return [(top.text[: max(0, width)], top.style)]
    segments: list[tuple[str, str]] = []
    for n, i in enumerate(sorted(chosen)):
        piece = pieces[i]
        if n:
            segments.append((SEPARATOR, ""))
        if piece.bar is None:
            segments.append((piece.text, piece.style))
            continue
        size = min(BAR_MAX, bar + width - used)
        filled = round(size * min(1.0, max(0.0, piece.bar)))
        segments.append(("━" * filled, "green"))
        segments.append(("━" * (size - filled), "grey37"))
    return segments


def progress_line(f: dict[str, Any], width: int, label: str = "run") -> str:
    """The terminal line for ``width`` columns, as plain text (``fit`` of ``line_pieces``)."""
    return "".join(text for text, _ in fit(line_pieces(f, label), width))


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
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(clock=clock)
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


class _LiveLine:
    """The renderable rich's live display redraws: the line for the width it is given."""

    def __init__(self, progress: RichProgress) -> None:
        self._progress = progress

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Text]:
        yield self._progress.render(options.max_width)


class RichProgress(Progress):
    """One live line on a terminal, redrawn twice a second and laid out for the terminal's
    width (``fit``): ``label`` (what is being done: ``harvest``, ``refresh``, ``repair``),
    shards done of total with a bar, rows per second, ETA, then detail as room allows.
    "planning: N counts, M months" before there is a total."""

    def __init__(
        self, console: Console | None = None, label: str = "run", clock: Clock = time.monotonic
    ) -> None:
        super().__init__(clock=clock)
        from rich.console import Console as RichConsole
        from rich.live import Live

        self.label = label
        self._live = Live(
            _LiveLine(self),
            # stderr, like logs: stdout carries the run's summary, which may be piped.
            console=console or RichConsole(stderr=True),
            refresh_per_second=2,  # rates move even when no shard finishes
            transient=False,
        )
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._live.start()

    def render(self, width: int) -> Text:
        """The line for ``width`` columns, styled; never wrapped or ellipsised by rich."""
        from rich.text import Text

        text = Text(no_wrap=True, overflow="crop", end="")
        for part, style in fit(line_pieces(self.figures(), self.label), width):
            text.append(part, style)
        return text

    def stop(self) -> None:
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self._live.stop()  # draws the last line and leaves it


def make_progress(
    quiet: bool, log_format: str, stream: TextIO | None = None, label: str = "run"
) -> Progress:
    """``--quiet``: nothing; ``--log-format json``: JSON lines; a terminal: the rich line
    (``label`` says what is being done); anything else (a file, a pipe, a CI log): plain
    lines."""
    if quiet:
        return Progress()
    interval = float(os.environ.get("HARVESTER_PROGRESS_INTERVAL", str(DEFAULT_INTERVAL)))
    if log_format == "json":
        return LineProgress(interval, json_lines=True, stream=stream)
    target = stream or sys.stderr
    if target.isatty():
        return RichProgress(label=label)
    return LineProgress(interval, stream=stream)
