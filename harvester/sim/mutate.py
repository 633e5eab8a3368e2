"""Change over time: the ``POST /_sim/mutate`` operations, applied to a Corpus' overlay.

Mutated rows are stamped by a simulated clock, not wall time, so the ground truth after a
sequence of mutations is reproducible: the clock starts one day after the latest possible
base stamp (base rows load at most 45 days after their mail date) and moves at least one day
per call, always past the newest mail day.

Within one call: deletions and modifications are drawn from the index as it was before the
call (disjoint rows), then late rows go into old days, then new days are appended, then the
index order is re-seeded if asked.

Two mutations change what no count and no watermark can see (``verify --deep`` can):
``modify_silently`` changes rows as ``modify`` does but keeps their ``createDateTime``;
``swap`` deletes a row and puts a new one on the same day, stamped like the day's base rows
(long before the clock), so the day's count stays.

A call is one load at the source: every row it adds or modifies carries the call's one
``createDateTime`` (a seeded second of the clock day), as the service's batch loads do.
``reload`` makes the call a reload of the whole index (reference: "createDateTime is a batch
stamp"): after its other changes, every row present, base and added, carries that stamp.
"""

from __future__ import annotations

import datetime as dt
import random
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from harvester.sim.corpus import Corpus, DayOverlay
from harvester.sim.rows import (
    CATEGORIES,
    CLAIM_RUNS,
    CLOCK_MINUTES,
    CLOCK_SECONDS,
    MAX_CLAIMS,
    PARAGRAPHS,
    Row,
    Stamps,
    generate,
)
from harvester.sim.seeding import derive_seed

BASE_LOAD_DAYS = 45  # base rows are loaded within this many days of their mail date
CATEGORY_CYCLE = tuple(dict.fromkeys(CATEGORIES))
_DELETE, _MODIFY, _SILENT, _SWAP = range(4)  # the kinds of drawn rows, in drawing order
PARAGRAPH_CYCLE = tuple(dict.fromkeys(PARAGRAPHS))
# Rows a source clock gone wrong stamps at the end of time (issue 12: "one row stamped
# 9999-12-31 blinds every later refresh").
FUTURE_STAMPS = Stamps(dt.date(9999, 12, 30), 86400)


class MutationError(ValueError):
    """The mutation request is not well formed (the server answers 400)."""


