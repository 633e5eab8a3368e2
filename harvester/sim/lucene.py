"""A Lucene 3.6 query subset, as the simulator accepts it.

Supported: ``*:*``, ``field:value``, ``field:"quoted phrase"``, ``field:*``,
``field:[a TO b]``, ``field:{a TO b}`` (mixed brackets allowed), ``*`` as an open end,
``AND`` / ``OR`` / ``NOT`` (and ``&&`` / ``||`` / ``!``), parentheses, field groups
``field:(a OR b)`` (bare values inside take that field), and backslash escapes.
Juxtaposed clauses are joined with OR (Lucene's default operator). Anything else raises
``QuerySyntaxError`` (always ``org.apache.solr.search.SyntaxError: Cannot parse '<q>': ...``),
which the server turns into a Solr-like ``400``: wildcards inside terms, ``~``, ``^``,
``+`` / ``-`` prefixes, ``NOT NOT x``, a value without a field, ``TO`` outside a range,
unbalanced brackets, an unknown field (``undefined field xyz``) and, checked at parse time,
a bad date (``Invalid Date String:'2019-13-01'``), number or boolean for a typed field.

Tree shape: precedence is NOT > AND > OR; a chain ``a AND b AND c`` is one flat ``And``,
parentheses keep their own node, one clause is never wrapped. A pure negative group
(``NOT x`` alone, or an AND chain of NOTs) becomes ``And((MatchAll(), Not(x), ...))``,
Solr's reading of it, wherever it appears. A lone ``NOT`` clause in an OR chain prohibits
the whole chain, as in Lucene: ``a NOT b`` and ``a OR NOT b`` both mean ``a AND NOT b``,
and ``*:* NOT f:[* TO *]`` means "rows without f".

Evaluation (``matches`` / ``compile_predicate``) on a served, JSON-decoded row:

- A missing (or ``null``) field makes a Term or Range false, so ``NOT f:x`` matches it.
- ``submissionDate`` / ``createDateTime`` (served ``2019-01-01T00:00:00``, no zone, read as
  UTC): compared as datetimes. Query values are ``2019-01-01`` (midnight) or
  ``2019-01-01T00:00:00Z`` with optional fraction; date math (``NOW``, ``/DAY``) is refused.
  With ``string_dates`` they are strings like the others (any value, lexicographic).
- 0/1 flags and ``cite103Max``: numeric; served ``1``, ``1.0``, ``"1"``, ``true`` and
  ``"true"`` are all 1. Indicators: query ``true`` / ``false`` (or ``1`` / ``0``), served
  values decoded the same way.
- ``claimNumberArrayDocument``: matches if any list element matches.
- Other fields are strings: Term is exact, case-sensitive equality; Range is lexicographic,
  so ``id:[0 TO 8}`` matches the ids starting with ``0`` to ``7``.

Cost per row of a compiled predicate (CPython 3.11, one core of the dev box): 0.08 µs for
a string Term, 0.13 µs for an id Range or a flag Term, 0.17 µs for a date Range, 0.3 µs for
``submissionDate:[..] AND id:[..}``. ``parse`` and ``compile_predicate`` are memoised.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from harvester import fields
from harvester.sim import lucene_lexer as lx

# Re-exported: the corpus decodes date bounds with the same rules as the parser.
from harvester.sim.lucene_lexer import parse_date_value as parse_date_value


class QuerySyntaxError(ValueError):
    """The query is outside the supported subset; the message reads like Solr's."""


@dataclass(frozen=True, slots=True)
class MatchAll:
    """``*:*``"""


@dataclass(frozen=True, slots=True)
class Term:
    """``field:value`` or ``field:"phrase"``: exact match on the served value."""

    field: str
    value: str


@dataclass(frozen=True, slots=True)
class Range:
    """``field:[low TO high]``; ``None`` is an open end (``*``); ``field:*`` is both open."""

    field: str
    low: str | None
    high: str | None
    include_low: bool = True
    include_high: bool = True


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    child: Node


Node: TypeAlias = MatchAll | Term | Range | And | Or | Not
Predicate: TypeAlias = Callable[[Mapping[str, Any]], bool]

DATE_FIELDS: Final = frozenset(fields.DATE_FIELDS)
NUMERIC_FIELDS: Final = frozenset(fields.FLAG_FIELDS + fields.INT_FIELDS)
BOOLEAN_FIELDS: Final = frozenset(fields.INDICATOR_FIELDS)
LIST_FIELDS: Final = frozenset(fields.LIST_FIELDS)
FIELDS: Final = fields.FIELDS
_FIELD_SET: Final = fields.FIELD_SET

