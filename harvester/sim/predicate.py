"""Evaluate a parsed query against one served row, fast.

``compile_predicate`` turns a syntax tree from ``harvester.sim.lucene`` into a closure with
every bound decoded once; the corpus calls it on up to millions of rows. The semantics
(missing fields, typed fields, lists, lexicographic strings) are described in
``harvester.sim.lucene``'s docstring.

``string_dates=True`` (``--date-field string``) reads the date fields as a Solr string
field would: the query's bounds are compared letter by letter with the value exactly as
served (``2019-07-01T00:00:00``), so ``[2019-07-01T00:00:00Z TO ...]`` excludes a row
stamped ``2019-07-01T00:00:00`` ("...00Z" sorts after "...00") and an upper bound
``2019-07-31`` excludes every row of the 31st (reference: "More that public sources say",
"Date forms").
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from harvester.sim import lucene_lexer as lx
from harvester.sim.lucene import (
    BOOLEAN_FIELDS,
    DATE_FIELDS,
    LIST_FIELDS,
    NUMERIC_FIELDS,
    And,
    MatchAll,
    Node,
    Not,
    Predicate,
    Range,
    Term,
    date_bounds,
)


def matches(node: Node, row: Mapping[str, Any], *, string_dates: bool = False) -> bool:
    """True if the served ``row`` satisfies ``node`` (see the module docstring)."""
    return compile_predicate(node, string_dates=string_dates)(row)


@functools.lru_cache(maxsize=512)
def compile_predicate(node: Node, *, string_dates: bool = False) -> Predicate:
    """A closure equivalent to ``matches(node, row)``, with every bound decoded once."""
    if isinstance(node, MatchAll):
        return _always
    if isinstance(node, Term | Range):
        return _compile_leaf(node, string_dates)
    if isinstance(node, Not):
        inner = compile_predicate(node.child, string_dates=string_dates)
        return lambda row: not inner(row)
    # *:* inside an AND (the pure-negative form) is a no-op: drop it rather than call it.
    kids = [c for c in node.children if not (isinstance(node, And) and isinstance(c, MatchAll))]
    preds = tuple(compile_predicate(c, string_dates=string_dates) for c in kids) or (_always,)
    if len(preds) == 1:
        return preds[0]
    # Nested two-way closures: cheaper per row than a generator inside all() / any().
    return functools.reduce(_both if isinstance(node, And) else _either, preds)


def _both(a: Predicate, b: Predicate) -> Predicate:
    return lambda row: a(row) and b(row)


def _either(a: Predicate, b: Predicate) -> Predicate:
    return lambda row: a(row) or b(row)


def _always(row: Mapping[str, Any]) -> bool:
    return True


def _compile_leaf(node: Term | Range, string_dates: bool) -> Predicate:
    field = node.field
    dates = field in DATE_FIELDS and not string_dates  # else a plain string field
    typed = dates or field in NUMERIC_FIELDS or field in BOOLEAN_FIELDS
    if typed and isinstance(node, Term):  # equality on a typed value is the range [v TO v]
        node = Range(field, node.value, node.value)
    if isinstance(node, Term):
        value = node.value
        if field in LIST_FIELDS:
            # ``in`` is equality on each element; a bare string (type drift) counts as one.
            return lambda row: (
                value in xs if (xs := row.get(field)).__class__ is list else xs == value
            )
        return lambda row: row.get(field) == value
    if dates:
        return _date_range(node)
    if field in NUMERIC_FIELDS or field in BOOLEAN_FIELDS:
        decode = lx.parse_boolean if field in BOOLEAN_FIELDS else lx.parse_number
        low, high = (None if v is None else decode(v) for v in (node.low, node.high))
        num_check = _interval(low, high, node.include_low, node.include_high)

        def number_in_range(row: Mapping[str, Any]) -> bool:
            x = lx.served_number(row.get(field))
            return x is not None and num_check(x)

        return number_in_range
    str_check = _interval(node.low, node.high, node.include_low, node.include_high)
    if field in LIST_FIELDS:
        return lambda row: _any_element(row.get(field), str_check)
    return lambda row: (x := row.get(field)).__class__ is str and str_check(x)


def _date_range(node: Range) -> Predicate:
    """Dates: compare served ``YYYY-MM-DDTHH:MM:SS`` strings directly, decode the rest.

    For that fixed-width form string order is time order, and a bound's ``isoformat()``
    (which adds ``.ffffff`` only when non-zero) sorts correctly against it too: equal
    seconds make the shorter served string the smaller, as its time is.
    """
    field = node.field
    low, high, include_low, include_high = date_bounds(node)
    as_text = _interval(
        None if low is None else low.isoformat(),
        None if high is None else high.isoformat(),
        include_low,
        include_high,
    )
    as_datetime = _interval(low, high, include_low, include_high)

    def date_in_range(row: Mapping[str, Any]) -> bool:
        x = row.get(field)
        if x.__class__ is str and len(x) == 19 and x[10] == "T":
            return as_text(x)
        d = lx.served_datetime(x)
        return d is not None and as_datetime(d)

    return date_in_range


def _interval(low: Any, high: Any, include_low: bool, include_high: bool) -> Callable[[Any], bool]:
    """A one-comparison-per-end check for ``low <op> x <op> high`` (``None`` = open)."""
    if low is None and high is None:
        return lambda x: True
    if low is None:
        return (lambda x: x <= high) if include_high else (lambda x: x < high)
    if high is None:
        return (lambda x: x >= low) if include_low else (lambda x: x > low)
    if include_low and include_high:
        return lambda x: low <= x <= high
    if include_low:
        return lambda x: low <= x < high
    if include_high:
        return lambda x: low < x <= high
    return lambda x: low < x < high


def _any_element(value: Any, check: Callable[[Any], bool]) -> bool:
    """Multi-valued field: any string element passes; a bare string counts as one."""
    if value.__class__ is str:
        return check(value)
    if isinstance(value, list | tuple):
        for x in value:
            if x.__class__ is str and check(x):
                return True
    return False
