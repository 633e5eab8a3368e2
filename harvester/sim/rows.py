"""Rows as the service serves them: generated per office action, fast, with the source's quirks.

One office action yields 1-6 rows (one per rejection group) that share the application,
the document id, the mail date, the art unit, the classes, the statute flags and the load
stamp; rows differ in id, legal section, category, paragraph and claims (reference,
"Size and coverage"; samples/records-by-application.json). Load stamps are batch stamps:
a weekly load stamps every row it carries with one ``createDateTime`` (``base_batches``).
Rows are dicts whose keys are already in alphabetical order, as the service serves them,
so serialising needs no sort.

Speed matters (a 5M-row corpus is regenerated day by day while serving), so each action
draws a couple of ``getrandbits`` values and slices them into table lookups instead of
calling ``random.choice`` per field.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harvester.sim.seeding import derive_seed

Row = dict[str, Any]

FIELDS: tuple[str, ...] = (
    "actionTypeCategory", "aliceIndicator", "allowedClaimIndicator", "bilskiIndicator",
    "cite103EQ1", "cite103GT3", "cite103Max", "claimNumberArrayDocument", "closingMissing",
    "createDateTime", "createUserIdentifier", "formParagraphMissing", "groupArtUnitNumber",
    "hasRej101", "hasRej102", "hasRej103", "hasRej112", "hasRejDP", "headerMissing", "id",
    "legacyDocumentCodeIdentifier", "legalSectionCode", "mayoIndicator", "myriadIndicator",
    "nationalClass", "nationalSubclass", "obsoleteDocumentIdentifier", "paragraphNumber",
    "patentApplicationNumber", "rejectFormMissmatch", "submissionDate",
)  # fmt: skip
# The odd row lacks a field. Never id or submissionDate (a row without them is a "bad row",
# a separate option) and never createDateTime, whose per-day bounds prune queries.
DROPPABLE = tuple(f for f in FIELDS if f not in ("id", "submissionDate", "createDateTime"))
ZERO_ONE_FLAGS = (
    "cite103EQ1", "cite103GT3", "closingMissing", "formParagraphMissing", "hasRej101",
    "hasRej102", "hasRej103", "hasRej112", "hasRejDP", "headerMissing", "rejectFormMissmatch",
)  # fmt: skip
MAX_CLAIMS = 30
DRIFT_ODDS = 400  # one row in ~400 serves a flag as 1.0 or "0", one in ~800 lacks a field


def _table(weights: Mapping[Any, int], size: int) -> tuple[Any, ...]:
    """A lookup table of exactly ``size`` entries: index it with ``size``-bounded random bits."""
    assert sum(weights.values()) == size, weights
    return tuple(value for value, n in weights.items() for _ in range(n))


ROWS_PER_ACTION = _table({1: 14, 2: 18, 3: 14, 4: 9, 5: 6, 6: 3}, 64)
DOC_CODES = _table({"CTNF": 40, "CTFR": 18, "CTRS": 3, "CTEQ": 1, "CTMS": 2}, 64)
CATEGORIES = _table({"": 29, "rejected": 24, "objected": 6, "allowed": 3, "withdrawn": 2}, 64)
PARAGRAPHS = _table({"": 36, "a": 10, "b": 6, "c": 4, "d": 3, "e": 2, "1": 2, "2": 1}, 64)
CITE_MAX = _table({1: 10, 2: 22, 3: 16, 4: 8, 5: 4, 6: 2, 8: 2}, 64)
TECH_CENTERS = _table({16: 7, 17: 8, 21: 8, 24: 8, 26: 8, 28: 7, 36: 7, 37: 8, 38: 3}, 64)
USPC_CLASSES = (
    "438", "257", "514", "424", "435", "705", "707", "709", "710", "711", "712", "713", "714",
    "715", "717", "718", "719", "370", "375", "455", "348", "382", "345", "361", "362", "363",
    "700", "701", "702", "703", "704", "716", "726", "600", "604", "606", "623", "128", "073",
    "074", "280", "296", "428", "427", "430", "436", "530", "536", "549", "560", "585", "604",
    "062", "165", "210", "215", "220", "221", "222", "235", "236", "250", "253", "273",
)  # fmt: skip
# claims "a" through "b" as the service writes them: one comma-joined string.
CLAIM_RUNS = [
    [",".join(str(c) for c in range(a, b + 1)) for b in range(MAX_CLAIMS + 1)]
    for a in range(MAX_CLAIMS + 1)
]


# The legal sections an action's rows can cite, by its hasRej101/102/103/112 bits.
SECTIONS = tuple(
    tuple(s for bit, s in enumerate(("101", "102", "103", "112")) if mask >> bit & 1) or ("",)
    for mask in range(16)
)
# "THH:MM:" and "SS": formatting a load stamp is two lookups, not a strftime.
CLOCK_MINUTES = tuple(f"T{m // 60:02d}:{m % 60:02d}:" for m in range(1440))
CLOCK_SECONDS = tuple(f"{s:02d}" for s in range(60))


@dataclass(frozen=True, slots=True)
class Stamps:
    """Where createDateTime values fall: ``[first, first + span_seconds)``, first at midnight."""

    first: dt.date
    span_seconds: int

    @property
    def low(self) -> dt.datetime:
        return dt.datetime.combine(self.first, dt.time())

    @property
    def high(self) -> dt.datetime:
        return self.low + dt.timedelta(seconds=self.span_seconds - 1)


@dataclass(slots=True)
class Generated:
    """Rows in generation order, plus how the index sees rows whose served form differs."""

    rows: list[Row]
    indexed: dict[int, Row] = field(default_factory=dict)


def base_stamps(day: dt.date) -> Stamps:
    """Base rows are loaded 1 to 45 days after their mail date (bounds known without rows)."""
    return Stamps(day + dt.timedelta(days=1), 44 * 86400)


# The service loads rows in batches, every row of a batch stamped with the batch's one
# createDateTime (reference: "createDateTime is a batch stamp"; the captured 2011 rows all
# carry 2025-07-15T21:22:06, a Tuesday). Base rows go out in weekly loads on this weekday.
LOAD_WEEKDAY = 1  # Tuesday
# Which of the weekly loads after its mail date carries an office action: most go out in the
# first, a tail in the next five. The sixth starts at most 7 + 35 = 42 days after the mail
# date, so every stamp stays inside ``base_stamps``' bounds.
LOAD_DELAY = _table({0: 44, 1: 10, 2: 5, 3: 3, 4: 1, 5: 1}, 64)


def load_stamp(seed: int, load_day: dt.date) -> str:
    """The one createDateTime of the base load on ``load_day``: its time of day is seeded."""
    second = derive_seed(seed, "load", load_day.toordinal()) % 86400
    return f"{load_day.isoformat()}{CLOCK_MINUTES[second // 60]}{CLOCK_SECONDS[second % 60]}"


def base_batches(seed: int, day: dt.date) -> tuple[str, ...]:
    """The stamps a day's base rows can carry: the loads of the six weeks after it, oldest
    first. Rows of neighbouring days share them, so a load stamps thousands of rows."""
    first = day + dt.timedelta(days=1)
    first += dt.timedelta(days=(LOAD_WEEKDAY - first.weekday()) % 7)
    return tuple(
        load_stamp(seed, first + dt.timedelta(weeks=k)) for k in range(max(LOAD_DELAY) + 1)
    )


def _series(year: int) -> tuple[int, int, int]:
    # Utility application series in examination around ``year`` (series 16 began in 2018).
    newest = max(8, min(19, 16 + round((year - 2018) * 0.4)))
    return max(8, newest - 2), max(8, newest - 1), newest


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_B32_PAIRS = tuple(x + y for x in _B32 for y in _B32)


def _doc_identifier(bits: int) -> str:
    # 15 characters of the base32 alphabet, like "GTYKOVWIPPOPPY5" (75 bits, 10 at a time:
    # base64.b32encode costs more than the rest of an office action).
    p = _B32_PAIRS
    return (
        p[bits & 1023] + p[bits >> 10 & 1023] + p[bits >> 20 & 1023] + p[bits >> 30 & 1023]
        + p[bits >> 40 & 1023] + p[bits >> 50 & 1023] + p[bits >> 60 & 1023] + _B32[bits >> 70 & 31]
    )  # fmt: skip


def _uspc(bits: int, design: bool) -> tuple[str, str]:
    if bits & 31 == 0:
        return "", ""  # no classification recorded: a missing category is ""
    if design:
        return f"D{(bits >> 5) % 34 + 1:02d}", f"{(bits >> 11) % 400:03d}000"
    cls = USPC_CLASSES[(bits >> 5) % len(USPC_CLASSES)]
    sub = (bits >> 11) % 900 + 1
    frac = 0 if (bits >> 21) & 3 else (bits >> 23) % 100 * 10
    return cls, f"{sub:03d}{frac:03d}"


def generate(
    rng: random.Random,
    count: int,
    day: dt.date,
    stamps: Stamps,
    id_prefix: bytes,
    bad: frozenset[int] = frozenset(),
    batches: tuple[str, ...] | None = None,
) -> Generated:
    """``count`` rows mailed on ``day``; ids are blake2b(id_prefix + position).

    An office action's ``createDateTime`` is one of ``batches`` (batch loads: ``LOAD_DELAY``
    picks which; one stamp means every row shares it), or without them a uniform second of
    ``stamps``. The draws are the same either way, so only the stamps differ."""
    submission = f"{day.isoformat()}T00:00:00"
    series = _series(day.year)
    dates = [
        (stamps.first + dt.timedelta(days=k)).isoformat()
        for k in range(stamps.span_seconds // 86400 + 1)
    ]
    last_batch = len(batches) - 1 if batches else -1
    getrandbits = rng.getrandbits
    blake2b = hashlib.blake2b
    rows: list[Row] = []
    out = Generated(rows)
    while len(rows) < count:
        # Three draws per action, each sliced into disjoint bit fields (widths in comments).
        a = getrandbits(64)
        b = getrandbits(64)
        c = getrandbits(64)
        design = a & 31 == 0  # 5 bits: ~3% design applications
        if design:
            app = f"29{(a >> 13 & 0xFFFFF) % 1_000_000:06d}"
            unit = f"29{(a >> 39 & 15) % 10}{(a >> 43 & 15) % 10}"
        else:
            app = f"{series[(a >> 5 & 255) % 3]}{(a >> 13 & 0xFFFFF) % 1_000_000:06d}"
            unit = f"{TECH_CENTERS[a >> 33 & 63]}{(a >> 39 & 15) % 9 + 1}{(a >> 43 & 15) % 10}"
        code = DOC_CODES[a >> 47 & 63]
        restriction = code == "CTRS"  # a restriction requirement rejects nothing
        r101 = int(not restriction and (b & 255) < 31)
        r102 = int(not restriction and (b >> 8 & 255) < 77)
        r103 = int(not restriction and (b >> 16 & 255) < 179)
        r112 = int(not restriction and (b >> 24 & 255) < 115)
        rdp = int(not restriction and (b >> 32 & 255) < 31)
        cite_max = CITE_MAX[b >> 40 & 63] if r103 else 0
        # "exactly one reference" can hold for one 103 rejection while another cites more.
        eq1 = int(cite_max == 1 or (cite_max > 1 and b >> 46 & 3 == 0))
        sections = SECTIONS[r101 | r102 << 1 | r103 << 2 | r112 << 3]
        cls, sub = _uspc(getrandbits(32), design)
        if batches:
            created = batches[min(LOAD_DELAY[c >> 23 & 63], last_batch)]
        else:
            stamp = (c >> 23) % stamps.span_seconds
            created = (
                dates[stamp // 86400]
                + CLOCK_MINUTES[stamp % 86400 // 60]
                + CLOCK_SECONDS[stamp % 60]
            )
        claims = (c & 31) % MAX_CLAIMS + 1
        template: Row = {
            "actionTypeCategory": "",
            "aliceIndicator": bool(r101 and b >> 48 & 1),
            "allowedClaimIndicator": b >> 61 == 0 and c >> 22 & 1 == 0,
            "bilskiIndicator": bool(r101 and b >> 52 & 15 == 0),
            "cite103EQ1": eq1,
            "cite103GT3": int(cite_max > 3),
            "cite103Max": cite_max,
            "claimNumberArrayDocument": None,
            "closingMissing": int(c >> 16 & 63 == 0),
            "createDateTime": created,
            "createUserIdentifier": "ETL_SYS",
            "formParagraphMissing": int(a >> 59 == 0),
            "groupArtUnitNumber": unit,
            "hasRej101": r101,
            "hasRej102": r102,
            "hasRej103": r103,
            "hasRej112": r112,
            "hasRejDP": rdp,
            "headerMissing": int(c >> 5 & 63 == 0),
            "id": "",
            "legacyDocumentCodeIdentifier": code,
            "legalSectionCode": "",
            "mayoIndicator": bool(r101 and b >> 49 & 7 == 0),
            "myriadIndicator": bool(r101 and b >> 56 & 31 == 0),
            "nationalClass": cls,
            "nationalSubclass": sub,
            "obsoleteDocumentIdentifier": _doc_identifier(getrandbits(75)),
            "paragraphNumber": "",
            "patentApplicationNumber": app,
            "rejectFormMissmatch": int(c >> 11 & 31 == 0),
            "submissionDate": submission,
        }
        # One 64-byte digest gives the ids of four rows; they are unique because the input
        # (prefix, first position of the action, block) is.
        first_pos = len(rows)
        ids = blake2b(b"%s%d" % (id_prefix, first_pos), digest_size=64).hexdigest()
        for k in range(min(ROWS_PER_ACTION[a >> 53 & 63], count - first_pos)):
            if k == 4:
                ids = blake2b(b"%s%d+" % (id_prefix, first_pos), digest_size=64).hexdigest()
            r = getrandbits(64)
            pos = first_pos + k
            row = template.copy()
            row["id"] = ids[(k & 3) * 32 : (k & 3) * 32 + 32]
            row["actionTypeCategory"] = CATEGORIES[r & 63]
            row["legalSectionCode"] = (
                "" if r >> 6 & 3 == 0 else sections[(r >> 8 & 31) % len(sections)]
            )
            row["paragraphNumber"] = PARAGRAPHS[r >> 13 & 63]
            first = 1 if r >> 19 & 1 else (r >> 20 & 255) % claims + 1
            last = claims if r >> 28 & 1 else first + (r >> 29 & 255) % (claims - first + 1)
            row["claimNumberArrayDocument"] = [CLAIM_RUNS[first][last]]
            quirk = (r >> 37 & 0xFFF) % DRIFT_ODDS
            if quirk == 0:
                out.indexed[pos] = row.copy()  # the index holds the number; only the
                name = ZERO_ONE_FLAGS[(r >> 50 & 63) % len(ZERO_ONE_FLAGS)]  # stored form drifts
                row[name] = 1.0 if row[name] else "0"
            elif quirk == 1 and (r >> 49 & 1):  # half of 1/400: one row in ~800
                del row[DROPPABLE[(r >> 50 & 63) % len(DROPPABLE)]]
            if pos in bad:
                out.indexed.setdefault(pos, row.copy())
                spoil(row, r >> 58)
            rows.append(row)
    return out


def spoil(row: Row, bits: int) -> None:
    """Make a row undecodable as a real source occasionally does: no id, or a bad date."""
    kind = bits % 4
    if kind == 0:
        del row["id"]
    elif kind == 1:
        day = dt.date.fromisoformat(row["submissionDate"][:10])
        row["submissionDate"] = f"{day.month:02d}/{day.day:02d}/{day.year}"
    elif kind == 2:
        row["submissionDate"] = row["submissionDate"][:5] + "13-45T00:00:00"
    else:
        row["submissionDate"] = ""
