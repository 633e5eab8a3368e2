"""The simulated index: per-day volumes, rows generated on demand, a small mutation overlay.

Nothing here holds the whole corpus. The per-day row counts are computed up front (O(days));
a day's rows are generated from ``(seed, day)`` when a request needs them and kept in a
small LRU bounded by rows. Mutations live in an in-memory overlay per touched day.

Index order is day-major: within a day, a seeded permutation of the base rows (re-seeded by
every ``reorder``), then rows added by mutations in insertion order. A modification is a
delete plus an add, as in Lucene, so a modified row moves to the end of its day.

Base rows carry the stamps of their day's load batches (``rows.base_batches``), until a
reload (``restamp``): then every row, base and added, carries the reload's one stamp, and
the days' stamp bounds (``facts``) say so, so stamp queries stay pruned exactly.
"""

from __future__ import annotations

import datetime as dt
import gc
import heapq
import random
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson

from harvester.sim.config import SimConfig
from harvester.sim.lucene import Node
from harvester.sim.predicate import compile_predicate
from harvester.sim.prune import DAY_FIELD, NONE, SOME, DayFacts, compile_classifier, residual
from harvester.sim.rows import Row, Stamps, base_batches, generate
from harvester.sim.seeding import derive_seed
from harvester.sim.volumes import day_counts, prefix_sums

PLAN_CACHE_ENTRIES = 128
PLAN_CACHE_MATCHES = 4_000_000  # matched positions kept across cached plans (4 bytes each)
LINE = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE  # one truth line
SORT_FIELDS = ("id", "submissionDate", "createDateTime")  # every indexed row has them


class SortKey(NamedTuple):
    """``sort=<field> asc|desc`` (``--sort honour``); ties keep the index order, as Solr's."""

    field: str
    descending: bool = False


def serialize(row: Row) -> bytes:
    """A row exactly as a page carries it (keys sorted, as the service sorts them)."""
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS)


@dataclass(slots=True)
class DayOverlay:
    """One day's mutations: base rows removed, rows appended, and the appended rows' stamps."""

    deleted: set[int] = field(default_factory=set)  # base rows' generation positions
    added: dict[str, Row] = field(default_factory=dict)  # by id, in index order
    created_low: dt.datetime | None = None
    created_high: dt.datetime | None = None

    def note(self, stamps: Stamps) -> None:
        self.note_bounds(stamps.low, stamps.high)

    def note_bounds(self, low: dt.datetime, high: dt.datetime) -> None:
        self.created_low = low if self.created_low is None else min(self.created_low, low)
        self.created_high = high if self.created_high is None else max(self.created_high, high)


@dataclass(slots=True)
class Day:
    """One day's rows in index order: as served, and as indexed where the two differ."""

    rows: list[Row]
    indexed: list[Row] | None = None  # None when every served row is what the index holds

    @property
    def view(self) -> list[Row]:
        return self.indexed if self.indexed is not None else self.rows


@dataclass(slots=True)
class Plan:
    """Where a query's matches are: days in index order and their cumulative counts."""

    node: Node
    days: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=lambda: [0])
    # SOME days only: matching positions within the day (None: too many to keep; refilter).
    matches: dict[int, array[int] | None] = field(default_factory=dict)
    kept: int = 0

    @property
    def total(self) -> int:
        return self.offsets[-1]


