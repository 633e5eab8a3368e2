"""The simulator's HTTP face: the two ODP endpoints, with auth, rate limits, faults, latency.

``POST .../records`` and ``GET .../fields`` answer as the reference describes (envelope,
404 for no match, Solr-like 400s, 403, 429 with ``Retry-After``). Every request to them
passes the same gate, in this order: API key (403), rate limits (429), the fault draw,
``--latency``, then the answer, which a fault may delay, cut or replace. A records answer
(any status) then waits ``--latency-base`` + ``--latency-per-row`` x the docs it serves,
so a page of 1000 rows takes longer than a count, as on the real service.
Error bodies follow one gateway-like shape (``code``, ``error``, ``errorDetails``,
``requestIdentifier``); clients should rely on the status code, as with the real service.

The habits the public sources report but nobody verified (reference: "More that public
sources say") are options, all off by default: an outage before everything, API-gateway
401/403 bodies, a weekly quota, gateway-style 429s, 500 past the window, refusing rows
above the cap, 413 above a payload size, string-compared dates, ``sort``, drifting counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from multidict import MultiDict

from harvester.sim import lucene
from harvester.sim.config import SimConfig
from harvester.sim.corpus import SORT_FIELDS, Corpus, SortKey
from harvester.sim.faults import GATEWAY_BODIES, REPLACING_FAULTS, FaultPlan, Normal, reset
from harvester.sim.limits import Limiter, Refusal, RetryAfter, WeeklyQuota
from harvester.sim.mutate import Mutator
from harvester.sim.outage import BEGINS, DOWN, Listener, Outage
from harvester.sim.seeding import derive_seed

BASE_PATH = "/api/v1/patent/oa/oa_rejections/v2"
RECORDS_PATH = f"{BASE_PATH}/records"
FIELDS_PATH = f"{BASE_PATH}/fields"
NO_MATCH = "No matching record found for the given criteria"
# ODP's common OpenAPI base (reference: "Payload cap"); the text names ODP's 6MB whatever
# --max-response-bytes is, as a client would read it from the real service.
PAYLOAD_TOO_LARGE = "Response payload exceeds allowed limit of 6MB"
# Exactly the captured field list (reference samples/fields.json), keys in its order.
FIELDS_DOC: dict[str, Any] = {
    "apiKey": "oa_rejections",
    "apiVersionNumber": "v2",
    "apiUrl": "https://api.uspto.gov/api/v1/patent/oa/oa_rejections/v2/fields",
    "apiDocumentationUrl": "https://data.uspto.gov/swagger/index.html?urls.primaryName=USPTO%20Office%20Action%20Rejection%20API",
    "apiStatus": "PUBLISHED",
    "fieldCount": 31,
    "fields": [
        "bilskiIndicator", "actionTypeCategory", "legacyDocumentCodeIdentifier", "hasRej101",
        "hasRej103", "hasRejDP", "mayoIndicator", "hasRej102", "nationalClass", "closingMissing",
        "cite103Max", "cite103EQ1", "obsoleteDocumentIdentifier", "id", "createUserIdentifier",
        "claimNumberArrayDocument", "patentApplicationNumber", "legalSectionCode",
        "submissionDate", "groupArtUnitNumber", "hasRej112", "nationalSubclass",
        "createDateTime", "rejectFormMissmatch", "formParagraphMissing", "aliceIndicator",
        "allowedClaimIndicator", "paragraphNumber", "cite103GT3", "myriadIndicator",
        "headerMissing",
    ],
}  # fmt: skip


@dataclass
class Stats:
    """What the simulator did, for ``GET /_sim/stats`` (tests assert on it)."""

    requests: int = 0
    # Records requests answered, by what they asked: ``rows <= 1`` is a count (the harvester
    # counts with rows=1), more is a page; ``rows_served`` is the docs the pages carried.
    # Benchmarks split a run's requests with them ("where a refresh's requests go").
    counts: int = 0
    pages: int = 0
    rows_served: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    throttled: int = 0
    throttled_by: Counter[str] = field(default_factory=Counter)
    retry_after: Counter[str] = field(default_factory=Counter)


@dataclass
class SimState:
    """Everything one running simulator shares between its handlers."""

    config: SimConfig
    corpus: Corpus
    mutator: Mutator
    limiter: Limiter
    retry_after: RetryAfter
    faults: FaultPlan
    quota: WeeklyQuota
    outage: Outage
    stats: Stats = field(default_factory=Stats)
    admin_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    listener: Listener | None = None  # set once serving (``start``); a refuse outage needs it

    def request_id(self) -> str:
        digest = hashlib.blake2b(b"%d:%d" % (self.config.seed, self.stats.requests), digest_size=16)
        return str(uuid.UUID(bytes=digest.digest()))


STATE = web.AppKey("harvester.sim.state", SimState)


class BadParameter(ValueError):
    """A request parameter the service would refuse with 400; the message is Solr's."""


