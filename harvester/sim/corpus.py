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

**Answering from facts** (``fast``, the default): a query the harvester sends names only
``submissionDate``, ``createDateTime`` and ``id``, and of a day's base rows those are known
without generating them: the day's ``rows.Skeleton`` (ids and load delays, from the same
draws, ~5 times cheaper than the rows) and its histogram of load delays (kept for good: a
few ints a day). All rows of one load share its stamp, so a day the pruner leaves
undecided (SOME) is decided per load (``_by_delay``): all, none, or a test of the id, which
the load's sorted ids answer by bisection; rows added by mutations are tested as they are
and deleted base rows taken off; only a query on other fields generates the day. The days
a query can match are narrowed first: by its ``submissionDate`` range (``_mail_days``), and
for ``id:X`` of a served row to that row's day (``_candidate_days``). A page of a query
matching a small share of a day builds just the rows it serves (``rows.rows_at``); a larger
share generates the day whole and pages from the LRU, as before. The answers are exactly
the reference path's (``fast=False``: every SOME day generated and filtered, whole days
served), which ``tests/test_sim_facts.py`` proves on random queries and mutations. Memory
is bounded by rows, not by the corpus: the day LRU (``cache_rows``), the skeleton LRU
(``skeleton_rows``, ~100 bytes a row), the served-id LRU (``ORIGINS``) and O(days) facts.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import heapq
import random
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson

from harvester.sim.config import SimConfig
from harvester.sim.lucene import And, MatchAll, Node, Not, Or, Range, Term
from harvester.sim.predicate import compile_predicate
from harvester.sim.prune import (
    DAY_FIELD,
    NONE,
    NOTHING,
    SOME,
    STAMP_FIELD,
    DayFacts,
    compile_classifier,
    residual,
)
from harvester.sim.rows import (
    LOAD_DELAY,
    Row,
    Skeleton,
    Stamps,
    base_batches,
    generate,
    rows_at,
    skeleton,
)
from harvester.sim.seeding import derive_seed
from harvester.sim.volumes import day_counts, prefix_sums

PLAN_CACHE_ENTRIES = 128
PLAN_CACHE_MATCHES = 4_000_000  # matched positions kept across cached plans (4 bytes each)
LINE = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE  # one truth line
SORT_FIELDS = ("id", "submissionDate", "createDateTime")  # every indexed row has them
# What a skeleton knows of every base row, exactly as the index holds it (bad rows keep
# their real id and day in the index; DROPPABLE never drops these).
SKELETON_FIELDS = frozenset(SORT_FIELDS)
SKELETON_ROWS_PER_CACHED_ROW = 4  # a skeleton row is ~100 bytes, a generated row ~1 KiB
DELAYS = max(LOAD_DELAY) + 1  # the weekly loads a base row may go out in
# A query matching at least this share of a day pages through it from a whole generated,
# cached day (6.5 us a row, once); a smaller share builds only each page's rows (~15 us a
# row: an office action's shared fields are made for each row alone).
WHOLE_DAY_SHARE = 0.25
ORIGINS = 100_000  # ids of served rows whose day is remembered (``id:X`` asks one day)


@functools.lru_cache(maxsize=1024)
def fields_of(node: Node) -> frozenset[str]:
    """The fields the query's leaves name."""
    if isinstance(node, Term | Range):
        return frozenset((node.field,))
    if isinstance(node, And | Or):
        return frozenset().union(*(fields_of(c) for c in node.children))
    if isinstance(node, Not):
        return fields_of(node.child)
    return frozenset()


def _id_span(node: Node, ids: list[str]) -> int | None:
    """Rows of the sorted ``ids`` that a lone id Term or Range matches (None: not one).

    The predicate's semantics for a string field: Term is equality, Range a lexicographic
    interval with its ends included or not; every indexed id is a string."""
    if isinstance(node, Term) and node.field == "id":
        return bisect_right(ids, node.value) - bisect_left(ids, node.value)
    if not isinstance(node, Range) or node.field != "id":
        return None
    if node.low is None:
        lo = 0
    else:
        lo = (bisect_left if node.include_low else bisect_right)(ids, node.low)
    if node.high is None:
        hi = len(ids)
    else:
        hi = (bisect_right if node.include_high else bisect_left)(ids, node.high)
    return max(0, hi - lo)