_PREFIX: Final = "org.apache.solr.search.SyntaxError: Cannot parse '{}': {}"
_CLAUSE_START: Final = frozenset(
    {lx.WORD, lx.QUOTED, lx.LPAREN, lx.NOT, lx.RANGE_START, lx.PLUS, lx.MINUS, lx.TO}
)


def date_bounds(node: Range) -> tuple[dt.datetime | None, dt.datetime | None, bool, bool]:
    """A date-field Range as ``(low, high, include_low, include_high)`` datetimes."""
    if node.field not in DATE_FIELDS:
        raise ValueError(f"{node.field} is not a date field")
    low = None if node.low is None else parse_date_value(node.low)
    high = None if node.high is None else parse_date_value(node.high)
    return low, high, node.include_low, node.include_high


@functools.lru_cache(maxsize=512)
def parse(text: str, *, string_dates: bool = False) -> Node:
    """Parse a query of the supported subset; raises ``QuerySyntaxError``.

    With ``string_dates`` (``--date-field string``) the date fields are string fields, whose
    values Solr never validates: any bound is taken as text (``2019-07-01T00:00:00``
    without a zone included), and compared letter by letter (``compile_predicate``).
    """
    return _Parser(text, string_dates).parse()


def _and_of(clauses: list[Node]) -> Node:
    """An AND chain; an all-negative chain gets Solr's implicit ``*:*``."""
    if all(isinstance(c, Not) for c in clauses):
        return And((MatchAll(), *clauses))
    return clauses[0] if len(clauses) == 1 else And(tuple(clauses))


