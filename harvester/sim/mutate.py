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
    MAX_CLAIMS,
    PARAGRAPHS,
    Row,
    Stamps,
    base_stamps,
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
    seed: int | None = None

    @classmethod
    def from_json(cls, body: Any) -> MutationSpec:
        if not isinstance(body, dict):
            raise MutationError("the body must be a JSON object")
        names = ("add", "late", "modify", "delete", "modify_silently", "swap", "future")
        unknown = sorted(set(body) - {*names, "reorder", "seed"})
        if unknown:
            raise MutationError(f"unknown keys: {', '.join(unknown)}")
        counts: dict[str, int] = {}
        for name in names:
            value = body.get(name, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise MutationError(f"{name} must be a non-negative integer")
            counts[name] = value
        reorder = body.get("reorder", False)
        if not isinstance(reorder, bool):
            raise MutationError("reorder must be true or false")
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise MutationError("seed must be an integer")
        return cls(reorder=reorder, seed=seed, **counts)


class Mutator:
    """Applies mutations to one corpus and keeps the simulated clock."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus
        self.calls = 0
        self.clock = dt.date.fromordinal(corpus.base_last) + dt.timedelta(days=BASE_LOAD_DAYS + 1)

    def apply(self, spec: MutationSpec) -> dict[str, Any]:
        corpus = self.corpus
        self.calls += 1
        call_seed = spec.seed if spec.seed is not None else self.calls
        rng = random.Random(derive_seed(corpus.seed, "mutate", self.calls, call_seed))
        new_days = self._new_days(spec.add)
        newest = max([corpus.last, *new_days]) if new_days else corpus.last
        self.clock = max(self.clock + dt.timedelta(days=1), dt.date.fromordinal(newest + 1))
        stamps = Stamps(self.clock, 86400)
        touched: set[int] = set()

        deleted, modified, silent, swapped = self._delete_and_modify(
            rng, (spec.delete, spec.modify, spec.modify_silently, spec.swap), stamps, touched
        )
        batches = (
            (self._old_days(rng, spec.late), stamps, "late"),
            (new_days, stamps, "add"),
            (self._old_days(rng, spec.future), FUTURE_STAMPS, "future"),
        )
        for days, batch_stamps, kind in batches:
            for ordinal, n in sorted(days.items()):
                self._append_new_rows(ordinal, n, batch_stamps, kind)
                touched.add(ordinal)
        corpus.last = newest
        corpus.version += 1
        if spec.reorder:
            corpus.order_key = f"{corpus.version}:{call_seed}"
            corpus.invalidate()
        else:
            corpus.invalidate(sorted(touched))
        return {
            "version": corpus.version,
            "clock": stamps.low.isoformat(),
            "added": sum(new_days.values()),
            "late": spec.late,
            "modified": modified,
            "deleted": deleted,
            "modified_silently": silent,
            "swapped": swapped,
            "future": spec.future,
            "reordered": spec.reorder,
            "days": [dt.date.fromordinal(o).isoformat() for o in sorted(touched)],
            "numFound": corpus.total,
        }

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

    def _append_new_rows(self, ordinal: int, n: int, stamps: Stamps, kind: str) -> None:
        corpus = self.corpus
        overlay = self._overlay(ordinal)
        rng = random.Random(derive_seed(corpus.seed, kind, corpus.version + 1, ordinal))
        prefix = b"%d:%s%d:%d:" % (corpus.seed, kind.encode(), corpus.version + 1, ordinal)
        for row in generate(rng, n, dt.date.fromordinal(ordinal), stamps, prefix).rows:
            overlay.added[row["id"]] = row
        overlay.note(stamps)

    def _delete_and_modify(
        self,
        rng: random.Random,
        wanted_counts: tuple[int, int, int, int],
        stamps: Stamps,
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
                    overlay.added[row["id"]] = self._modified(rng, row, stamps)
                elif kind == _SILENT:
                    # Same stamp: the day's base stamps (or a stamp already noted) cover it.
                    new = self._modified(rng, row, stamps)
                    new["createDateTime"] = row["createDateTime"]
                    overlay.added[row["id"]] = new
                    overlay.note(base_stamps(dt.date.fromordinal(ordinal)))
            if any(kind == _MODIFY for *_, kind in resolved):
                overlay.note(stamps)
            swaps = sum(kind == _SWAP for *_, kind in resolved)
            if swaps:
                # Stamped on the day's first load day, as its base rows were: no watermark
                # after the harvest sees them.
                first_load = Stamps(base_stamps(dt.date.fromordinal(ordinal)).first, 86400)
                self._append_new_rows(ordinal, swaps, first_load, "swap")
            touched.add(ordinal)
        return n_delete, n_modify, n_silent, n_swap

    @staticmethod
    def _modified(rng: random.Random, row: Row, stamps: Stamps) -> Row:
        """The row re-loaded: same id and mail date, a newer stamp, some fields changed."""
        seconds = rng.randrange(stamps.span_seconds)
        new = dict(row)
        new["createDateTime"] = (stamps.low + dt.timedelta(seconds=seconds)).isoformat()
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