@dataclass(frozen=True, slots=True)
class MutationSpec:
    add: int = 0
    late: int = 0
    modify: int = 0
    delete: int = 0
    modify_silently: int = 0
    swap: int = 0
    future: int = 0  # late rows stamped 9999-12-30: a clock gone wrong at the source
    reorder: bool = False
    reload: bool = False  # every row re-stamped with the call's stamp: the source reloaded
    late_on: str | None = None  # ISO day: every late row lands on it (else spread at random)
    seed: int | None = None

    @classmethod
    def from_json(cls, body: Any) -> MutationSpec:
        if not isinstance(body, dict):
            raise MutationError("the body must be a JSON object")
        names = ("add", "late", "modify", "delete", "modify_silently", "swap", "future")
        unknown = sorted(set(body) - {*names, "reorder", "reload", "seed", "late_on"})
        if unknown:
            raise MutationError(f"unknown keys: {', '.join(unknown)}")
        counts: dict[str, Any] = {}  # ints, checked below (Any: the spec has bools too)
        for name in names:
            value = body.get(name, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise MutationError(f"{name} must be a non-negative integer")
            counts[name] = value
        switches: dict[str, bool] = {}
        for name in ("reorder", "reload"):
            value = body.get(name, False)
            if not isinstance(value, bool):
                raise MutationError(f"{name} must be true or false")
            switches[name] = value
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise MutationError("seed must be an integer")
        late_on = body.get("late_on")
        if late_on is not None:
            try:
                dt.date.fromisoformat(late_on)
            except (TypeError, ValueError):
                raise MutationError("late_on must be a date YYYY-MM-DD") from None
        return cls(seed=seed, late_on=late_on, **switches, **counts)


class Mutator:
    """Applies mutations to one corpus and keeps the simulated clock."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus
        self.calls = 0
        self.clock = dt.date.fromordinal(corpus.base_last) + dt.timedelta(days=BASE_LOAD_DAYS + 1)

    def apply(self, spec: MutationSpec) -> dict[str, Any]:
        """Apply ``spec``; MutationError (before any change) when it names a day outside
        the corpus."""
        corpus = self.corpus
        if spec.late_on is not None:
            ordinal = dt.date.fromisoformat(spec.late_on).toordinal()
            if not corpus.first <= ordinal <= corpus.last:
                first, last = (dt.date.fromordinal(o) for o in (corpus.first, corpus.last))
                raise MutationError(f"late_on {spec.late_on} is outside the corpus {first}..{last}")
        self.calls += 1
        call_seed = spec.seed if spec.seed is not None else self.calls
        rng = random.Random(derive_seed(corpus.seed, "mutate", self.calls, call_seed))
        new_days = self._new_days(spec.add)
        newest = max([corpus.last, *new_days]) if new_days else corpus.last
        self.clock = max(self.clock + dt.timedelta(days=1), dt.date.fromordinal(newest + 1))
        stamps = Stamps(self.clock, 86400)
        # Its own stream: the call's draws (which rows, which days) stay as they were.
        second = derive_seed(corpus.seed, "stamp", self.calls, call_seed) % stamps.span_seconds
        stamp = f"{self.clock.isoformat()}{CLOCK_MINUTES[second // 60]}{CLOCK_SECONDS[second % 60]}"
        touched: set[int] = set()

        deleted, modified, silent, swapped = self._delete_and_modify(
            rng, (spec.delete, spec.modify, spec.modify_silently, spec.swap), stamp, touched
        )
        batches: tuple[tuple[dict[int, int], Stamps, str | None, str], ...] = (
            (self._late_days(rng, spec), stamps, stamp, "late"),
            (new_days, stamps, stamp, "add"),
            (self._old_days(rng, spec.future), FUTURE_STAMPS, None, "future"),
        )
        for days, batch_stamps, batch, kind in batches:
            for ordinal, n in sorted(days.items()):
                self._append_new_rows(ordinal, n, batch_stamps, kind, batch)
                touched.add(ordinal)
        corpus.last = newest
        corpus.version += 1
        if spec.reorder:
            corpus.order_key = f"{corpus.version}:{call_seed}"
        if spec.reload:
            # After every other change of the call: all rows present carry its stamp.
            corpus.restamp(stamp)
            touched.update(o for o in corpus.ordinals() if corpus.count(o))
        elif spec.reorder:
            corpus.invalidate()
        else:
            corpus.invalidate(sorted(touched))
        return {
            "version": corpus.version,
            "clock": stamps.low.isoformat(),
            "stamp": stamp,
            "added": sum(new_days.values()),
            "late": spec.late,
            "modified": modified,
            "deleted": deleted,
            "modified_silently": silent,
            "swapped": swapped,
            "future": spec.future,
            "reordered": spec.reorder,
            "reloaded": spec.reload,
            "days": [dt.date.fromordinal(o).isoformat() for o in sorted(touched)],
            "numFound": corpus.total,
        }

    def _late_days(self, rng: random.Random, spec: MutationSpec) -> dict[int, int]:
        """The late rows' days: all on ``late_on`` (a day of the corpus), else at random."""
        if spec.late_on is None or not spec.late:
            return self._old_days(rng, spec.late)
        return {dt.date.fromisoformat(spec.late_on).toordinal(): spec.late}

    def _old_days(self, rng: random.Random, n: int) -> dict[int, int]:
        """``n`` rows spread at random over the existing days (late rows)."""
        corpus = self.corpus
        return dict(Counter(rng.randint(corpus.first, corpus.last) for _ in range(n)))

    def _new_days(self, n: int) -> dict[int, int]:
        """Spread ``n`` rows over weekdays after the last day, a typical day's volume each."""
        corpus = self.corpus
        busy = [c for c in corpus.base_counts if c]
        per_day = max(1, sum(busy) // len(busy)) if busy else max(1, n)
        days: dict[int, int] = {}
        ordinal = corpus.last
        while n > 0:
            ordinal += 1
            if dt.date.fromordinal(ordinal).weekday() >= 5:
                continue
            days[ordinal] = min(per_day, n)
            n -= days[ordinal]
        return days

    def _overlay(self, ordinal: int) -> DayOverlay:
        return self.corpus.overlays.setdefault(ordinal, DayOverlay())

    def _append_new_rows(
        self, ordinal: int, n: int, stamps: Stamps, kind: str, batch: str | None
    ) -> None:
        """``n`` new rows on the day, all stamped ``batch`` (None: spread over ``stamps``)."""
        corpus = self.corpus
        overlay = self._overlay(ordinal)
        rng = random.Random(derive_seed(corpus.seed, kind, corpus.version + 1, ordinal))
        prefix = b"%d:%s%d:%d:" % (corpus.seed, kind.encode(), corpus.version + 1, ordinal)
        day = dt.date.fromordinal(ordinal)
        batches = None if batch is None else (batch,)
        for row in generate(rng, n, day, stamps, prefix, batches=batches).rows:
            overlay.added[row["id"]] = row
        if batch is None:
            overlay.note(stamps)
        else:
            moment = dt.datetime.fromisoformat(batch)
            overlay.note_bounds(moment, moment)

    def _delete_and_modify(
        self,
        rng: random.Random,
        wanted_counts: tuple[int, int, int, int],
        stamp: str,
        touched: set[int],
    ) -> tuple[int, int, int, int]:
        """Delete, modify, modify silently and swap distinct rows; returns how many of each."""
        corpus = self.corpus
        ordinals = list(corpus.ordinals())
        starts = [0, *accumulate(corpus.count(o) for o in ordinals)]
        counts: list[int] = []
        for n in wanted_counts:
            counts.append(min(n, starts[-1] - sum(counts)))
        n_delete, n_modify, n_silent, n_swap = counts
        picked = rng.sample(range(starts[-1]), sum(counts))
        bounds = list(accumulate(counts))  # picked[i] is of kind k where i < bounds[k] first
        targets: dict[int, list[tuple[int, int]]] = {}
        for i, position in enumerate(picked):
            k = bisect_right(starts, position) - 1
            kind = bisect_right(bounds, i)
            targets.setdefault(ordinals[k], []).append((position - starts[k], kind))
        for ordinal, wanted in sorted(targets.items()):
            day = corpus.day(ordinal)
            order = corpus.base_order(ordinal)
            added_ids = list(self._overlay(ordinal).added)
            # Resolve every target against the day as it was, before changing anything.
            resolved = [
                (order[p] if p < len(order) else None,
                 added_ids[p - len(order)] if p >= len(order) else None,
                 dict(day.view[p]), kind)
                for p, kind in wanted
            ]  # fmt: skip
            overlay = self._overlay(ordinal)
            for base_position, added_id, row, kind in resolved:
                if base_position is not None:
                    overlay.deleted.add(base_position)
                else:
                    del overlay.added[str(added_id)]
                if kind == _MODIFY:
                    overlay.added[row["id"]] = self._modified(rng, row, stamp)
                elif kind == _SILENT:
                    # Same stamp: the day's base stamps (or a stamp already noted) cover it.
                    overlay.added[row["id"]] = self._modified(rng, row, row["createDateTime"])
                    overlay.note_bounds(*corpus.base_bounds(ordinal))
            if any(kind == _MODIFY for *_, kind in resolved):
                moment = dt.datetime.fromisoformat(stamp)
                overlay.note_bounds(moment, moment)
            swaps = sum(kind == _SWAP for *_, kind in resolved)
            if swaps:
                # Stamped like the day's base rows (its first load, or the last reload): no
                # watermark taken after the harvest sees them.
                first_load = corpus.base_batches(ordinal)[0]
                day_stamps = Stamps(dt.date.fromisoformat(first_load[:10]), 86400)
                self._append_new_rows(ordinal, swaps, day_stamps, "swap", first_load)
            touched.add(ordinal)
        return n_delete, n_modify, n_silent, n_swap

    @staticmethod
    def _modified(rng: random.Random, row: Row, stamp: str) -> Row:
        """The row re-loaded: same id and mail date, stamped ``stamp``, some fields changed."""
        # Drawn as when each row had a second of its own: the draws after it (and so which
        # rows and days a seeded scenario touches) stay what they were.
        rng.randrange(86400)
        new = dict(row)
        new["createDateTime"] = stamp
        category = CATEGORY_CYCLE.index(row.get("actionTypeCategory", ""))
        new["actionTypeCategory"] = CATEGORY_CYCLE[(category + 1) % len(CATEGORY_CYCLE)]
        if rng.random() < 0.5:
            paragraph = PARAGRAPH_CYCLE.index(row.get("paragraphNumber", ""))
            new["paragraphNumber"] = PARAGRAPH_CYCLE[(paragraph + 1) % len(PARAGRAPH_CYCLE)]
        if rng.random() < 0.5:
            last = rng.randint(1, MAX_CLAIMS)
            new["claimNumberArrayDocument"] = [CLAIM_RUNS[rng.randint(1, last)][last]]
        # Keys in alphabetical order, as every served row (a field the row lacked may have
        # been set above), so pages can be serialised without sorting.
        return {name: new[name] for name in sorted(new)}
