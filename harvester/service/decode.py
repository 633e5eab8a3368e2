"""Served JSON docs -> one Arrow table (``ARROW_SCHEMA``), quarantined rows, unknown fields.

This runs on every one of ~87M rows, so it works column by column: each field is pulled out
of all docs as one Python list (``map(itemgetter)``, C speed), checked and converted by a fast
path that covers the normal served forms, and turned into one Arrow array. Only a column
whose fast path fails (a missing field, a drifted type, a bad value) takes the per-value slow
path, and only that column. Dates repeat heavily (a shard is one day), so each distinct date
string is parsed once. A row with any bad value is quarantined whole, with the first reason
found, and dropped from the table by one filter at the end.

Measured on this project's 2-core dev box (Python 3.11, pinned to one core, batches of 10k
rows, the three sample rows cycled with unique ids and dates): ~400k rows/s for rows as
served; ~200k rows/s when every row lacks a field, has an unknown one and drifted flag
forms (slow paths in several columns). The harvest needs >= 100k rows/s.

The rules (also in docs/schema.md):

- ``id`` absent, null, empty or not a string -> quarantine "missing id ...".
- ``submissionDate`` absent/null -> "missing submissionDate"; unparseable or year outside
  1900..2999 (it becomes the partition path) -> "bad submissionDate: ...".
- ``createDateTime`` present but unparseable -> "bad createDateTime: ...".
- A bad flag / int / list / string value -> "bad <field>: <repr, truncated>".
- Any other absent or null field -> null. ``""`` stays ``""``.
- Fields the schema does not know go, as one JSON object, to ``unknownFields``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Final

import orjson
import pyarrow as pa

from harvester.fields import (
    BOOL_FIELDS,
    FIELD_SET,
    FIELDS,
    INT_FIELDS,
    LIST_FIELDS,
    STRING_FIELDS,
)
from harvester.storage.partition import MAX_YEAR, MIN_YEAR
from harvester.storage.schema import ARROW_SCHEMA, COLUMNS

_INT32_MAX: Final = 2**31 - 1
_REPR_MAX: Final = 80


@dataclass(frozen=True)
class QuarantinedRow:
    """A served doc that could not be decoded, kept verbatim with why and where from."""

    reason: str
    source: str
    doc: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "source": self.source, "doc": self.doc}


@dataclass
class DecodeResult:
    table: pa.Table
    quarantined: list[QuarantinedRow] = field(default_factory=list)
    unknown_fields: Counter[str] = field(default_factory=Counter)


class _Bad(Exception):
    """A value that cannot be decoded; its message becomes (part of) the quarantine reason."""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _REPR_MAX else text[: _REPR_MAX - 3] + "..."


# --- flags -------------------------------------------------------------------------------
# 0 == 0.0 == False and 1 == 1.0 == True hash alike, so these keys also cover the numeric and
# boolean forms; other spellings of "true"/"false" are handled by the slow path (lower()).
_BOOL: Final[dict[Any, bool]] = {0: False, 1: True, "0": False, "1": True}
_BOOL.update({"false": False, "true": True, "False": False, "True": True})


def _bool_value(value: Any) -> bool:
    if isinstance(value, bool | int | float):
        if value == 0 or value == 1:
            return bool(value)
    elif isinstance(value, str) and value.lower() in _BOOL:
        return _BOOL[value.lower()]
    raise _Bad(_short(value))


# --- integers, strings, lists ------------------------------------------------------------
def _int_value(value: Any) -> int:
    if isinstance(value, bool):  # a bool is an int to Python, but not a count
        raise _Bad(_short(value))
    integral_float = isinstance(value, float) and value.is_integer()
    digits = isinstance(value, str) and re.fullmatch(r"-?\d{1,10}", value.strip()) is not None
    if not (isinstance(value, int) or integral_float or digits):
        raise _Bad(_short(value))
    number = int(value)
    if not -_INT32_MAX - 1 <= number <= _INT32_MAX:
        raise _Bad(_short(value))
    return number


def _str_value(value: Any) -> str:
    # An int is kept as its digits (drift: a digit string served as a number); anything
    # else (float, bool, list, object) has no single faithful string form.
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _Bad(_short(value))


def _list_value(value: Any) -> list[str | None]:
    # Served as a list of (one comma-joined) strings; a bare string is a single-valued form
    # of the same thing, int claim numbers keep their digits, a null item stays null.
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        try:
            return [None if item is None else _str_value(item) for item in value]
        except _Bad:
            pass
    raise _Bad(_short(value))


# --- dates -------------------------------------------------------------------------------
_DATE_RE: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?"
)
_EPOCH: Final = dt.datetime(1970, 1, 1)
_EPOCH_DAY: Final = dt.date(1970, 1, 1).toordinal()
_MICRO: Final = dt.timedelta(microseconds=1)


def _parse_datetime(value: Any) -> tuple[dt.datetime, dt.date]:
    """(the instant as naive UTC, the calendar date as written)."""
    match = _DATE_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise _Bad(_short(value))
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    y, mo, d, h, mi, s = (int(part or 0) for part in (year, month, day, hour, minute, second))
    try:
        written = dt.datetime(y, mo, d, h, mi, s, int((fraction or "0")[:6].ljust(6, "0")))
        instant = written
        if zone and zone != "Z":
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            offset = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            instant = written - sign * offset
    except (ValueError, OverflowError) as exc:
        raise _Bad(_short(value)) from exc
    return instant, written.date()


def _day_number(value: Any) -> int:
    day = _parse_datetime(value)[1]
    if not MIN_YEAR <= day.year <= MAX_YEAR:
        raise _Bad(f"{_short(value)} (year outside {MIN_YEAR}..{MAX_YEAR})")
    return day.toordinal() - _EPOCH_DAY


def _micros(value: Any) -> int:
    return (_parse_datetime(value)[0] - _EPOCH) // _MICRO


# --- columns -----------------------------------------------------------------------------
class _Decoder:
    """Decodes the columns of one batch; collects the first failure reason of each row."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs
        self.bad: dict[int, str] = {}
        self.has_missing: set[int] = set()  # rows lacking some known field

    def raw(self, name: str) -> list[Any]:
        try:
            return list(map(itemgetter(name), self.docs))
        except KeyError:
            column = [doc.get(name, _MISSING) for doc in self.docs]
            self.has_missing.update(i for i, v in enumerate(column) if v is _MISSING)
            return [None if v is _MISSING else v for v in column]

    def slow(self, name: str, column: list[Any], convert: Callable[[Any], Any]) -> list[Any]:
        """Per-value conversion; a bad value nulls its cell and quarantines its row."""
        out: list[Any] = []
        for i, value in enumerate(column):
            if value is None:
                out.append(None)
                continue
            try:
                out.append(convert(value))
            except _Bad as exc:
                self.bad.setdefault(i, f"bad {name}: {exc}")
                out.append(None)
        return out

    def cached(self, name: str, column: list[Any], convert: Callable[[Any], int]) -> list[Any]:
        """Convert each distinct value once (dates repeat); unhashable values go slow."""
        try:
            distinct = set(column)
        except TypeError:
            return self.slow(name, column, convert)
        table: dict[Any, int | None] = {None: None}
        failed = False
        for value in distinct:
            if value is not None:
                try:
                    table[value] = convert(value)
                except _Bad:
                    failed = True
        if failed:
            return self.slow(name, column, convert)
        return list(map(table.__getitem__, column))

    def array(self, name: str) -> pa.Array:
        column = self.raw(name)
        if name == "id":
            if None in column or "" in column or not _all_types(column, str):
                for i, value in enumerate(column):
                    if not (isinstance(value, str) and value):
                        why = "" if value in (None, "") else f" (not a string: {_short(value)})"
                        self.bad.setdefault(i, "missing id" + why)
                        column[i] = ""
            return pa.array(column, pa.string())
        if name in STRING_FIELDS:
            if _all_types(column, str, type(None)):
                return pa.array(column, pa.string())
            return pa.array(self.slow(name, column, _str_value), pa.string())
        if name in BOOL_FIELDS:
            try:
                return pa.array(list(map(_BOOL.__getitem__, column)), pa.bool_())
            except (KeyError, TypeError):
                return pa.array(self.slow(name, column, _bool_value), pa.bool_())
        if name in INT_FIELDS:
            if not _all_types(column, int, type(None)):
                column = self.slow(name, column, _int_value)
            try:
                return pa.array(column, pa.int32())
            except (pa.ArrowInvalid, OverflowError):
                return pa.array(self.slow(name, column, _int_value), pa.int32())
        if name in LIST_FIELDS:
            if _all_types(column, list, type(None)):
                try:
                    return pa.array(column, pa.list_(pa.string()))
                except (pa.ArrowTypeError, pa.ArrowInvalid):
                    pass
            return pa.array(self.slow(name, column, _list_value), pa.list_(pa.string()))
        if name == "submissionDate":
            for i, value in enumerate(column):
                if value is None:
                    self.bad.setdefault(i, "missing submissionDate")
            days = self.cached(name, column, _day_number)
            # Rows quarantined here hold 0 (1970-01-01) until the final filter drops them.
            days = [0 if d is None else d for d in days]
            return pa.array(days, pa.int32()).cast(pa.date32())
        if name == "createDateTime":
            micros = self.cached(name, column, _micros)
            return pa.array(micros, pa.int64()).cast(pa.timestamp("us"))
        raise AssertionError(f"no decoder for {name}")  # pragma: no cover

    def unknown(self, counter: Counter[str]) -> pa.Array:
        """The ``unknownFields`` column; only rows that may hold an unknown key are scanned."""
        width = len(FIELDS)
        out: list[str | None] = [None] * len(self.docs)
        for i, doc in enumerate(self.docs):
            # A row holding every known field has an unknown one iff it has more keys.
            if len(doc) > width or i in self.has_missing:
                extra = {k: v for k, v in doc.items() if k not in FIELD_SET}
                if extra:
                    counter.update(extra.keys())
                    out[i] = _to_json(extra)
        return pa.array(out, pa.string())


