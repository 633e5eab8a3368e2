"""Discover, prove, remember: what the service really does, learned from its own answers.

Nothing we know of the real service's paging and query semantics is certain (the reference
says so: page-size cap, paging window, date forms, sort). So the harvester does not trust
its configuration for them; it asks the service, checks the answers, and keeps what it
learned in the lake (``state.ServiceProfile``), where resume, refresh, verify and plan find
it. Configured values become ceilings and first guesses, never promises.

What is probed once per lake (about a dozen requests, at preflight):

- **Page size.** Increasing ``rows`` (100, 200, 400, ...) on ``*:*``; the largest the
  service honours (docs returned == rows asked while ``numFound`` allows) is its
  ``ceiling``. A silent cap shows as fewer docs; a ``413`` or a refusal stops the climb.
  The climb's top is the smallest of the ``rows`` setting (a ceiling, 10,000 by default),
  ``PAYLOAD_SHARE`` of the payload cap at the bytes a row was served in, and the window.
  Each page of the climb is timed (the limiter's wait kept out of it), and the page size is
  *chosen* from those times by rows per second under the rate limit and the concurrency
  (``choose_page_size``); under ``fixed_rows`` it is the ceiling, no choice. The timing
  costs at most one request of its own: the climb's pages are the samples, and a choice
  below the ceiling times the ceiling's page once more before it is believed. Climbing
  from 100 to a ceiling of 5,000 takes 7 pages where the climb to 1,000 took 5: two more
  requests, once per lake.
- **Date form.** A real row is asked for on its own day, ``[D TO D] AND id:X``, with the
  configured template, then with the template's bounds written in the other known forms
  (``BOUND_FORMS``: with or without a time, with or without ``Z``); a form is proven when the
  row is found there and not on the day before or after. None proven (a wrong field, a
  query the service refuses): the run stops before writing. The same proof picks the form
  of ``createDateTime`` bounds (refresh's changed rows).
- **Order.** ``sort=id asc`` over two pages of a small range: honoured (ids ascend across
  both), ignored, or refused. Honoured means shards can be paged by key.

What is learned while running, whenever the service contradicts what we hold (``Limits``):
a paging window (a window error, or any error at ``start > 0`` for a query that answered at
``start = 0``), and a smaller page size (a ``413``, or a page cut short by a silent cap).
Only what the service contradicts lowers the stored profile: a run asking for less (a
smaller ``rows``) uses less without forgetting what was chosen.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import orjson

from harvester.errors import ApiError, ConfigError, QueryError
from harvester.storage.state import ServiceProfile, SortSupport, utc_now

log = logging.getLogger("harvester.service.profile")

FIRST_PAGE_SIZE: Final = 100  # the spec's default: where the page-size climb starts
# ODP's common base: a response above 6 MB is refused with a 413 (reference: "Payload cap").
PAYLOAD_CAP_BYTES: Final = 6_000_000
# The climb stops at this share of the cap, at the largest bytes a row was served in so far:
# rows vary in size, and a page near the cap would meet the 413 on a month of long rows.
PAYLOAD_SHARE: Final = 0.8
# A smaller page than the largest measured is chosen only when it is this much faster in rows
# per second: a larger page saves requests (the weekly quota, the rate limit), and one
# timed page per size is a noisy sample.
CHOICE_MARGIN: Final = 0.25
# A page timed under this is read as this: below it the clock measures loopback, the
# scheduler and parsing, not the service (a real one answers in 100s of ms), and such
# noise must not pick a small page.
LATENCY_FLOOR: Final = 0.05
CHOSEN: Final = "rows per second"  # ServiceProfile.chosen_by: picked from timed pages
FIXED: Final = "rows setting"  # ServiceProfile.chosen_by: the climb stopped at ``rows``
# How the bounds of a day range are written: (after {start}, after {end}). Public clients
# send the first two; Solr's own syntax is the third; the last is Solr's with milliseconds.
BOUND_FORMS: Final = (
    ("T00:00:00", "T23:59:59"),
    ("", ""),
    ("T00:00:00Z", "T23:59:59Z"),
    ("T00:00:00.000Z", "T23:59:59.999Z"),
)
_BOUND: Final = re.compile(r"\{(start|end)\}(T[0-9:.]*Z?)?")
STAMP_FORMS: Final = ("{stamp}Z", "{stamp}")  # how a createDateTime bound is written
KEY_SORT: Final = "id asc"
# "Result window is too large, start + rows must be <= 700": the number is the window.
_WINDOW_WORDS: Final = re.compile(r"window|start\s*\+\s*rows|max.*offset|deep pag", re.I)
_WINDOW_NUMBER: Final = re.compile(
    r"(?:<=|less than or equal to|at most|max(?:imum)?)\D{0,20}(\d+)"
)


class PageLike(Protocol):
    @property
    def num_found(self) -> int: ...

    @property
    def docs(self) -> list[dict[str, Any]]: ...


class Searcher(Protocol):
    async def search(
        self, criteria: str, start: int, rows: int, sort: str | None = None
    ) -> PageLike: ...

    async def count(self, criteria: str) -> int: ...


# -- what a run knows and learns ----------------------------------------------------------
@dataclass
class Limits:
    """The paging limits a run works with, shared by planner, fetch and pipeline, and
    lowered (never raised) when the service contradicts them. ``events`` says why."""

    page_size: int
    window: int
    shard_size_setting: int
    keyset: bool = False  # sort honoured: shards are paged by id, no window applies
    window_learned: bool = False
    lowered: bool = False  # the service made the page smaller (a 413, a cap, the window)
    events: list[str] = field(default_factory=list)

    @property
    def shard_size(self) -> int:
        """The most rows a shard may hold: a shard is fetched whole, and (offset paging)
        must never need a ``start`` beyond the window."""
        return self.shard_size_setting if self.keyset else min(self.shard_size_setting, self.window)

    def rows_at(self, start: int) -> int:
        """The ``rows`` to ask for at ``start`` (never past the window)."""
        if self.keyset:
            return self.page_size
        return max(1, min(self.page_size, self.window - start))

    def learn_window(self, window: int, why: str) -> None:
        if window < self.window:
            self.window = max(1, window)
            self.window_learned = True
            if self.window < self.page_size:
                self.page_size, self.lowered = self.window, True
            self._event(f"paging window learned: {self.window} ({why})")

    def shrink_page(self, rows: int, why: str) -> bool:
        """Lower the page size below ``rows`` (a 413); False when it cannot go lower."""
        if rows <= 1:
            return False
        smaller = max(1, rows // 2)
        if smaller < self.page_size:
            self.page_size, self.lowered = smaller, True
            self._event(f"page size lowered to {smaller} ({why})")
        return True

    def capped(self, served: int, why: str) -> None:
        """The service served ``served`` docs where it had more and we asked for more."""
        if 0 < served < self.page_size:
            self.page_size, self.lowered = served, True
            self._event(f"page size lowered to {served} ({why})")

    def stop_keyset(self, why: str) -> None:
        if self.keyset:
            self.keyset = False
            self._event(f"paging by offset from now on ({why})")

    def _event(self, text: str) -> None:
        log.warning("%s", text)
        self.events.append(text)


def limits_from(
    profile: ServiceProfile, max_window: int, shard_size: int, rows: int, fixed: bool = False
) -> Limits:
    """The limits a run works with. The page: the profile's (chosen by rows per second, or
    the largest honoured for a profile from before the choice), or under ``fixed``
    (``fixed_rows``) the largest the service honoured; never above ``rows`` (the user's
    ceiling, whatever was chosen) nor the window."""
    window = min(max_window, profile.window) if profile.window else max_window
    page = min((profile.ceiling or profile.page_size) if fixed else profile.page_size, rows)
    return Limits(
        page_size=max(1, min(page, window)),
        window=window,
        shard_size_setting=shard_size,
        keyset=profile.sort == "honoured",
        window_learned=profile.window is not None,
    )


def remember(profile: ServiceProfile, limits: Limits) -> bool:
    """Fold what a run learned back into the profile; True when it changed. The page size
    (and the ceiling) is lowered only when the service lowered it (``Limits.lowered``): a
    run that merely asked for less (``fixed_rows``) leaves the choice as it was."""
    changed = False
    if limits.window_learned and (profile.window is None or limits.window < profile.window):
        profile.window, changed = limits.window, True
    if limits.lowered and limits.page_size < profile.page_size:
        profile.page_size, changed = limits.page_size, True
    if limits.lowered and profile.ceiling is not None and limits.page_size < profile.ceiling:
        profile.ceiling, changed = limits.page_size, True
    if not limits.keyset and profile.sort == "honoured":
        profile.sort, changed = "ignored", True
    if changed:
        profile.evidence.extend(limits.events)
        profile.updated_at = utc_now()
    return changed


# -- reading the service's errors ---------------------------------------------------------
def window_limit(exc: Exception) -> int | None:
    """The window a window error states, if it states one."""
    message = exc.server_message if isinstance(exc, QueryError) else str(exc)
    match = _WINDOW_NUMBER.search(message)
    return int(match[1]) if match else None


def is_window_error(exc: Exception) -> bool:
    """A 400 whose text speaks of the result window (at any start)."""
    return (
        isinstance(exc, QueryError)
        and exc.status == 400
        and bool(_WINDOW_WORDS.search(exc.server_message))
    )


def is_payload_too_large(exc: Exception) -> bool:
    return isinstance(exc, QueryError) and exc.status == 413


# -- probing --------------------------------------------------------------------------------
@dataclass
class _Row:
    id: str
    day: dt.date
    stamp: str | None


def _real_row(docs: Iterable[dict[str, Any]]) -> _Row | None:
    for doc in docs:
        row_id, day = doc.get("id"), str(doc.get("submissionDate") or "")
        if not isinstance(row_id, str) or not re.fullmatch(r"[0-9A-Za-z]+", row_id):
            continue
        try:
            parsed = dt.date.fromisoformat(day[:10])
        except ValueError:
            continue
        stamp = str(doc.get("createDateTime") or "")[:19]
        try:
            dt.datetime.fromisoformat(stamp)
        except ValueError:
            stamp = ""
        return _Row(row_id, parsed, stamp or None)
    return None


def rows_per_second(size: int, latency: float, rate: float, concurrency: int) -> float:
    """Rows a second at pages of ``size`` answered in ``latency`` seconds: ``concurrency``
    pages in flight, never more than ``rate`` requests a second (0: no rate limit), so
    ``size * min(rate, concurrency / latency)``."""
    per_second = concurrency / latency if latency > 0 else float("inf")
    if rate > 0:
        per_second = min(per_second, rate)
    return size * per_second


def choose_page_size(
    latencies: Mapping[int, float],
    rate: float,
    concurrency: int,
    ceiling: int,
    margin: float = CHOICE_MARGIN,
) -> int:
    """The page size with the best rows per second among the measured sizes up to
    ``ceiling`` (``latencies``: rows -> seconds one page took). Pure.

    Only measured sizes are candidates: nothing is extrapolated, so a service whose time
    grows faster than its pages (a gateway, a serialiser) is judged by what it did. The
    largest measured size wins unless a smaller one is more than ``margin`` faster: a larger
    page saves requests (the rate limit, the weekly quota) and one sample a size is noisy.
    A time under ``LATENCY_FLOOR`` counts as the floor. No sample up to the ceiling: the
    ceiling itself."""
    sizes = sorted(s for s in latencies if 0 < s <= ceiling)
    if not sizes:
        return ceiling
    speed = {
        s: rows_per_second(s, max(latencies[s], LATENCY_FLOOR), rate, concurrency) for s in sizes
    }
    largest = sizes[-1]
    best = max(sizes, key=lambda s: (speed[s], s))
    return best if speed[best] > (1 + margin) * speed[largest] else largest


def _row_bytes(page: PageLike) -> float:
    """Bytes a served row takes: the body's size over its docs (``Page.raw_bytes``), or the
    docs serialised again where a page carries no size (a test's fake)."""
    if not page.docs:
        return 0.0
    raw = getattr(page, "raw_bytes", 0)
    size = raw if isinstance(raw, int) and raw > 0 else len(orjson.dumps(page.docs))
    return size / len(page.docs)


@dataclass
class _Climb:
    """What the page-size climb found: the largest size honoured, a window an error stated,
    the first answer's docs, and the seconds each honoured page took (rows served -> s)."""

    honoured: int = 0
    window: int | None = None
    docs: list[dict[str, Any]] = field(default_factory=list)
    latencies: dict[int, float] = field(default_factory=dict)


Clock = Callable[[], float]


async def _timed_search(
    api: Searcher, size: int, spacing: float, clock: Clock = time.monotonic
) -> tuple[PageLike, float]:
    """One ``*:*`` page and the seconds it took by ``clock``. The limiter's wait is kept out
    of the time: the page is asked ``spacing`` (one request's share of the rate) after the
    one before, so the limiter has a slot ready and the clock measures the service alone."""
    if spacing > 0:
        await asyncio.sleep(spacing)
    began = clock()
    page = await api.search("*:*", 0, size)
    return page, clock() - began


async def _probe_page_size(
    api: Searcher,
    ceiling: int,
    window: int,
    rate: float,
    evidence: list[str],
    clock: Clock = time.monotonic,
) -> _Climb:
    """Doubles ``rows`` from 100 while the service honours it, up to ``ceiling`` (the
    ``rows`` setting), ``PAYLOAD_SHARE`` of the payload cap at the largest bytes a row was
    served in, and the window; a silent cap is the page size; a refusal (a 413, a 400) between an honoured
    size and a refused one is narrowed down by halving the gap until it is within a tenth.
    Every honoured page's time is kept (``_Climb.latencies``)."""
    spacing = 1.0 / rate if rate > 0 else 0.0
    climb = _Climb()
    size = min(FIRST_PAGE_SIZE, ceiling, window)
    refused = 0
    row_bytes = 0.0
    while True:
        try:
            page, seconds = await _timed_search(api, size, spacing, clock)
        except QueryError as exc:
            if is_window_error(exc):
                climb.window = window_limit(exc) or size // 2
                evidence.append(f"rows={size}: window error, window {climb.window}")
                window = min(window, climb.window)
            else:
                evidence.append(f"rows={size}: refused ({exc.status})")
            refused = size
            if climb.honoured == 0 and size <= 1:
                raise
        else:
            climb.docs = climb.docs or list(page.docs)
            served, wanted = len(page.docs), min(size, page.num_found)
            if served:
                climb.latencies[served] = seconds
            row_bytes = max(row_bytes, _row_bytes(page))
            if served < wanted:  # a silent cap: what it serves is what it allows
                evidence.append(f"rows={size}: {served} docs served of {wanted} (a cap)")
                climb.honoured = max(climb.honoured, served)
                return climb
            evidence.append(f"rows={size}: {served} docs served in {seconds:.3f} s (honoured)")
            climb.honoured = size
            if page.num_found <= size:
                return climb
        payload = int(PAYLOAD_CAP_BYTES * PAYLOAD_SHARE / row_bytes) if row_bytes else size * 2
        top = max(1, min(ceiling, payload, window))
        if refused:
            if climb.honoured == 0:
                size = max(1, min(size // 2, top))
                continue
            if refused - climb.honoured <= max(1, climb.honoured // 10):
                return climb
            size = (climb.honoured + refused) // 2
        elif climb.honoured >= top:
            return climb
        else:
            size = min(size * 2, top)


async def _choose_confirmed(
    api: Searcher,
    climb: _Climb,
    rate: float,
    concurrency: int,
    evidence: list[str],
    clock: Clock = time.monotonic,
) -> int:
    """``choose_page_size`` over the climb's times; a choice below the ceiling is confirmed
    by timing the ceiling's page once more (at most one request more) and keeping the faster
    of its two times: one slow answer (a cold cache, a busy moment) must not halve the page
    of a whole harvest."""
    ceiling = climb.honoured
    chosen = choose_page_size(climb.latencies, rate, concurrency, ceiling)
    if chosen >= ceiling or ceiling not in climb.latencies:
        return chosen
    spacing = 1.0 / rate if rate > 0 else 0.0
    page, seconds = await _timed_search(api, ceiling, spacing, clock)
    if len(page.docs) == ceiling:
        evidence.append(f"rows={ceiling}: timed again, {seconds:.3f} s")
        climb.latencies[ceiling] = min(climb.latencies[ceiling], seconds)
    return choose_page_size(climb.latencies, rate, concurrency, ceiling)


async def _proves(api: Searcher, template: str, row: _Row) -> bool:
    """The row is found on its own day (both bounds at once) and not on its neighbours."""

    def on(day: dt.date) -> str:
        text = template.format(start=day.isoformat(), end=day.isoformat())
        return f"{text} AND id:{row.id}"

    if await api.count(on(row.day)) != 1:
        return False
    one = dt.timedelta(days=1)
    return await api.count(on(row.day - one)) == 0 and await api.count(on(row.day + one)) == 0


def date_forms(configured: str) -> list[str]:
    """The configured template, then the same template with its bounds in each known form."""
    forms = [configured]
    for low, high in BOUND_FORMS:
        suffix = {"start": low, "end": high}

        def bound(match: re.Match[str], suffix: dict[str, str] = suffix) -> str:
            return "{" + match[1] + "}" + suffix[match[1]]

        form = _BOUND.sub(bound, configured)
        if form not in forms:
            forms.append(form)
    return forms


async def _prove_date_form(api: Searcher, configured: str, row: _Row, evidence: list[str]) -> str:
    candidates = date_forms(configured)
    for template in candidates:
        try:
            proven = await _proves(api, template, row)
        except QueryError as exc:
            evidence.append(f"date form {template!r}: refused ({exc.status})")
            continue
        evidence.append(
            f"date form {template!r}: row {row.id} of {row.day}"
            + (" found on its day only (proven)" if proven else " not found exactly")
        )
        if proven:
            return template
    raise ConfigError(
        f"the service did not find row {row.id} on its own mail date {row.day} with the"
        f" configured date_template or any known form ({len(candidates)} tried): set"
        " [api] date_template to a form the service compares correctly"
    )


async def _prove_stamp_form(api: Searcher, row: _Row, evidence: list[str]) -> str:
    if row.stamp is None:
        evidence.append("createDateTime form: no readable createDateTime; using the first")
        return STAMP_FORMS[0]
    later = (dt.datetime.fromisoformat(row.stamp) + dt.timedelta(seconds=1)).isoformat()
    for form in STAMP_FORMS:
        try:
            at = await api.count(
                f"createDateTime:[{form.format(stamp=row.stamp)} TO *] AND id:{row.id}"
            )
            after = await api.count(
                f"createDateTime:[{form.format(stamp=later)} TO *] AND id:{row.id}"
            )
        except QueryError:
            continue
        if at == 1 and after == 0:
            evidence.append(f"createDateTime form {form!r}: proven on row {row.id}")
            return form
    raise ConfigError(
        f"the service did not find row {row.id} from its own createDateTime {row.stamp}"
        " with any known form: refresh cannot find changed rows on this service"
    )


async def _probe_sort(
    api: Searcher, template: str, row: _Row, page_size: int, evidence: list[str]
) -> SortSupport:
    day = template.format(start=row.day.isoformat(), end=row.day.isoformat())
    first_of_month = row.day.replace(day=1)
    next_month = (first_of_month + dt.timedelta(days=32)).replace(day=1)
    month = template.format(
        start=first_of_month.isoformat(), end=(next_month - dt.timedelta(days=1)).isoformat()
    )
    criteria = day if await api.count(day) >= 4 else month
    try:
        first = await api.search(criteria, 0, 2, sort=KEY_SORT)
        if first.num_found < 4:
            evidence.append("sort: too few rows to tell; paging by offset")
            return "ignored"
        size = max(2, min(page_size, first.num_found // 2))
        one = await api.search(criteria, 0, size, sort=KEY_SORT)
        two = await api.search(criteria, len(one.docs), size, sort=KEY_SORT)
    except QueryError as exc:
        evidence.append(f"sort {KEY_SORT!r}: refused ({exc.status})")
        return "refused"
    ids = [str(d.get("id")) for d in [*one.docs, *two.docs]]
    honoured = len(ids) >= 4 and all(a < b for a, b in itertools.pairwise(ids))
    evidence.append(
        f"sort {KEY_SORT!r} over 2 pages ({len(ids)} ids): "
        + ("honoured" if honoured else "ignored")
    )
    return "honoured" if honoured else "ignored"


async def discover(
    api: Searcher,
    api_url: str,
    configured_template: str,
    rows: int,
    max_window: int,
    *,
    rate: float = 0.0,
    concurrency: int = 1,
    fixed: bool = False,
) -> ServiceProfile:
    """Probe the service once (about a dozen requests); see the module docstring. The page
    size: the largest honoured up to ``rows`` under ``fixed``; else chosen by rows per
    second at ``rate`` and ``concurrency`` among the climb's pages."""
    evidence: list[str] = []
    climb = await _probe_page_size(api, rows, max_window, rate, evidence)
    window, docs, ceiling = climb.window, climb.docs, climb.honoured
    if fixed:
        page_size = ceiling
    else:
        page_size = await _choose_confirmed(api, climb, rate, concurrency, evidence)
        shown = ", ".join(
            f"{s}: {rows_per_second(s, t, rate, concurrency):,.0f}"
            for s, t in sorted(climb.latencies.items())
        )
        evidence.append(
            f"page size {page_size} chosen of ceiling {ceiling} by rows/s at rate {rate:g},"
            f" concurrency {concurrency} ({shown})"
        )
    row = _real_row(docs)
    if row is None:
        raise ApiError("the service served no row with an id and a mail date to prove against")
    template = await _prove_date_form(api, configured_template, row, evidence)
    stamp_form = await _prove_stamp_form(api, row, evidence)
    sort = await _probe_sort(api, template, row, page_size, evidence)
    for line in evidence:
        log.info("probe: %s", line)
    return ServiceProfile(
        api_url=api_url,
        page_size=page_size,
        ceiling=ceiling,
        latencies={str(s): round(t, 4) for s, t in sorted(climb.latencies.items())},
        chosen_by=FIXED if fixed else CHOSEN,
        probed_rows=rows,
        window=window,
        date_template=template,
        configured_template=configured_template,
        stamp_form=stamp_form,
        sort=sort,
        probed_at=utc_now(),
        evidence=evidence,
    )


def still_valid(
    profile: ServiceProfile, configured_template: str, fixed: bool = False, rows: int = 0
) -> bool:
    """A stored profile answers for this run unless the configured template changed (then
    the new one is proven); or the run chooses its page by rows per second and the profile
    was probed under ``fixed_rows`` (no choice was made); or the run allows larger pages
    (``rows``) than the probe's climb was allowed and the climb stopped there, not at a
    limit of the service. A profile from before the choice (no ``chosen_by``) stays as it
    is. A lake's service is the one it was harvested from, whatever URL reaches it now;
    what it contradicts while running is learned then (``Limits``)."""
    if not fixed and profile.chosen_by == FIXED:
        return False
    top = profile.probed_rows
    if top is not None and rows > top and (profile.ceiling or 0) >= top:
        return False
    return profile.configured_template == configured_template
