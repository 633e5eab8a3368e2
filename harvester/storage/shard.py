"""``Shard``: one slice of the source, and the only place its key and slug are made.

A shard is defined by mail dates (one day, or several days within one month) and optionally
an ``id`` range, optionally narrowed by a ``scope`` query (refresh's changed rows). Keys are
deterministic and readable, and ``Shard.parse_key`` reads them back:

    2019-07-15                 one day
    2019-07-01..2019-07-09     days of one month
    2019-07-15/id[0-8)         one day, ids from "0" (inclusive) to "8" (exclusive)
    2019-07-15/id[8-)          one day, ids from "8" to the end of the id space
    undated                    rows without a mail date

The slug is the key made safe for a file name (``2019-07-15_id0-8``); it is injective on
the keys above. It names the shard's marker, its page checkpoint, its quarantine file and
its data files (``datafile.DataFileName``: ``part-<slug>.parquet``), so writing a shard again
replaces its files; ``Shard.parse_slug`` reads a slug back.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field, replace
from typing import Any, Final

UNDATED_KEY: Final = "undated"
UNDATED_CRITERIA: Final = "*:* NOT submissionDate:[* TO *]"
# Before any mail date the service can hold: the open start of probes and refresh queries.
EARLIEST_PROBE: Final = dt.date(1900, 1, 1)

_DAY: Final = r"\d{4}-\d{2}-\d{2}"
_BOUND: Final = r"[0-9A-Za-z]*"
_KEY: Final = re.compile(rf"({_DAY})(?:\.\.({_DAY}))?(?:/id\[({_BOUND})-({_BOUND})\))?")
_SLUG_UNSAFE: Final = re.compile(r"[^A-Za-z0-9.-]+")
_SLUG: Final = re.compile(rf"({_DAY})(?:_to_({_DAY}))?(?:_id({_BOUND})-({_BOUND}))?")


def changed_since_scope(since: str, stamp_form: str = "{stamp}Z") -> str:
    """The query for rows created or changed at or after ``since`` (an ISO timestamp without
    a zone), its bound written in the form proven on the service (``service``): the one
    place refresh, plan and verify spell it."""
    return f"createDateTime:[{stamp_form.format(stamp=since)} TO *]"


@dataclass(frozen=True)
class Shard:
    """One slice of the source. ``expected`` is the count seen when planned (not identity)."""

    first: dt.date
    last: dt.date
    id_low: str | None = None
    id_high: str | None = None
    undated: bool = False
    expected: int = field(default=-1, compare=False)
    scope: str | None = None

    # -- names ----------------------------------------------------------------------------
    @property
    def key(self) -> str:
        if self.undated:
            return UNDATED_KEY
        days = self.first.isoformat()
        if self.last != self.first:
            days = f"{days}..{self.last.isoformat()}"
        if not self.has_id_range:
            return days
        return f"{days}/id[{self.id_low or ''}-{self.id_high or ''})"

    @classmethod
    def parse_key(cls, key: str) -> Shard:
        """The shard a key names (without scope or expected count); ValueError otherwise."""
        if key == UNDATED_KEY:
            return cls(EARLIEST_PROBE, EARLIEST_PROBE, undated=True)
        match = _KEY.fullmatch(key)
        if match is None:
            raise ValueError(f"not a shard key: {key!r}")
        first = dt.date.fromisoformat(match[1])
        last = dt.date.fromisoformat(match[2]) if match[2] else first
        if match[3] is None:
            return cls(first, last)
        return cls(first, last, match[3] or None, match[4] or None)

    @property
    def slug(self) -> str:
        """The key as a file-name-safe string (injective for the keys this module makes)."""
        key = self.key.replace("..", "_to_").replace("/id[", "_id").replace(")", "")
        return _SLUG_UNSAFE.sub("_", key)

    @classmethod
    def parse_slug(cls, slug: str) -> Shard:
        """The shard a slug names (``parse_key`` of the key it was made from); ValueError for
        anything ``slug`` would not make."""
        match = _SLUG.fullmatch(slug)
        if slug == UNDATED_KEY:
            key = UNDATED_KEY
        elif match is None:
            raise ValueError(f"not a shard slug: {slug!r}")
        else:
            key = match[1] + (f"..{match[2]}" if match[2] else "")
            if match[3] is not None:
                key += f"/id[{match[3]}-{match[4]})"
        shard = cls.parse_key(key)
        if shard.slug != slug:  # e.g. "2019-07-15_to_2019-07-15": no key makes it
            raise ValueError(f"not a shard slug: {slug!r}")
        return shard

    # -- what it covers -------------------------------------------------------------------
    @property
    def has_id_range(self) -> bool:
        return self.id_low is not None or self.id_high is not None

    @property
    def span(self) -> tuple[dt.date, dt.date] | None:
        """The mail days it covers (None for the undated shard)."""
        return None if self.undated else (self.first, self.last)

    @property
    def days(self) -> list[dt.date]:
        return [self.first + dt.timedelta(days=i) for i in range((self.last - self.first).days + 1)]

    def criteria(self, date_template: str) -> str:
        if self.undated:
            return UNDATED_CRITERIA
        text = date_template.format(start=self.first.isoformat(), end=self.last.isoformat())
        if self.scope:
            text = f"({self.scope}) AND {text}"
        if not self.has_id_range:
            return text
        high = f"{self.id_high}}}" if self.id_high else "*]"
        return f"{text} AND id:[{self.id_low or '*'} TO {high}"

    # -- derived shards -------------------------------------------------------------------
    def with_expected(self, count: int) -> Shard:
        return replace(self, expected=count)

    def narrowed(
        self, first: dt.date, last: dt.date, id_low: str | None = None, id_high: str | None = None
    ) -> Shard:
        """A piece of this shard (same scope), not yet counted."""
        return replace(self, first=first, last=last, id_low=id_low, id_high=id_high, expected=-1)

    # -- stored form ----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
            "id_low": self.id_low,
            "id_high": self.id_high,
            "undated": self.undated,
            "expected": self.expected,
            "scope": self.scope,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Shard:
        return cls(
            dt.date.fromisoformat(data["first"]),
            dt.date.fromisoformat(data["last"]),
            data.get("id_low"),
            data.get("id_high"),
            bool(data.get("undated", False)),
            int(data.get("expected", -1)),
            data.get("scope"),
        )


def month_spans(first: dt.date, last: dt.date) -> list[tuple[dt.date, dt.date]]:
    """Calendar months covering [first, last], clipped to it."""
    spans = []
    start = first
    while start <= last:
        next_month = (start.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
        end = min(last, next_month - dt.timedelta(days=1))
        spans.append((start, end))
        start = next_month
    return spans
