"""Tokens and literal values for the simulator's Lucene 3.6 subset (parser: ``lucene.py``).

Character classes follow Lucene 3.6's ``QueryParser.jj``: a term may not *start* with
``+ - ! ( ) : ^ [ ] " { } ~ \\`` or whitespace, but may contain ``+`` and ``-`` after its
first character (so ``2019-01-01`` is one term). Inside ``[ ... ]`` / ``{ ... }`` the
lexer switches, as Lucene does, to a range mode where a bound runs to the next whitespace
or closing bracket, which is why ``2019-01-01T00:00:00Z`` needs no escaping there.

Errors are raised as ``LexError`` with a position; the parser turns them into Solr-like
``QuerySyntaxError`` messages (kept apart so this module imports nothing from the parser).

The second half decodes literal values of the typed fields: query values (strict, an error
is a ``ValueError`` with Solr's wording) and served values (lenient about the type drift
the reference describes, ``None`` when undecodable).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Any, Final

WORD: Final = "WORD"  # a term (outside ranges) or a bound (inside ranges)
QUOTED: Final = "QUOTED"
LPAREN: Final = "LPAREN"
RPAREN: Final = "RPAREN"
COLON: Final = "COLON"
AND: Final = "AND"
OR: Final = "OR"
NOT: Final = "NOT"
TO: Final = "TO"
PLUS: Final = "PLUS"
MINUS: Final = "MINUS"
CARET: Final = "CARET"
TILDE: Final = "TILDE"
RANGE_START: Final = "RANGE_START"  # ``[`` or ``{``
RANGE_END: Final = "RANGE_END"  # ``]`` or ``}``
EOF: Final = "EOF"

# Lucene's whitespace set includes the ideographic space.
_WHITESPACE: Final = frozenset(" \t\n\r\u3000")
# One-character tokens outside ranges.
_SINGLE: Final[dict[str, str]] = {
    "(": LPAREN,
    ")": RPAREN,
    ":": COLON,
    "^": CARET,
    "~": TILDE,
    "+": PLUS,
    "-": MINUS,
    "!": NOT,
    "[": RANGE_START,
    "{": RANGE_START,
    "]": RANGE_END,
    "}": RANGE_END,
}
# Characters that end a term. ``+`` and ``-`` are absent on purpose: only a term's first
# character may not be one of them (that case never reaches the term loop).
_TERM_END: Final = _WHITESPACE | frozenset('!():^[]"{}~')
_RANGE_END_CHARS: Final = frozenset("]}")
_RANGE_STOP: Final = _WHITESPACE | _RANGE_END_CHARS
_KEYWORDS: Final[dict[str, str]] = {
    "AND": AND,
    "&&": AND,
    "OR": OR,
    "||": OR,
    "NOT": NOT,
    "TO": TO,
}
# Inside a range only ``TO`` is special (``[AND TO OR]`` is a range of two words).
_RANGE_KEYWORDS: Final[dict[str, str]] = {"TO": TO}


class LexError(Exception):
    """A lexical error at ``pos`` (0-based offset into the query)."""

    def __init__(self, pos: int, detail: str) -> None:
        super().__init__(detail)
        self.pos = pos
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Token:
    """One token: ``text`` has escapes removed; ``image`` is the raw source slice.

    ``wild`` records an *unescaped* ``*`` or ``?`` in a term, which Lucene would turn
    into a wildcard query; ``\\*`` is a literal star and leaves it False.
    """

    kind: str
    text: str
    image: str
    pos: int
    wild: bool = False


def tokenize(query: str) -> list[Token]:
    """Split ``query`` into tokens, ending with one ``EOF`` token."""
    tokens: list[Token] = []
    in_range = False
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c in _WHITESPACE:
            i += 1
        elif c == '"':
            i = _quoted(query, i, tokens)
        elif in_range:
            if c in _RANGE_END_CHARS:
                tokens.append(Token(RANGE_END, c, c, i))
                in_range = False
                i += 1
            else:
                i = _word(query, i, tokens, _RANGE_STOP, _RANGE_KEYWORDS)
        elif c in _SINGLE:
            kind = _SINGLE[c]
            tokens.append(Token(kind, c, c, i))
            in_range = kind == RANGE_START
            i += 1
        else:
            i = _word(query, i, tokens, _TERM_END, _KEYWORDS)
    tokens.append(Token(EOF, "", "<EOF>", n))
    return tokens


def _quoted(query: str, start: int, tokens: list[Token]) -> int:
    """Read ``"..."`` from ``start``; backslash escapes any character, as in Lucene."""
    chars: list[str] = []
    i = start + 1
    while i < len(query):
        c = query[i]
        if c == "\\":
            if i + 1 >= len(query):
                break
            chars.append(query[i + 1])
            i += 2
        elif c == '"':
            tokens.append(Token(QUOTED, "".join(chars), query[start : i + 1], start))
            return i + 1
        else:
            chars.append(c)
            i += 1
    raise LexError(len(query), f'Encountered: <EOF> after : "{query[start:]}"')


def _word(
    query: str, start: int, tokens: list[Token], stop: frozenset[str], keywords: dict[str, str]
) -> int:
    """Read a term (or range bound) up to the first character in ``stop``."""
    chars: list[str] = []
    wild = False
    i = start
    while i < len(query) and query[i] not in stop:
        c = query[i]
        if c == "\\":
            if i + 1 >= len(query):
                raise LexError(i, "Term can not end with escape character.")
            chars.append(query[i + 1])
            i += 2
            continue
        if c in "*?":
            wild = True
        chars.append(c)
        i += 1
    image = query[start:i]
    # Keywords are matched on the raw image, so an escaped ``\AND`` stays a plain term.
    kind = keywords.get(image, WORD)
    tokens.append(Token(kind, "".join(chars), image, start, wild))
    return i


# -- literal values: query bounds and served values of the typed fields -----------------

# Solr's date syntax (minus date math), plus the bare day some clients send.
_DATE_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?Z)?"
)
_NUMBER_RE: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BOOLEANS: Final = {"true": 1, "false": 0, "1": 1, "0": 0}


def parse_date_value(text: str) -> dt.datetime:
    """``2019-01-01`` or ``2019-01-01T00:00:00[.fff]Z`` -> naive UTC datetime.

    Raises ``ValueError("Invalid Date String:'...'")`` (Solr's wording) for anything else.
    """
    m = _DATE_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"Invalid Date String:'{text}'")
    year, month, day, hour, minute, second, frac = m.groups()
    try:
        return dt.datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((frac or "0")[:6].ljust(6, "0")),
        )
    except ValueError:
        raise ValueError(f"Invalid Date String:'{text}'") from None


def parse_number(text: str) -> float:
    """A query value for a numeric field; Python-only forms (``1_0``, ``inf``) are refused."""
    if _NUMBER_RE.fullmatch(text) is None:
        raise ValueError(f"Invalid Number: {text}")
    return float(text)


def parse_boolean(text: str) -> float:
    """A query value for an indicator, as 1.0 / 0.0 so it compares like the 0/1 flags."""
    value = _BOOLEANS.get(text.lower())
    if value is None:
        raise ValueError(f"Invalid boolean value: '{text}' (expected true or false)")
    return float(value)


def served_number(value: Any) -> float | None:
    """Decode a served flag or count: ``1``, ``1.0``, ``"1"``, ``true``, ``"true"``."""
    cls = value.__class__
    if cls is int or cls is float:
        number: float = value  # no float(): an int already compares exactly with floats
        return number
    if cls is bool:
        return 1.0 if value else 0.0
    if cls is str:
        text = value.strip().lower()
        if text in ("true", "false"):
            return 1.0 if text == "true" else 0.0
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def served_datetime(value: Any) -> dt.datetime | None:
    """Decode a served timestamp in any ISO form; aware values are moved to naive UTC."""
    if isinstance(value, dt.datetime):
        stamp = value
    elif isinstance(value, str):
        try:
            stamp = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(dt.UTC).replace(tzinfo=None)
    return stamp
