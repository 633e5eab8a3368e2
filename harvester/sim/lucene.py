"""A Lucene 3.6 query subset, as the simulator accepts it.

Supported: ``*:*``, ``field:value``, ``field:"quoted phrase"``, ``field:*``,
``field:[a TO b]``, ``field:{a TO b}`` (mixed brackets allowed), ``*`` as an open end,
``AND`` / ``OR`` / ``NOT``, parentheses, and backslash escapes. Juxtaposed clauses are
joined with OR (Lucene's default operator). Anything else raises ``QuerySyntaxError``,
which the server turns into a Solr-like ``400``.

This module only defines the syntax tree and its evaluation against one served row; the
corpus decides how to use it to avoid scanning every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias


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