class _Parser:
    """Recursive descent over the token list; one instance per query."""

    def __init__(self, query: str, string_dates: bool = False) -> None:
        self.query = query
        self.string_dates = string_dates
        try:
            self.tokens = lx.tokenize(query)
        except lx.LexError as exc:
            line, column = self._where(exc.pos)
            detail = f"Lexical error at line {line}, column {column}.  {exc.detail}"
            raise self._fail(detail) from None
        self.i = 0

    def parse(self) -> Node:
        node = self._or_expr(None)
        tok = self.tokens[self.i]
        if tok.kind != lx.EOF:
            raise self._unexpected(tok)
        return node

    # -- grammar -------------------------------------------------------------------------

    def _or_expr(self, default_field: str | None) -> Node:
        # Lucene reads a lone NOT clause in an OR chain (``a NOT b``, ``a OR NOT b``) as a
        # prohibition on the whole chain (MUST_NOT), not as one more alternative: ``*:* NOT
        # x`` is "everything except x".
        positives: list[Node] = []
        prohibited: list[Node] = []

        def take(clauses: list[Node]) -> None:
            if len(clauses) == 1 and isinstance(clauses[0], Not):
                prohibited.append(clauses[0])
            else:
                positives.append(_and_of(clauses))

        take(self._and_clauses(default_field))
        while True:
            kind = self.tokens[self.i].kind
            if kind == lx.OR:
                self.i += 1
            elif kind not in _CLAUSE_START:  # anything else ends the chain (juxtaposed = OR)
                break
            take(self._and_clauses(default_field))
        if not prohibited:
            return positives[0] if len(positives) == 1 else Or(tuple(positives))
        if not positives:
            # Solr adds *:* to a purely negative boolean query; say so in the tree.
            return And((MatchAll(), *prohibited))
        wanted = positives[0] if len(positives) == 1 else Or(tuple(positives))
        return And((wanted, *prohibited))

    def _and_clauses(self, default_field: str | None) -> list[Node]:
        clauses = [self._clause(default_field)]
        while self.tokens[self.i].kind == lx.AND:
            self.i += 1
            clauses.append(self._clause(default_field))
        return clauses

    def _clause(self, default_field: str | None) -> Node:
        tok = self.tokens[self.i]
        if tok.kind == lx.NOT:
            self.i += 1
            if self.tokens[self.i].kind == lx.NOT:  # Lucene allows one modifier per clause
                raise self._unexpected(self.tokens[self.i])
            return Not(self._primary(default_field))
        if tok.kind in (lx.PLUS, lx.MINUS):
            raise self._fail(
                f"the '{tok.image}' prefix at column {self._where(tok.pos)[1]} is not "
                "supported by this simulator; use AND / NOT"
            )
        return self._primary(default_field)

    def _primary(self, default_field: str | None) -> Node:
        tok = self.tokens[self.i]
        if tok.kind == lx.LPAREN:
            self.i += 1
            node = self._or_expr(default_field)
            self._expect(lx.RPAREN)
            self._no_suffix()
            return node
        if tok.kind == lx.WORD and self.tokens[self.i + 1].kind == lx.COLON:
            self.i += 2
            return self._field_value(tok)
        if tok.kind in (lx.WORD, lx.QUOTED, lx.RANGE_START):
            if default_field is None:
                raise self._fail(
                    "no field name specified in query and no default specified via 'df' param"
                )
            return self._value(default_field)
        raise self._unexpected(tok)

    def _field_value(self, name: lx.Token) -> Node:
        nxt = self.tokens[self.i]
        if name.image == "*":
            if nxt.kind == lx.WORD and nxt.image == "*":
                self.i += 1
                self._no_suffix()
                return MatchAll()
            raise self._fail("only *:* may use the '*' field name")
        if nxt.kind == lx.LPAREN:  # field group: bare values inside take this field
            self.i += 1
            node = self._or_expr(name.text)
            self._expect(lx.RPAREN)
            self._no_suffix()
            self._check_field(name.text)
            return node
        return self._value(name.text)

    def _value(self, field: str) -> Node:
        tok = self.tokens[self.i]
        self.i += 1
        node: Term | Range
        if tok.kind == lx.WORD and tok.image == "*":
            node = Range(field, None, None)
        elif tok.kind == lx.WORD and tok.wild:
            raise self._fail(f"wildcard term '{tok.image}' is not supported by this simulator")
        elif tok.kind in (lx.WORD, lx.QUOTED):
            node = Term(field, tok.text)
        elif tok.kind == lx.RANGE_START:
            low = self._bound()
            self._expect(lx.TO)
            high = self._bound()
            end = self._expect(lx.RANGE_END)
            node = Range(field, low, high, tok.image == "[", end.image == "]")
        else:
            raise self._unexpected(tok)
        self._no_suffix()
        if self.tokens[self.i].kind == lx.COLON:  # ``f:2019-01-01T00:00:00Z`` unquoted
            raise self._unexpected(self.tokens[self.i])
        # Like Solr, the field and the values are checked once the clause has parsed.
        self._check_field(field)
        values = [node.value] if isinstance(node, Term) else [node.low, node.high]
        for value in values:
            if value is not None:
                self._check_value(field, value)
        return node

    def _bound(self) -> str | None:
        tok = self.tokens[self.i]
        self.i += 1
        if tok.kind == lx.WORD:
            return None if tok.image == "*" else tok.text  # an escaped \* is a literal star
        if tok.kind == lx.QUOTED:
            return tok.text
        raise self._unexpected(tok)

    # -- checks and errors ---------------------------------------------------------------

    def _check_field(self, field: str) -> None:
        if field not in _FIELD_SET:
            raise self._fail(f"undefined field {field}")

    def _check_value(self, field: str, value: str) -> None:
        try:
            if field in DATE_FIELDS:
                if not self.string_dates:
                    parse_date_value(value)
            elif field in NUMERIC_FIELDS:
                lx.parse_number(value)
            elif field in BOOLEAN_FIELDS:
                lx.parse_boolean(value)
        except ValueError as exc:
            raise self._fail(str(exc)) from None

    def _no_suffix(self) -> None:
        tok = self.tokens[self.i]
        if tok.kind == lx.CARET:
            raise self._fail("boosts (^) are not supported by this simulator")
        if tok.kind == lx.TILDE:
            raise self._fail("fuzzy and proximity queries (~) are not supported by this simulator")

    def _expect(self, kind: str) -> lx.Token:
        tok = self.tokens[self.i]
        if tok.kind != kind:
            raise self._unexpected(tok)
        self.i += 1
        return tok

    def _unexpected(self, tok: lx.Token) -> QuerySyntaxError:
        line, column = self._where(tok.pos)
        detail = f'Encountered "{tok.image}" at line {line}, column {column}.'
        if tok.kind == lx.TO:
            detail += " TO is only valid inside a range such as [a TO b]."
        elif tok.kind == lx.COLON:
            detail += " Quote or escape (\\:) a ':' inside a value."
        return self._fail(detail)

    def _where(self, pos: int) -> tuple[int, int]:
        # JavaCC columns are 1-based; <EOF> sits on the last character, as in Lucene's
        # "Cannot parse 'abc:[1 TO': Encountered "<EOF>" at line 1, column 9."
        if pos >= len(self.query):
            pos = len(self.query) - 1
        if pos < 0:
            return 1, 0
        line_start = self.query.rfind("\n", 0, pos) + 1
        return self.query.count("\n", 0, pos) + 1, pos - line_start + 1

    def _fail(self, detail: str) -> QuerySyntaxError:
        return QuerySyntaxError(_PREFIX.format(self.query, detail))