def _id_test(node: Node, string_dates: bool) -> bool | Callable[[str], bool]:
    """``node`` (a residual naming only ``id``, or decided) as a test of an id string:
    True or False when decided, else the predicate itself on a row holding just the id."""
    if isinstance(node, MatchAll):
        return True
    if node == NOTHING:
        return False
    if isinstance(node, Range) and node.field == "id" and node.low is not None:
        low, high = node.low, node.high
        if high is not None and node.include_low and not node.include_high:
            return lambda x: low <= x < high  # the shards' id:[lo TO hi}, the common case
    predicate = compile_predicate(node, string_dates=string_dates)
    return lambda x: predicate({"id": x})


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
        fast: bool = True,
        skeleton_rows: int | None = None,
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
        # Answer from day facts where they suffice (False: the reference path, which
        # generates every undecided day; tests compare the two).
        self.fast = fast
        self.skeleton_rows = (
            skeleton_rows
            if skeleton_rows is not None
            else SKELETON_ROWS_PER_CACHED_ROW * cache_rows
        )
        self._skeletons: OrderedDict[int, Skeleton] = OrderedDict()
        self._skeleton_kept = 0
        self._histograms: dict[int, tuple[int, ...]] = {}  # for good: O(days)
        self._weekly: dict[int, tuple[tuple[str, ...], dt.datetime, dt.datetime]] = {}
        self._facts: dict[int, DayFacts] = {}  # valid for one version (``_facts_version``)
        self._facts_version = self.version
        self._origins: OrderedDict[str, int] = OrderedDict()  # served id -> its mail day

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

    def _weekly_batches(self, ordinal: int) -> tuple[tuple[str, ...], dt.datetime, dt.datetime]:
        """The day's weekly load stamps and their bounds: a function of seed and day, kept."""
        known = self._weekly.get(ordinal)
        if known is None:
            batches = base_batches(self.seed, dt.date.fromordinal(ordinal))
            first, last = (dt.datetime.fromisoformat(batches[i]) for i in (0, -1))
            known = self._weekly[ordinal] = (batches, first, last)
        return known

    def base_batches(self, ordinal: int) -> tuple[str, ...]:
        """The stamps the day's base rows carry: its load batches, or the last reload's."""
        if self.reload_stamp is not None:
            return (self.reload_stamp,)
        return self._weekly_batches(ordinal)[0]

    def base_bounds(self, ordinal: int) -> tuple[dt.datetime, dt.datetime]:
        """The oldest and newest stamp a base row of the day can carry (no row generated)."""
        if self.reload_stamp is not None:
            moment = dt.datetime.fromisoformat(self.reload_stamp)
            return moment, moment
        _, first, last = self._weekly_batches(ordinal)
        return first, last

    def facts(self, ordinal: int) -> DayFacts:
        """What the pruner knows of the day; kept until the next mutation (every mutation
        bumps ``version``; a reload or ``invalidate`` forgets them too)."""
        if self._facts_version != self.version:
            self._facts.clear()
            self._facts_version = self.version
        known = self._facts.get(ordinal)
        if known is None:
            known = self._facts[ordinal] = self._day_facts(ordinal)
        return known

    def _day_facts(self, ordinal: int) -> DayFacts:
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

    # --- day facts: skeletons and histograms ----------------------------------------------

    def _day_rng(self, ordinal: int) -> random.Random:
        """The day's row stream: ``generate``, ``skeleton`` and ``rows_at`` all start here."""
        return random.Random(derive_seed(self.seed, "day", ordinal))

    def _id_prefix(self, ordinal: int) -> bytes:
        return b"%d:%d:" % (self.seed, ordinal)

    def skeleton(self, ordinal: int) -> Skeleton:
        """The day's base rows' ids and load delays (LRU bounded by ``skeleton_rows``)."""
        known = self._skeletons.get(ordinal)
        if known is not None:
            self._skeletons.move_to_end(ordinal)
            return known
        count = self.base_count(ordinal)
        known = skeleton(self._day_rng(ordinal), count, self._id_prefix(ordinal))
        self._histograms.setdefault(ordinal, known.histogram())
        self._skeletons[ordinal] = known
        self._skeleton_kept += count
        while self._skeleton_kept > self.skeleton_rows and len(self._skeletons) > 1:
            _, old = self._skeletons.popitem(last=False)
            self._skeleton_kept -= old.count
        return known

    def histogram(self, ordinal: int) -> tuple[int, ...]:
        """The day's base rows per load delay (``rows.LOAD_DELAY``), kept for good."""
        known = self._histograms.get(ordinal)
        if known is None:
            cached = self._skeletons.get(ordinal)
            if cached is None:  # no ids needed: the cheap pass
                cached = skeleton(
                    self._day_rng(ordinal), self.base_count(ordinal), b"", with_ids=False
                )
            known = self._histograms[ordinal] = cached.histogram()
        return known

    def _index_order(self, ordinal: int) -> Sequence[int]:
        """``base_order`` from the skeleton's cached permutation (the same shuffle, kept as
        32-bit words: 4 bytes a row)."""
        if not self.base_count(ordinal):
            return []
        plan = self.skeleton(ordinal)
        if plan.order is None or plan.order[0] != self.order_key:
            order = array("I", range(plan.count))
            seed = derive_seed(self.seed, "order", ordinal, self.order_key)
            random.Random(seed).shuffle(order)
            plan.order = (self.order_key, order)
        order = plan.order[1]
        overlay = self.overlays.get(ordinal)
        if overlay is not None and overlay.deleted:
            return [i for i in order if i not in overlay.deleted]
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
        self._facts.clear()
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

    def _by_delay(self, ordinal: int, node: Node) -> list[Node | None] | None:
        """What ``node`` says of the day's base rows of each load delay (``rows.LOAD_DELAY``),
        or None when it names a field a skeleton does not know.

        All rows of one delay share one stamp, so ``residual`` with the day's facts narrowed
        to that stamp decides every ``createDateTime`` range exactly (its bounds are equal):
        what is left is ``MatchAll`` (every such row), ``NOTHING`` (none), a test of the id
        alone, or None when a stamp leaf stays undecided (a Term: the rows decide)."""
        dates = self.string_dates
        facts = self.facts(ordinal)
        if not fields_of(residual(node, facts, string_dates=dates)) <= SKELETON_FIELDS:
            return None
        batches = self.base_batches(ordinal)
        out: list[Node | None] = []
        for delay in range(DELAYS):
            moment = dt.datetime.fromisoformat(batches[min(delay, len(batches) - 1)])
            rest = residual(node, DayFacts(facts.probe, moment, moment), string_dates=dates)
            out.append(rest if fields_of(rest) <= {"id"} else None)
        return out

    def _probe_row(self, ordinal: int) -> tuple[Row, list[str]]:
        """A row to test skeleton rows on (the three fields, filled per row) and the stamp
        of each load delay."""
        batches = self.base_batches(ordinal)
        stamps = [batches[min(delay, len(batches) - 1)] for delay in range(DELAYS)]
        probe = {"submissionDate": self.facts(ordinal).probe[DAY_FIELD], STAMP_FIELD: "", "id": ""}
        return probe, stamps

    def _known(self, ordinal: int, node: Node) -> int | None:
        """The day's matches of ``node`` counted from facts, or None where they do not
        suffice (``_by_delay`` is None and base rows are left). Equal to
        ``len(self._filter(ordinal, node))``:

        - base rows, per load delay: all or none of them by the histogram; one id Term or
          Range by bisection of the delay's sorted ids; another test of the id on each id;
          an undecided stamp by testing each row on the skeleton's three fields (an indexed
          row and its skeleton agree on those, and nothing else is read); then deleted base
          rows are taken off, each tested the same way;
        - rows added by mutations: tested as they are (they are their own indexed form).
        """
        dates = self.string_dates
        predicate = compile_predicate(node, string_dates=dates)
        overlay = self.overlays.get(ordinal)
        deleted: frozenset[int] | set[int] = overlay.deleted if overlay else frozenset()
        found = sum(1 for row in overlay.added.values() if predicate(row)) if overlay else 0
        if self.base_count(ordinal) <= len(deleted):
            return found
        verdicts = self._by_delay(ordinal, node)
        if verdicts is None:
            return None
        decided = all(v is not None and (v == NOTHING or isinstance(v, MatchAll)) for v in verdicts)
        # Ids wanted: the skeleton first (its histogram comes with it: one pass, not two).
        plan: Skeleton | None = None if decided else self.skeleton(ordinal)
        histogram = self.histogram(ordinal)
        for delay, (n, verdict) in enumerate(zip(histogram, verdicts, strict=True)):
            if not n or verdict == NOTHING:
                continue
            if isinstance(verdict, MatchAll):
                found += n
                continue
            plan = plan or self.skeleton(ordinal)
            ids = plan.ids_by_delay()[delay]
            span = None if verdict is None else _id_span(verdict, ids)
            if span is not None:
                found += span
            elif verdict is not None:
                test = compile_predicate(verdict, string_dates=dates)
                found += sum(1 for row_id in ids if test({"id": row_id}))
            else:
                probe, stamps = self._probe_row(ordinal)
                probe[STAMP_FIELD] = stamps[delay]
                for row_id in ids:
                    probe["id"] = row_id
                    found += predicate(probe)
        if deleted:
            plan = plan or self.skeleton(ordinal)
            probe, stamps = self._probe_row(ordinal)
            for position in deleted:
                probe["id"] = plan.ids[position]
                probe[STAMP_FIELD] = stamps[plan.delays[position]]
                found -= predicate(probe)
        return found

    def _positions(self, ordinal: int, node: Node) -> array[int]:
        """``_filter``'s answer (matching positions in index order), from the skeleton when
        ``_by_delay`` can say; else ``_filter`` itself."""
        verdicts = self._by_delay(ordinal, node) if self.fast else None
        if verdicts is None or not self.base_count(ordinal):
            return self._filter(ordinal, node)
        dates = self.string_dates
        predicate = compile_predicate(node, string_dates=dates)
        plan = self.skeleton(ordinal)
        order = self._index_order(ordinal)
        ids, delays = plan.ids, plan.delays
        out = array("I")
        if all(v is not None and (v == NOTHING or isinstance(v, MatchAll)) for v in verdicts):
            every = [isinstance(v, MatchAll) for v in verdicts]
            out.extend(i for i, position in enumerate(order) if every[delays[position]])
        elif None not in verdicts:
            tests = [_id_test(v, dates) for v in verdicts if v is not None]
            out.extend(
                i
                for i, position in enumerate(order)
                if (test := tests[delays[position]]) is True
                or (test is not False and test(ids[position]))
            )
        else:
            probe, stamps = self._probe_row(ordinal)
            for i, position in enumerate(order):
                probe["id"] = ids[position]
                probe[STAMP_FIELD] = stamps[delays[position]]
                if predicate(probe):
                    out.append(i)
        overlay = self.overlays.get(ordinal)
        if overlay is not None:
            base = len(order)
            out.extend(base + j for j, row in enumerate(overlay.added.values()) if predicate(row))
        return out

    def _served(self, ordinal: int, positions: Sequence[int], share: float) -> list[Row]:
        """The served rows at ``positions`` (index order) of the day, for a query matching
        ``share`` of the day.

        From the day LRU when it holds the day (or on the reference path); else, for a query
        matching a good share of the day (paging through it costs less with the day made
        once, as before), the day generated whole and cached; else only these rows are
        built (``rows_at``): a month's id piece then makes just the rows it serves."""
        cached = self._days.get(ordinal)
        whole = cached is not None or not self.fast or share >= WHOLE_DAY_SHARE
        order = None if whole else self._index_order(ordinal)
        if order is None or len(positions) >= WHOLE_DAY_SHARE * len(order):
            served = self.day(ordinal).rows
            if isinstance(positions, range) and positions.step == 1:
                return served[positions.start : positions.stop]
            return [served[i] for i in positions]
        base = len(order)
        date = dt.date.fromordinal(ordinal)
        wanted = [order[i] for i in positions if i < base]
        built = rows_at(
            self._day_rng(ordinal),
            self.skeleton(ordinal),
            wanted,
            date,
            Stamps(date, 86400),  # unused: the stamps are the batches'
            self._id_prefix(ordinal),
            self._bad.get(ordinal, frozenset()),
            self.base_batches(ordinal),
        )
        self.generated_rows += len(built)
        overlay = self.overlays.get(ordinal)
        added = list(overlay.added.values()) if overlay is not None else []
        return [built[order[i]] if i < base else added[i - base] for i in positions]

    def plan(self, node: Node) -> Plan:
        """The query's matches per day; exact, cached until the next mutation."""
        key = (node, self.version)
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            return plan
        plan = Plan(node)
        classify = compile_classifier(node, string_dates=self.string_dates)
        for ordinal in self._candidate_days(node) if self.fast else self.ordinals():
            n = self.count(ordinal)
            if n == 0:
                continue
            state = classify(self.facts(ordinal))
            if state == NONE:
                continue
            if state == SOME:
                known = self._known(ordinal, plan.node) if self.fast else None
                if known is not None:  # counted from facts: a page finds its positions
                    if known == 0:
                        continue
                    n = known
                    plan.matches[ordinal] = None
                else:
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
        self._trim_plans()
        return plan

    def _trim_plans(self) -> None:
        """Forget the oldest plans past ``PLAN_CACHE_ENTRIES`` or ``PLAN_CACHE_MATCHES``
        (the newest, being used, stays)."""
        while len(self._plans) > 1 and (
            len(self._plans) > PLAN_CACHE_ENTRIES or self._plan_kept > PLAN_CACHE_MATCHES
        ):
            _, old = self._plans.popitem(last=False)
            self._plan_kept -= old.kept

    def _keep(self, plan: Plan, ordinal: int, matches: array[int]) -> None:
        """Keep the positions a page found for a day its plan counted from facts, so the
        next pages of the day do not test its rows again (fast path; within the budget)."""
        if not self.fast or plan.kept + len(matches) > PLAN_CACHE_MATCHES:
            return
        plan.matches[ordinal] = matches
        plan.kept += len(matches)
        if self._plans.get((plan.node, self.version)) is plan:
            self._plan_kept += len(matches)
            self._trim_plans()

    def _mail_days(self, node: Node) -> range:
        """The days ``node`` can match: ``ordinals()`` narrowed to the ``submissionDate``
        ranges (or terms) that ``node`` itself or a child of its top-level AND requires.

        Any other day is NONE for such a child, so for the AND: skipping it changes no
        answer, and a day or month query costs O(log days), not a pass over every day.
        Each end of a range is tested by the row predicate on the day's probe (the served
        ``submissionDate``), as the classifier does; both readings of a date (as a date,
        or its fixed-width text) grow with the day, so each end is found by bisection."""
        days = self.ordinals()
        for part in node.children if isinstance(node, And) else (node,):
            if not isinstance(part, Term | Range) or part.field != DAY_FIELD:
                continue
            low: str | None
            high: str | None
            if isinstance(part, Term):
                low, high, include_low, include_high = part.value, part.value, True, True
            else:
                low, high = part.low, part.high
                include_low, include_high = part.include_low, part.include_high
            dates = self.string_dates
            above = compile_predicate(Range(DAY_FIELD, low, None, include_low), string_dates=dates)
            below = compile_predicate(
                Range(DAY_FIELD, None, high, True, include_high), string_dates=dates
            )

            def probe(ordinal: int) -> dict[str, str]:
                return {DAY_FIELD: f"{dt.date.fromordinal(ordinal).isoformat()}T00:00:00"}

            first = bisect_left(days, True, key=lambda o: above(probe(o)))
            end = bisect_left(days, True, key=lambda o: not below(probe(o)))
            days = days[first : max(first, end)]
        return days

    def _candidate_days(self, node: Node) -> Sequence[int]:
        """``_mail_days``, and for a query that requires ``id:X`` (itself, or a child of its
        top-level AND) of an id this corpus served (``_origins``): only the days that can
        hold that id, its row's own day and the days whose added rows carry it (a modified
        row). Ids are unique (128 bits of blake2b of distinct inputs; the corpus has always
        promised it) and a row never changes its day, so every other day is NONE: the
        harvester's probe ``createDateTime:[s TO *] AND id:X`` reads one day, not every
        day's ids."""
        days = self._mail_days(node)
        parts = node.children if isinstance(node, And) else (node,)
        wanted = next((p.value for p in parts if isinstance(p, Term) and p.field == "id"), None)
        origin = None if wanted is None else self._origins.get(wanted)
        if wanted is None or origin is None:
            return days
        held = {origin, *(o for o, overlay in self.overlays.items() if wanted in overlay.added)}
        return [o for o in sorted(held) if o in days]

    def _remember(self, ordinal: int, rows: list[Row]) -> None:
        """The day of each served row, by id (an LRU of ``ORIGINS`` ids)."""
        origins = self._origins
        for row in rows:
            row_id = row.get("id")
            if row_id.__class__ is str:
                origins[row_id] = ordinal
                origins.move_to_end(row_id)
        while len(origins) > ORIGINS:
            origins.popitem(last=False)

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
            share = (offsets[k + 1] - base) / max(1, self.count(ordinal))
            if ordinal not in plan.matches:
                served = self._served(ordinal, range(low, high), share)
            else:
                matches = plan.matches[ordinal]
                if matches is None:
                    matches = self._positions(ordinal, plan.node)
                    self._keep(plan, ordinal, matches)
                served = self._served(ordinal, matches[low:high], share)
            if self.fast:
                self._remember(ordinal, served)
            docs.extend(served)
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
            "skeleton_days": len(self._skeletons),
            "skeleton_rows": self._skeleton_kept,
            "histogram_days": len(self._histograms),
            "generated_rows": self.generated_rows,
        }