_MISSING: Final = object()
DECODE_CHUNK: Final = 1000  # docs decoded together (see decode_docs)
_KEY_FIELDS: Final = ("id", "submissionDate", "createDateTime")
_KEYS_FIRST: Final = (*_KEY_FIELDS, *(name for name in FIELDS if name not in _KEY_FIELDS))


def _all_types(column: list[Any], *types: type) -> bool:
    return set(map(type, column)).issubset(types)


def _to_json(value: dict[str, Any]) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # e.g. an int beyond 64 bits; the stdlib encoder handles those
        return json.dumps(value, sort_keys=True, default=repr)


def decode_docs(docs: Sequence[Mapping[str, Any]], source: str) -> DecodeResult:
    """Decode served docs into a table of ``ARROW_SCHEMA``; bad rows go to ``quarantined``."""
    rows: list[dict[str, Any]] = []
    quarantined: list[tuple[int, QuarantinedRow]] = []
    for doc in docs:
        if isinstance(doc, dict):
            rows.append(doc)
        elif isinstance(doc, Mapping):
            rows.append(dict(doc))
        else:  # not a JSON object at all: keep it, wrapped, for inspection
            quarantined.append((-1, QuarantinedRow("row is not an object", source, {"value": doc})))
    counter: Counter[str] = Counter()
    # A shard's docs are decoded DECODE_CHUNK at a time: each column is a pass over the
    # docs, and over a whole shard (up to 10,000 docs, tens of MB of dicts) every pass
    # missed the CPU caches, so decoding cost more per row the larger the shard (3.9 µs a
    # row in batches of 1,000, 7.8 µs in batches of 10,000): the CPU per row of a harvest
    # grew with the corpus' density. Every decision is per row, so the rows, the
    # quarantine and its reasons are the same whatever the batch.
    tables = []
    for first in range(0, max(1, len(rows)), DECODE_CHUNK):
        batch = rows[first : first + DECODE_CHUNK]
        decoder = _Decoder(batch)
        # Key columns first, so a row's quarantine reason names its most basic problem.
        decoded = {name: decoder.array(name) for name in _KEYS_FIRST}
        arrays = [decoded[name] for name in FIELDS]
        arrays.append(decoder.unknown(counter))
        part = pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)
        if decoder.bad:
            keep = [True] * len(batch)
            for i, reason in decoder.bad.items():
                keep[i] = False
                quarantined.append((first + i, QuarantinedRow(reason, source, dict(batch[i]))))
            part = part.filter(pa.array(keep, pa.bool_()))
        tables.append(part)
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables).combine_chunks()
    quarantined.sort(key=lambda item: item[0])
    assert table.column_names == list(COLUMNS)
    return DecodeResult(table, [q for _, q in quarantined], counter)