def error_body(state: SimState, status: int, details: str) -> bytes:
    return orjson.dumps(
        {
            "code": status,
            "error": HTTPStatus(status).phrase,
            "errorDetails": details,
            "requestIdentifier": state.request_id(),
        }
    )


def _error(
    state: SimState, status: int, details: str, headers: dict[str, str] | None = None
) -> Normal:
    return Normal(status, error_body(state, status, details), headers or {})


def _message(status: int, text: str) -> Normal:
    """An AWS API Gateway answer: ``{"message": ...}`` and no other header (reference:
    "Gateway errors")."""
    return Normal(status, orjson.dumps({"message": text}), {})


def _integer(params: MultiDict[str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise BadParameter(f"For input string: \"{raw}\" (parameter '{name}')") from None
    if value < 0:
        raise BadParameter(f"'{name}' parameter cannot be negative")
    return value


def _sort(params: MultiDict[str], mode: str) -> SortKey | None:
    """The ``sort`` parameter under ``--sort``: ignored (the default), honoured, or refused.

    A public client sends ``sort=submissionDate desc`` and its live tests pass, so it is
    accepted; whether it is honoured is unknown (reference: "Sort"). Messages are Solr's.
    """
    raw = params.get("sort")
    if raw is None or mode == "ignore":
        return None
    if mode == "refuse":
        raise BadParameter(f"Unknown parameter 'sort' (sort={raw!r}): results come in index order")
    spec = raw.strip()
    if "," in spec:
        raise BadParameter(f"this simulator sorts on one field only, got sort={raw!r}")
    words = spec.split()
    if len(words) != 2 or words[1].lower() not in ("asc", "desc"):
        raise BadParameter(f"Can't determine a Sort Order (asc or desc) in sort spec '{spec}'")
    if words[0] not in SORT_FIELDS:
        raise BadParameter(
            f"sort param field can't be found: {words[0]} (this simulator sorts on "
            f"{', '.join(SORT_FIELDS)})"
        )
    return SortKey(words[0], words[1].lower() == "desc")


def _page(state: SimState, params: MultiDict[str]) -> tuple[int, int]:
    """``start`` and ``rows``, the cap applied (or refused, ``--page-cap-mode refuse``)."""
    config = state.config
    start = _integer(params, "start", 0)
    rows = _integer(params, "rows", 100)
    if rows > config.max_rows and config.page_cap_mode == "refuse":
        raise BadParameter(
            f"'rows' must be less than or equal to {config.max_rows} but was {rows}. "
            f"Request fewer rows per page."
        )
    return start, min(rows, config.max_rows)  # capped silently


def records_answer(state: SimState, params: MultiDict[str]) -> Normal:
    """The answer to one records request, before any fault touches it."""
    config = state.config
    try:
        start, rows = _page(state, params)
        sort = _sort(params, config.sort)
    except BadParameter as exc:
        return _error(state, 400, str(exc))
    if start + rows > config.max_window:
        if config.window_error == 500:  # Solr threw, the gateway hid why
            return Normal(500, GATEWAY_BODIES[500], {})
        return _error(
            state, 400,
            f"Result window is too large, start + rows must be less than or equal to: "
            f"[{config.max_window}] but was [{start + rows}]. Narrow the criteria to page "
            f"through fewer records.",
        )  # fmt: skip
    criteria = params.get("criteria", "").strip() or "*:*"
    try:
        node = lucene.parse(criteria, string_dates=state.corpus.string_dates)
    except lucene.QuerySyntaxError as exc:
        return _error(state, 400, str(exc))
    found, docs = state.corpus.search(node, start, rows, sort=sort)
    stats = state.stats
    if rows <= 1:
        stats.counts += 1
    else:
        stats.pages += 1
        stats.rows_served += len(docs)
    if found == 0:
        return _error(state, 404, NO_MATCH)
    if config.count_drift and rows <= 1 and len(state.corpus.plan(node).days) > 1:
        found += (
            config.count_drift
        )  # a count (harvester.service.client.count asks rows=1) that lies
    # Rows are built with their keys in order, so no sort is needed (truth bytes match).
    body = b'{"response":{"numFound":%d,"start":%d,"docs":%s}}' % (found, start, orjson.dumps(docs))
    if config.max_response_bytes and len(body) > config.max_response_bytes:
        return _payload_too_large(state, len(body))
    return Normal(200, body, {}, query=criteria, rows=len(docs))


def _payload_too_large(state: SimState, size: int) -> Normal:
    """ODP's 413 (reference: "Payload cap"), in its own body shape."""
    limit = state.config.max_response_bytes
    body = {
        "code": 413,
        "message": PAYLOAD_TOO_LARGE,
        "detailedMessage": f"The response would be {size} bytes, above the limit of {limit} "
        "bytes; reduce page size (rows) and try again.",
        "requestIdentifier": state.request_id(),
    }
    return Normal(413, orjson.dumps(body), {})


async def _gate(
    request: web.Request, answer: Callable[[], Normal], *, paced: bool = False
) -> web.StreamResponse:
    """Outage, auth, quota, limits, faults and latency around ``answer`` (called only if it
    is needed). ``paced`` (records): the answer computed waits ``config.records_delay`` of
    the docs it serves; an answer a fault replaces is never computed, so never waits."""
    state = request.app[STATE]
    config = state.config
    stats = state.stats
    stats.requests += 1
    outage = state.outage.state(stats.requests)
    if outage in (BEGINS, DOWN):
        return await _outage(request, state, outage == BEGINS)
    key = request.headers.get("X-API-KEY", "")
    if config.api_key is not None and key != config.api_key:
        return _respond(_counted(state, _unauthorized(state, "X-API-KEY" in request.headers)))
    if state.quota.exhausted(key):  # before the bucket: a refused call costs no token
        stats.throttled += 1
        stats.throttled_by["quota"] += 1
        return _respond(_counted(state, _message(429, "Limit Exceeded")))
    refusal = state.limiter.admit(key)
    if refusal is not None:
        stats.throttled += 1
        stats.throttled_by[refusal.reason] += 1
        return _respond(_counted(state, _throttled(state, refusal)))
    state.quota.spend(key)
    try:
        fault = state.faults.draw()
        if config.latency_ms:
            await asyncio.sleep(config.latency_ms / 1000)
        if fault in REPLACING_FAULTS:  # the answer would be thrown away: skip computing it
            return await state.faults.respond(fault, request, Normal(200, b"", {}))
        normal = answer()
        if fault == "spurious-empty":
            if normal.status == 200 and normal.query and state.faults.spurious_empty(normal.query):
                normal = _error(state, 404, NO_MATCH)
            fault = None
        if paced and (delay := config.records_delay(normal.rows)) > 0:
            await asyncio.sleep(delay)
        if fault is not None:
            return await state.faults.respond(fault, request, normal)
        return _respond(_counted(state, normal))
    finally:
        state.limiter.release(key)


def _counted(state: SimState, normal: Normal) -> Normal:
    state.stats.statuses[normal.status] += 1
    return normal


def _unauthorized(state: SimState, key_sent: bool) -> Normal:
    """A missing or wrong key: the simulator's 403, or (``--gateway-errors``) the gateway's
    401 for a missing key and 403 for a wrong one (reference: "Gateway errors")."""
    if not state.config.gateway_errors:
        return _error(state, 403, "Missing or invalid API key: send it as X-API-KEY")
    return _message(403, "Forbidden") if key_sent else _message(401, "Unauthorized")


def _throttled(state: SimState, refusal: Refusal) -> Normal:
    """A 429: Solr-style with ``Retry-After``, or the gateway's bare ``{"message"}``."""
    if state.config.throttle_style == "gateway":
        state.stats.retry_after["none"] += 1
        return _message(429, "Too Many Requests")
    style = state.retry_after.style()
    state.stats.retry_after[style] += 1
    value = state.retry_after.header(refusal.wait, style)
    headers = {"Retry-After": value} if value is not None else {}
    what = "requests per second" if refusal.reason == "rate" else "requests in flight"
    return _error(state, 429, f"Rate limit exceeded: too many {what}", headers)


async def _outage(request: web.Request, state: SimState, begins: bool) -> web.StreamResponse:
    """An API request during the outage: ``503`` with an empty body, or no service at all."""
    config = state.config
    if config.outage_kind == "503":
        state.stats.statuses[503] += 1
        return web.Response(status=503, body=b"")
    if begins and state.listener is not None:
        await state.listener.refuse_for(config.outage_seconds)
    reset(request)  # this connection (and any kept alive) dies with the host
    return web.Response(status=503)  # never sent: the transport is gone


async def missing_token(request: web.Request) -> web.Response:
    """An unknown route under ``/api`` (``--gateway-errors``): AWS API Gateway's 403."""
    state = request.app[STATE]
    state.stats.requests += 1
    normal = _counted(state, _message(403, "Missing Authentication Token"))
    return _respond(normal)


def _respond(normal: Normal) -> web.Response:
    return web.Response(
        status=normal.status, body=normal.body, headers=normal.headers,
        content_type="application/json",
    )  # fmt: skip


async def records(request: web.Request) -> web.StreamResponse:
    params: MultiDict[str] = MultiDict(request.query)
    if request.body_exists:
        form = await request.post()
        for name, value in form.items():
            if isinstance(value, str):
                params[name] = value  # the form wins over the query string
    state = request.app[STATE]
    return await _gate(request, lambda: records_answer(state, params), paced=True)


async def fields(request: web.Request) -> web.StreamResponse:
    body = orjson.dumps(FIELDS_DOC)
    return await _gate(request, lambda: Normal(200, body, {}))


def build_app(config: SimConfig, corpus: Corpus | None = None) -> web.Application:
    """The aiohttp application for ``config`` (admin routes only with ``config.admin``)."""
    corpus = corpus or Corpus.from_config(config)
    hostile = config.faults == "hostile"
    state = SimState(
        config=config,
        corpus=corpus,
        mutator=Mutator(corpus),
        limiter=Limiter(config.rate, config.capacity, config.burst),
        retry_after=RetryAfter(hostile, random.Random(derive_seed(config.seed, "retry-after"))),
        faults=FaultPlan(config),
        quota=WeeklyQuota(config.weekly_quota),
        outage=Outage(config.outage_after, config.outage_seconds),
    )
    app = web.Application(client_max_size=1024**2)
    app[STATE] = state
    app.router.add_post(RECORDS_PATH, records)
    app.router.add_get(FIELDS_PATH, fields)
    if config.gateway_errors:  # after the real routes, so it only catches what they do not
        app.router.add_route("*", "/api/{tail:.*}", missing_token)
    app.on_cleanup.append(_stop_listener)
    if config.admin:
        from harvester.sim.admin import add_admin_routes

        add_admin_routes(app)
    return app


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def start(config: SimConfig, corpus: Corpus | None = None) -> tuple[web.AppRunner, str]:
    """Serve ``config`` on its host and port (0 = any free port); returns the base URL."""
    runner = web.AppRunner(
        build_app(config, corpus),
        access_log=None,
        # A client that gives up on a hanging response frees its in-flight slot, as a
        # gateway drops the backend call; otherwise one hang would lock a burst-1 key out.
        handler_cancellation=True,
        shutdown_timeout=1.0,
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = runner.addresses[0][1]
    runner.app[STATE].listener = Listener(runner, site, config.host, port)
    return runner, f"http://{_url_host(config.host)}:{port}"


async def _stop_listener(app: web.Application) -> None:
    listener = app[STATE].listener
    if listener is not None:
        await listener.close()
