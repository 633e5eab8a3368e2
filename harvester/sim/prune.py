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


def _stamp_range(node: Range, string_dates: bool) -> Classifier:
    """Classify by the day's ``createDateTime`` bounds, with the predicate's own semantics.

    Each end of the range is checked by the row predicate itself (as datetimes, or letter
    by letter with ``string_dates``) on the bounds in the served form. Both readings are
    monotone in the stamp (for the fixed-width served form text order is time order), so
    checking the two ends of the day's bounds against each half of the range is exact.
    """
    field = node.field
    try:
        above_low = compile_predicate(
            Range(field, node.low, None, node.include_low, True), string_dates=string_dates
        )
        below_high = compile_predicate(
            Range(field, None, node.high, True, node.include_high), string_dates=string_dates
        )
    except ValueError:
        return lambda facts: SOME  # not a date the pruner understands: let the rows decide

    def classify(facts: DayFacts) -> int:
        if facts.created_low is None or facts.created_high is None:
            return SOME
        first = {field: facts.created_low.isoformat(timespec="seconds")}
        last = {field: facts.created_high.isoformat(timespec="seconds")}
        if above_low(first) and below_high(last):
            return ALL
        if not above_low(last) or not below_high(first):
            return NONE
        return SOME

    return classify


@functools.lru_cache(maxsize=512)
def compile_classifier(node: Node, *, string_dates: bool = False) -> Classifier:
    """A function from a day's facts to ALL / SOME / NONE for ``node``.

    ``string_dates`` must be the corpus' reading of the date fields (see
    ``compile_predicate``): the day's probe is every row's exact served ``submissionDate``,
    so evaluating the row predicate on it is exact under either reading.
    """
    if isinstance(node, MatchAll):
        return lambda facts: ALL
    if isinstance(node, Term | Range) and node.field == DAY_FIELD:
        predicate = compile_predicate(node, string_dates=string_dates)
        return lambda facts: ALL if predicate(facts.probe) else NONE
    if isinstance(node, Range) and node.field == STAMP_FIELD:
        return _stamp_range(node, string_dates)
    if isinstance(node, And | Or):
        parts = [compile_classifier(c, string_dates=string_dates) for c in node.children]
        if isinstance(node, And):
            return lambda facts: min(part(facts) for part in parts)
        return lambda facts: max(part(facts) for part in parts)
    if isinstance(node, Not):
        inner = compile_classifier(node.child, string_dates=string_dates)
        return lambda facts: ALL - inner(facts)
    return lambda facts: SOME


NOTHING: Node = Not(MatchAll())  # matches no row; compile_predicate handles it like any Not


def residual(node: Node, facts: DayFacts, *, string_dates: bool = False) -> Node:
    """``node`` with every subtree already decided for this day replaced by its answer.

    ``submissionDate:[d TO d] AND id:[0 TO 8}`` becomes ``id:[0 TO 8}`` on day d, so the
    rows of a SOME day are filtered by the part that is really unknown (about half the cost
    per row for a typical shard). Subtrees that are SOME keep their original form.
    """
    state = compile_classifier(node, string_dates=string_dates)(facts)
    if state == ALL:
        return MatchAll()
    if state == NONE:
        return NOTHING
    if isinstance(node, And | Or):
        decided = ALL if isinstance(node, And) else NONE  # the neutral answer: drop it
        kids = tuple(
            residual(child, facts, string_dates=string_dates)
            for child in node.children
            if compile_classifier(child, string_dates=string_dates)(facts) != decided
        )
        if len(kids) == 1:
            return kids[0]
        return And(kids) if isinstance(node, And) else Or(kids)
    if isinstance(node, Not):
        return Not(residual(node.child, facts, string_dates=string_dates))
    return node
