"""Which mail days a query can match, decided per day without generating the day's rows.

Every day is classified ALL (every row matches), NONE, or SOME from what is known about it
up front: its exact ``submissionDate`` and bounds on its rows' ``createDateTime``. Other
fields are unknown (SOME). Kleene logic combines the answers (AND = min, OR = max,
NOT = flip), so ``submissionDate:[d TO d] AND id:[0 TO 8}`` is NONE for every day but d and
SOME for d: only that one day is ever generated and filtered. ALL days are counted from the
per-day volumes alone, which is what makes ``numFound`` of ``*:*`` at 5M rows immediate.

Date semantics come from the parser's own ``compile_predicate`` / ``parse_date_value``, so
the pruned answer can never disagree with filtering the rows one by one.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass

from harvester.sim import lucene
from harvester.sim.lucene import And, MatchAll, Node, Not, Or, Range, Term
from harvester.sim.predicate import compile_predicate

NONE, SOME, ALL = 0, 1, 2
DAY_FIELD = "submissionDate"
STAMP_FIELD = "createDateTime"


@dataclass(frozen=True, slots=True)
class DayFacts:
    """What is known about a day's rows without generating them (as the index sees them)."""

    probe: dict[str, str]  # {"submissionDate": "<day>T00:00:00"}: every row's exact value
    created_low: dt.datetime | None  # createDateTime bounds over the day's rows (inclusive)
    created_high: dt.datetime | None


Classifier = Callable[[DayFacts], int]


def _naive_utc(value: dt.datetime) -> dt.datetime:
    # Served stamps carry no zone and are read as UTC (docs/design.md, shared conventions).
    if value.tzinfo is None:
        return value
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def _stamp_range(node: Range) -> Classifier:
    try:
        low = None if node.low is None else _naive_utc(lucene.parse_date_value(node.low))
        high = None if node.high is None else _naive_utc(lucene.parse_date_value(node.high))
    except ValueError:
        return lambda facts: SOME  # not a date the pruner understands: let the rows decide

    def above_low(value: dt.datetime) -> bool:
        return low is None or value > low or (node.include_low and value == low)

    def below_high(value: dt.datetime) -> bool:
        return high is None or value < high or (node.include_high and value == high)

    def classify(facts: DayFacts) -> int:
        first, last = facts.created_low, facts.created_high
        if first is None or last is None:
            return SOME
        # The range is an interval, so checking the two ends of the bounds is exact.
        if above_low(first) and below_high(last):
            return ALL
        if not above_low(last) or not below_high(first):
            return NONE
        return SOME

    return classify


@functools.lru_cache(maxsize=512)
def compile_classifier(node: Node) -> Classifier:
    """A function from a day's facts to ALL / SOME / NONE for ``node``."""
    if isinstance(node, MatchAll):
        return lambda facts: ALL
    if isinstance(node, Term | Range) and node.field == DAY_FIELD:
        predicate = compile_predicate(node)
        return lambda facts: ALL if predicate(facts.probe) else NONE
    if isinstance(node, Range) and node.field == STAMP_FIELD:
        return _stamp_range(node)
    if isinstance(node, And):
        parts = [compile_classifier(child) for child in node.children]
        return lambda facts: min(part(facts) for part in parts)
    if isinstance(node, Or):
        parts = [compile_classifier(child) for child in node.children]
        return lambda facts: max(part(facts) for part in parts)
    if isinstance(node, Not):
        inner = compile_classifier(node.child)
        return lambda facts: ALL - inner(facts)
    return lambda facts: SOME


NOTHING: Node = Not(MatchAll())  # matches no row; compile_predicate handles it like any Not


def residual(node: Node, facts: DayFacts) -> Node:
    """``node`` with every subtree already decided for this day replaced by its answer.

    ``submissionDate:[d TO d] AND id:[0 TO 8}`` becomes ``id:[0 TO 8}`` on day d, so the
    rows of a SOME day are filtered by the part that is really unknown (about half the cost
    per row for a typical shard). Subtrees that are SOME keep their original form.
    """
    state = compile_classifier(node)(facts)
    if state == ALL:
        return MatchAll()
    if state == NONE:
        return NOTHING
    if isinstance(node, And | Or):
        decided = ALL if isinstance(node, And) else NONE  # the neutral answer: drop it
        kids = tuple(
            residual(child, facts)
            for child in node.children
            if compile_classifier(child)(facts) != decided
        )
        if len(kids) == 1:
            return kids[0]
        return And(kids) if isinstance(node, And) else Or(kids)
    if isinstance(node, Not):
        return Not(residual(node.child, facts))
    return node