class Corpus:
    """Deterministic rows for ``records`` between ``start`` and ``end``, plus mutations."""

    def __init__(
        self,
        seed: int,
        records: int,
        start: dt.date,
        end: dt.date,
        *,
        bad_rows: int = 0,
        cache_rows: int = 250_000,
        string_dates: bool = False,
    ) -> None:
        self.seed = seed
        self.string_dates = string_dates  # --date-field string: see predicate.py
        self.start = start
        self.first = start.toordinal()
        self.last = end.toordinal()  # grows when mutations add new days
        self.base_last = self.last
        self.base_counts = day_counts(seed, records, start, self.last - self.first + 1)
        self.overlays: dict[int, DayOverlay] = {}
        self.version = 0  # bumped by every mutation: cached plans die with it
        self.order_key = "0"  # re-seeded by every reorder
        # The newest reload's stamp (``restamp``): every base row carries it instead of its
        # load batch's. None until the first reload.
        self.reload_stamp: str | None = None
        self.cache_rows = cache_rows
        self._days: OrderedDict[int, Day] = OrderedDict()
        self._cached_rows = 0
        self._plans: OrderedDict[tuple[Node, int], Plan] = OrderedDict()
        self._plan_kept = 0
        self._bad = self._place_bad_rows(bad_rows)
        self.generated_rows = 0  # rows generated since start (a measure of cache misses)

    @classmethod
    def from_config(cls, config: SimConfig) -> Corpus:
        return cls(
            config.seed,
            config.records,
            config.start,
            config.end,
            bad_rows=config.bad_rows,
            cache_rows=config.cache_rows,
            string_dates=config.date_field == "string",
        )

    def _place_bad_rows(self, n: int) -> dict[int, frozenset[int]]:
        if n == 0:
            return {}
        starts = prefix_sums(self.base_counts)
        picked = random.Random(derive_seed(self.seed, "bad")).sample(range(starts[-1]), n)
        by_day: dict[int, set[int]] = {}
        for position in picked:
            offset = bisect_right(starts, position) - 1
            by_day.setdefault(self.first + offset, set()).add(position - starts[offset])
        return {day: frozenset(positions) for day, positions in by_day.items()}

    # --- layout -------------------------------------------------------------------------

    def base_count(self, ordinal: int) -> int:
        if self.first <= ordinal <= self.base_last:
            return self.base_counts[ordinal - self.first]
        return 0

    def count(self, ordinal: int) -> int:
        """Rows the day holds now: its base rows minus deletions plus additions."""
        overlay = self.overlays.get(ordinal)
        if overlay is None:
            return self.base_count(ordinal)
        return self.base_count(ordinal) - len(overlay.deleted) + len(overlay.added)

    def ordinals(self) -> range:
        return range(self.first, self.last + 1)

    @property
    def total(self) -> int:
        return sum(self.count(o) for o in self.ordinals())

    def base_batches(self, ordinal: int) -> tuple[str, ...]:
        """The stamps the day's base rows carry: its load batches, or the last reload's."""
        if self.reload_stamp is not None:
            return (self.reload_stamp,)
        return base_batches(self.seed, dt.date.fromordinal(ordinal))

    def base_bounds(self, ordinal: int) -> tuple[dt.datetime, dt.datetime]:
        """The oldest and newest stamp a base row of the day can carry (no row generated)."""
        batches = self.base_batches(ordinal)
        return dt.datetime.fromisoformat(batches[0]), dt.datetime.fromisoformat(batches[-1])

    def facts(self, ordinal: int) -> DayFacts:
        day = dt.date.fromordinal(ordinal)
        low: dt.datetime | None = None
        high: dt.datetime | None = None
        overlay = self.overlays.get(ordinal)
        if self.base_count(ordinal) > (len(overlay.deleted) if overlay else 0):
            low, high = self.base_bounds(ordinal)
        if overlay is not None and overlay.created_low is not None:
            assert overlay.created_high is not None
            low = overlay.created_low if low is None else min(low, overlay.created_low)
            high = overlay.created_high if high is None else max(high, overlay.created_high)
        return DayFacts({"submissionDate": f"{day.isoformat()}T00:00:00"}, low, high)

    # --- rows -----------------------------------------------------------------------------

    def base_order(self, ordinal: int) -> list[int]:
        """Generation positions of the surviving base rows, in index order."""
        order = list(range(self.base_count(ordinal)))
        random.Random(derive_seed(self.seed, "order", ordinal, self.order_key)).shuffle(order)
        overlay = self.overlays.get(ordinal)
        if overlay is not None and overlay.deleted:
            order = [i for i in order if i not in overlay.deleted]
        return order

    def _materialize(self, ordinal: int) -> Day:
        # Generating a day allocates ~50k containers; the cyclic GC would scan the cached
        # days over and over meanwhile, halving the rate. Rows hold no cycles: pause it.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._build(ordinal)
        finally:
            if enabled:
                gc.enable()

    def _build(self, ordinal: int) -> Day:
        date = dt.date.fromordinal(ordinal)
        count = self.base_count(ordinal)
        batches = self.base_batches(ordinal)
        generated = generate(
            random.Random(derive_seed(self.seed, "day", ordinal)),
            count,
            date,
            Stamps(date, 86400),  # unused: the stamps are the batches'
            b"%d:%d:" % (self.seed, ordinal),
            self._bad.get(ordinal, frozenset()),
            batches,
        )
        self.generated_rows += count
        order = self.base_order(ordinal)
        rows = [generated.rows[i] for i in order]
        indexed = None
        if generated.indexed:
            indexed = [generated.indexed.get(i) or generated.rows[i] for i in order]
        overlay = self.overlays.get(ordinal)
        if overlay is not None and overlay.added:
            rows.extend(overlay.added.values())
            if indexed is not None:
                indexed.extend(overlay.added.values())
        return Day(rows, indexed)

    def day(self, ordinal: int) -> Day:
        """A day's rows, from the LRU or generated (and then cached)."""
        cached = self._days.get(ordinal)
        if cached is not None:
            self._days.move_to_end(ordinal)
            return cached
        day = self._materialize(ordinal)
        self._days[ordinal] = day
        self._cached_rows += len(day.rows)
        while self._cached_rows > self.cache_rows and len(self._days) > 1:
            _, old = self._days.popitem(last=False)
            self._cached_rows -= len(old.rows)
        return day

    def restamp(self, stamp: str) -> None:
        """A reload: every row of the index, base and added, now carries ``stamp``. Base
        rows take it when generated (``base_batches``); added rows are changed here."""
        moment = dt.datetime.fromisoformat(stamp)
        self.reload_stamp = stamp
        for overlay in self.overlays.values():
            for row_id, row in overlay.added.items():
                overlay.added[row_id] = {**row, "createDateTime": stamp}  # key order kept
            overlay.created_low = overlay.created_high = None
            if overlay.added:
                overlay.note_bounds(moment, moment)
        self.invalidate()

    def peek(self, ordinal: int) -> Day:
        """A day's rows without disturbing the LRU (for full scans such as the truth)."""
        return self._days.get(ordinal) or self._materialize(ordinal)

    def invalidate(self, ordinals: Iterable[int] | None = None) -> None:
        """Forget cached rows of the given days (all days if None) and every cached plan."""
        if ordinals is None:
            self._days.clear()
            self._cached_rows = 0
        else:
            for ordinal in ordinals:
                old = self._days.pop(ordinal, None)
                if old is not None:
                    self._cached_rows -= len(old.rows)
        self._plans.clear()
        self._plan_kept = 0

    # --- queries --------------------------------------------------------------------------

    def _filter(self, ordinal: int, node: Node) -> array[int]:
        """Positions of the day's rows matching ``node``, tested on the undecided part only."""
        dates = self.string_dates
        predicate = compile_predicate(
            residual(node, self.facts(ordinal), string_dates=dates), string_dates=dates
        )
        view = self.day(ordinal).view
        return array("I", [i for i, row in enumerate(view) if predicate(row)])

    def plan(self, node: Node) -> Plan:
        """The query's matches per day; exact, cached until the next mutation."""
        key = (node, self.version)
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            return plan
        plan = Plan(node)
        classify = compile_classifier(node, string_dates=self.string_dates)
        for ordinal in self.ordinals():
            n = self.count(ordinal)
            if n == 0:
                continue
            state = classify(self.facts(ordinal))
            if state == NONE:
                continue
            if state == SOME:
                matches = self._filter(ordinal, plan.node)
                n = len(matches)
                if n == 0:
                    continue
                keep = plan.kept + n <= PLAN_CACHE_MATCHES
                plan.matches[ordinal] = matches if keep else None
                plan.kept += n if keep else 0
            plan.days.append(ordinal)
            plan.offsets.append(plan.offsets[-1] + n)
        self._plans[key] = plan
        self._plan_kept += plan.kept
        while len(self._plans) > 1 and (
            len(self._plans) > PLAN_CACHE_ENTRIES or self._plan_kept > PLAN_CACHE_MATCHES
        ):
            _, old = self._plans.popitem(last=False)
            self._plan_kept -= old.kept
        return plan

    def search(
        self, node: Node, start: int, rows: int, *, sort: SortKey | None = None
    ) -> tuple[int, list[Row]]:
        """``numFound`` and the docs at ``[start, start + rows)``, in index order or ``sort``.

        Index order is already ``submissionDate asc`` (day-major), and ``desc`` is the days
        walked backwards, so only other keys pay for ``_sorted``.
        """
        if sort is None or sort.field == DAY_FIELD:
            newest_first = sort is not None and sort.descending
            return self._walk(self.plan(node), start, rows, newest_first)
        return self._sorted(self.plan(node), start, rows, sort)

    def _walk(self, plan: Plan, start: int, rows: int, newest_first: bool) -> tuple[int, list[Row]]:
        """The plan's matches at ``[start, start + rows)``, its days in order or reversed."""
        days, offsets = plan.days, plan.offsets
        if newest_first:  # within a day the index order stays (Solr breaks ties by docid)
            days, offsets = days[::-1], [plan.total - o for o in reversed(offsets)]
        end = min(start + rows, plan.total)
        docs: list[Row] = []
        k = bisect_right(offsets, start) - 1
        position = start
        while position < end:
            ordinal, base = days[k], offsets[k]
            low, high = position - base, min(end, offsets[k + 1]) - base
            served = self.day(ordinal).rows
            if ordinal not in plan.matches:
                docs.extend(served[low:high])
            else:
                matches = plan.matches[ordinal] or self._filter(ordinal, plan.node)
                docs.extend([served[i] for i in matches[low:high]])
            position += high - low
            k += 1
        return plan.total, docs

    def _matches(self, plan: Plan) -> Iterator[tuple[Row, Row]]:
        """Every match of the plan in index order, as ``(indexed, served)``."""
        for ordinal in plan.days:
            day = self.day(ordinal)
            positions: Iterable[int] = range(len(day.rows))
            if ordinal in plan.matches:
                positions = plan.matches[ordinal] or self._filter(ordinal, plan.node)
            view, served = day.view, day.rows
            for i in positions:
                yield view[i], served[i]

    def _sorted(self, plan: Plan, start: int, rows: int, sort: SortKey) -> tuple[int, list[Row]]:
        """Matches ordered by ``sort`` on the indexed value; ties in index order.

        Every match of the query is generated and passed through a heap that keeps the first
        ``start + rows`` (at most ``--max-window``): time O(matches), memory O(start + rows)
        beyond the day cache. Fine for the ~100k-row results tests page by key
        (``id:{last TO *]``, ``start=0``), slow for ``*:*`` on millions of rows.
        """
        want = min(start + rows, plan.total)
        if want <= start:
            return plan.total, []
        name = sort.field
        numbered = enumerate(self._matches(plan))
        if sort.descending:
            top = heapq.nlargest(want, numbered, key=lambda m: (m[1][0][name], -m[0]))
        else:
            top = heapq.nsmallest(want, numbered, key=lambda m: (m[1][0][name], m[0]))
        return plan.total, [served for _, (_, served) in top[start:]]

    # --- ground truth ---------------------------------------------------------------------

    def truth_chunks(self) -> Iterator[bytes]:
        """Every row in index order as JSON lines (one chunk per day), as pages serve them."""
        for ordinal in self.ordinals():
            if self.count(ordinal):
                rows = self.peek(ordinal).rows
                yield b"".join([orjson.dumps(row, option=LINE) for row in rows])

    def cache_info(self) -> dict[str, int]:
        return {
            "cached_days": len(self._days),
            "cached_rows": self._cached_rows,
            "cached_plans": len(self._plans),
            "generated_rows": self.generated_rows,
        }
