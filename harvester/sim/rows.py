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
import sys
from array import array
from bisect import bisect_right
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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


class _DayContext(NamedTuple):
    """What every office action of one generated day shares (decoded once per call)."""

    submission: str
    series: tuple[int, int, int]
    dates: tuple[str, ...]
    span_seconds: int
    batches: tuple[str, ...] | None
    id_prefix: bytes
    bad: frozenset[int]


def _context(
    day: dt.date,
    stamps: Stamps,
    id_prefix: bytes,
    bad: frozenset[int],
    batches: tuple[str, ...] | None,
) -> _DayContext:
    dates = tuple(
        (stamps.first + dt.timedelta(days=k)).isoformat()
        for k in range(stamps.span_seconds // 86400 + 1)
    )
    submission = f"{day.isoformat()}T00:00:00"
    return _DayContext(
        submission, _series(day.year), dates, stamps.span_seconds, batches or None, id_prefix, bad
    )


def _action(
    ctx: _DayContext,
    a: int,
    b: int,
    c: int,
    u32: int,
    u75: int,
    first_pos: int,
    bits: Sequence[int],
    indexed: dict[int, Row],
    wanted: Container[int] | None = None,
) -> list[Row]:
    """The rows of one office action from its draws: ``a``, ``b``, ``c`` (64 bits each),
    ``u32``, ``u75`` and one 64-bit value per row (``bits``), in the order ``generate`` draws
    them. The one place a row is made: ``generate`` and ``rows_at`` both call it, so a row
    built on its own is the row its day would hold. ``wanted`` (positions) keeps only those
    rows, in position order; ``indexed`` receives the index's form of rows served otherwise.
    """
    submission, series, dates, span_seconds, batches, prefix, bad = ctx
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
    cls, sub = _uspc(u32, design)
    if batches:
        created = batches[min(LOAD_DELAY[c >> 23 & 63], len(batches) - 1)]
    else:
        stamp = (c >> 23) % span_seconds
        created = (
            dates[stamp // 86400] + CLOCK_MINUTES[stamp % 86400 // 60] + CLOCK_SECONDS[stamp % 60]
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
        "obsoleteDocumentIdentifier": _doc_identifier(u75),
        "paragraphNumber": "",
        "patentApplicationNumber": app,
        "rejectFormMissmatch": int(c >> 11 & 31 == 0),
        "submissionDate": submission,
    }
    # One 64-byte digest gives the ids of four rows; they are unique because the input
    # (prefix, first position of the action, block) is. Rows 5 and 6 take a second one.
    ids = hashlib.blake2b(b"%s%d" % (prefix, first_pos), digest_size=64).hexdigest()
    if len(bits) > 4:
        ids += hashlib.blake2b(b"%s%d+" % (prefix, first_pos), digest_size=64).hexdigest()
    rows: list[Row] = []
    picked: Iterable[int] = range(len(bits))
    if wanted is not None:
        picked = [k for k in picked if first_pos + k in wanted]
    for k in picked:
        r = bits[k]
        pos = first_pos + k
        row = template.copy()
        row["id"] = ids[k * 32 : k * 32 + 32]
        row["actionTypeCategory"] = CATEGORIES[r & 63]
        row["legalSectionCode"] = "" if r >> 6 & 3 == 0 else sections[(r >> 8 & 31) % len(sections)]
        row["paragraphNumber"] = PARAGRAPHS[r >> 13 & 63]
        first = 1 if r >> 19 & 1 else (r >> 20 & 255) % claims + 1
        last = claims if r >> 28 & 1 else first + (r >> 29 & 255) % (claims - first + 1)
        row["claimNumberArrayDocument"] = [CLAIM_RUNS[first][last]]
        quirk = (r >> 37 & 0xFFF) % DRIFT_ODDS
        if quirk == 0:
            indexed[pos] = row.copy()  # the index holds the number; only the
            name = ZERO_ONE_FLAGS[(r >> 50 & 63) % len(ZERO_ONE_FLAGS)]  # stored form drifts
            row[name] = 1.0 if row[name] else "0"
        elif quirk == 1 and (r >> 49 & 1):  # half of 1/400: one row in ~800
            del row[DROPPABLE[(r >> 50 & 63) % len(DROPPABLE)]]
        if pos in bad:
            indexed.setdefault(pos, row.copy())
            spoil(row, r >> 58)
        rows.append(row)
    return rows


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
    ``stamps``. The draws are the same either way, so only the stamps differ. Per action
    the draws are, in this order: ``a``, ``b``, ``c`` (64 bits), 32 bits (the classes),
    75 bits (the document id), then 64 bits per row; ``rng`` is advanced by exactly those,
    so a caller may go on drawing from it (``skeleton`` and ``rows_at`` rely on the order)."""
    ctx = _context(day, stamps, id_prefix, bad, batches)
    getrandbits = rng.getrandbits
    rows: list[Row] = []
    out = Generated(rows)
    while len(rows) < count:
        a = getrandbits(64)
        b = getrandbits(64)
        c = getrandbits(64)
        u32 = getrandbits(32)
        u75 = getrandbits(75)
        first_pos = len(rows)
        n = min(ROWS_PER_ACTION[a >> 53 & 63], count - first_pos)
        bits = [getrandbits(64) for _ in range(n)]
        rows.extend(_action(ctx, a, b, c, u32, u75, first_pos, bits, out.indexed))
    return out


# --- a day without its rows: ids, load batches and where each action's draws lie -------

# ``random.Random.getrandbits(n)`` takes ceil(n / 32) 32-bit outputs of the Mersenne
# Twister, least significant first (a partial top word keeps its high bits). So a day's
# draws can be taken as one run of 32-bit words and sliced: an action uses 10 words
# (a, b, c: 2 each; 32 bits: 1; 75 bits: 3) and 2 per row. Every action has a row, so a
# day of ``count`` rows uses at most 12 words a row.
WORDS_PER_ACTION = 10
WORDS_PER_ROW = 2
_WORD = "I"
assert array(_WORD).itemsize == 4, "array('I') must hold 32-bit words"


def draw_words(rng: random.Random, n: int) -> array[int]:
    """The next ``n`` 32-bit outputs of ``rng``, in the order ``getrandbits`` takes them."""
    words = array(_WORD)
    if n:
        words.frombytes(rng.getrandbits(32 * n).to_bytes(4 * n, "little"))
        if sys.byteorder == "big":
            words.byteswap()
    return words


@dataclass(slots=True)
class Skeleton:
    """A day's base rows as the index sees their keys, without generating them.

    ``ids`` and ``delays`` (the ``LOAD_DELAY`` of each row's action: which weekly load
    stamps it) are in generation order; ``action_pos`` holds each action's first position
    and ``action_word`` where its draws begin in the day's words (``draw_words``), so
    ``rows_at`` can build any rows alone. ``ids`` is empty when built without them. Exactly
    what ``generate`` would make for the same draws (a test compares them)."""

    count: int
    ids: list[str]
    delays: bytes
    action_pos: array[int]
    action_word: array[int]
    words: int  # words the day's rows use
    grouped: list[list[str]] | None = None  # built when first asked (``ids_by_delay``)
    order: tuple[str, array[int]] | None = None  # (order key, index order): the corpus' cache

    def ids_by_delay(self) -> list[list[str]]:
        """The ids of each load delay's rows, sorted (for bisection)."""
        if self.grouped is None:
            groups: list[list[str]] = [[] for _ in range(max(LOAD_DELAY) + 1)]
            for row_id, delay in zip(self.ids, self.delays, strict=True):
                groups[delay].append(row_id)
            for group in groups:
                group.sort()
            self.grouped = groups
        return self.grouped

    def histogram(self) -> tuple[int, ...]:
        """Rows per ``LOAD_DELAY`` value (index: the delay in weeks)."""
        return tuple(self.delays.count(delay) for delay in range(max(LOAD_DELAY) + 1))


# The ids of an action's first n rows (n <= 4) in one 128-hex digest.
_ID_SLICES = [tuple(slice(i * 32, i * 32 + 32) for i in range(n)) for n in range(5)]
_RUNS = [[bytes([d]) * k for k in range(7)] for d in range(max(LOAD_DELAY) + 1)]


def skeleton(
    rng: random.Random, count: int, id_prefix: bytes, *, with_ids: bool = True
) -> Skeleton:
    """The skeleton of the ``count`` rows ``generate(rng, count, ..., id_prefix)`` makes:
    the same draws (``rng`` fresh in the same state), read as words and sliced, ~10 times
    cheaper than the rows. ``with_ids=False`` skips the ids (stamp counts need none)."""
    # Drawn as needed: ~6 words a row on average, at most 12 (the stream continues).
    words = draw_words(rng, 7 * count + 64)
    limit = len(words) - WORDS_PER_ACTION - 6 * WORDS_PER_ROW  # room for a whole action
    action_pos = array(_WORD)
    action_word = array(_WORD)
    action_delay = bytearray()
    sizes = bytearray()
    next_pos, next_word = action_pos.append, action_word.append
    next_delay, next_size = action_delay.append, sizes.append
    pos = offset = 0
    while pos < count:  # the hot loop: one pass over the actions, lookups only
        if offset > limit:
            words.extend(draw_words(rng, 2 * count + 64))
            limit = len(words) - WORDS_PER_ACTION - 6 * WORDS_PER_ROW
        n = ROWS_PER_ACTION[words[offset + 1] >> 21 & 63]  # a >> 53 & 63
        if n > count - pos:
            n = count - pos
        next_pos(pos)
        next_word(offset)
        next_delay(LOAD_DELAY[words[offset + 4] >> 23 & 63])  # c >> 23 & 63
        next_size(n)
        pos += n
        offset += WORDS_PER_ACTION + WORDS_PER_ROW * n
    delays = b"".join([_RUNS[d][n] for d, n in zip(action_delay, sizes, strict=True)])
    ids: list[str] = []
    if with_ids:
        blake2b, more, slices = hashlib.blake2b, ids.extend, _ID_SLICES
        for first, n in zip(action_pos, sizes, strict=True):
            digest = blake2b(b"%s%d" % (id_prefix, first), digest_size=64).hexdigest()
            more(map(digest.__getitem__, slices[min(n, 4)]))
            if n > 4:
                digest = blake2b(b"%s%d+" % (id_prefix, first), digest_size=64).hexdigest()
                more(map(digest.__getitem__, slices[n - 4]))
    return Skeleton(count, ids, delays, action_pos, action_word, offset)


def rows_at(
    rng: random.Random,
    plan: Skeleton,
    positions: Iterable[int],
    day: dt.date,
    stamps: Stamps,
    id_prefix: bytes,
    bad: frozenset[int] = frozenset(),
    batches: tuple[str, ...] | None = None,
) -> dict[int, Row]:
    """The served rows at ``positions`` (generation order) of the day ``plan`` describes,
    each equal to ``generate(rng, plan.count, ...).rows[position]``, without making the
    others: ``rng`` (fresh, as for ``generate``) gives the day's words, and each wanted
    action is built from its own slice of them."""
    wanted = sorted(set(positions))
    if not wanted:
        return {}
    firsts = plan.action_pos
    actions: dict[int, list[int]] = {}
    for pos in wanted:
        actions.setdefault(bisect_right(firsts, pos) - 1, []).append(pos)
    last = max(actions)
    end = plan.count if last + 1 == len(firsts) else firsts[last + 1]
    words = draw_words(
        rng, plan.action_word[last] + WORDS_PER_ACTION + WORDS_PER_ROW * (end - firsts[last])
    )
    ctx = _context(day, stamps, id_prefix, bad, batches)
    indexed: dict[int, Row] = {}
    out: dict[int, Row] = {}
    w = words
    for j, chosen in actions.items():
        o = plan.action_word[j]
        first = firsts[j]
        n = (plan.count if j + 1 == len(firsts) else firsts[j + 1]) - first
        bits = [w[o + 10 + 2 * i] | w[o + 11 + 2 * i] << 32 for i in range(n)]
        built = _action(
            ctx,
            w[o] | w[o + 1] << 32,
            w[o + 2] | w[o + 3] << 32,
            w[o + 4] | w[o + 5] << 32,
            w[o + 6],
            w[o + 7] | w[o + 8] << 32 | (w[o + 9] >> 21) << 64,  # 75 bits: 11 of the third
            first,
            bits,
            indexed,
            frozenset(chosen),
        )
        out.update(zip(chosen, built, strict=True))
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
