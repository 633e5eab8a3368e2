"""The simulator's HTTP face: the two ODP endpoints, with auth, rate limits, faults, latency.

``POST .../records`` and ``GET .../fields`` answer as the reference describes (envelope,
404 for no match, Solr-like 400s, 403, 429 with ``Retry-After``). Every request to them
passes the same gate, in this order: API key (403), rate limits (429), the fault draw,
``--latency``, then the answer, which a fault may delay, cut or replace.
Error bodies follow one gateway-like shape (``code``, ``error``, ``errorDetails``,
``requestIdentifier``); clients should rely on the status code, as with the real service.
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
from harvester.sim.corpus import Corpus
from harvester.sim.faults import REPLACING_FAULTS, FaultPlan, Normal
from harvester.sim.limits import Limiter, RetryAfter
from harvester.sim.mutate import Mutator
from harvester.sim.seeding import derive_seed

BASE_PATH = "/api/v1/patent/oa/oa_rejections/v2"
RECORDS_PATH = f"{BASE_PATH}/records"
FIELDS_PATH = f"{BASE_PATH}/fields"
NO_MATCH = "No matching record found for the given criteria"
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
    stats: Stats = field(default_factory=Stats)
    admin_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

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


def records_answer(state: SimState, params: MultiDict[str]) -> Normal:
    """The answer to one records request, before any fault touches it."""
    config = state.config
    try:
        start = _integer(params, "start", 0)
        rows = min(_integer(params, "rows", 100), config.max_rows)  # capped silently
    except BadParameter as exc:
        return _error(state, 400, str(exc))
    if start + rows > config.max_window:
        return _error(
            state, 400,
            f"Result window is too large, start + rows must be less than or equal to: "
            f"[{config.max_window}] but was [{start + rows}]. Narrow the criteria to page "
            f"through fewer records.",
        )  # fmt: skip
    criteria = params.get("criteria", "").strip() or "*:*"
    try:
        node = lucene.parse(criteria)
    except lucene.QuerySyntaxError as exc:
        return _error(state, 400, str(exc))
    found, docs = state.corpus.search(node, start, rows)
    if found == 0:
        return _error(state, 404, NO_MATCH)
    # Rows are built with their keys in order, so no sort is needed (truth bytes match).
    body = b'{"response":{"numFound":%d,"start":%d,"docs":%s}}' % (found, start, orjson.dumps(docs))
    return Normal(200, body, {})


async def _gate(request: web.Request, answer: Callable[[], Normal]) -> web.StreamResponse:
    """Auth, limits, faults and latency around ``answer`` (called only if it is needed)."""
    state = request.app[STATE]
    config = state.config
    stats = state.stats
    stats.requests += 1
    key = request.headers.get("X-API-KEY", "")
    if config.api_key is not None and key != config.api_key:
        stats.statuses[403] += 1
        return _respond(_error(state, 403, "Missing or invalid API key: send it as X-API-KEY"))
    refusal = state.limiter.admit(key)
    if refusal is not None:
        stats.throttled += 1
        stats.throttled_by[refusal.reason] += 1
        style = state.retry_after.style()
        stats.retry_after[style] += 1
        value = state.retry_after.header(refusal.wait, style)
        headers = {"Retry-After": value} if value is not None else {}
        stats.statuses[429] += 1
        what = "requests per second" if refusal.reason == "rate" else "requests in flight"
        return _respond(_error(state, 429, f"Rate limit exceeded: too many {what}", headers))
    try:
        fault = state.faults.draw()
        if config.latency_ms:
            await asyncio.sleep(config.latency_ms / 1000)
        if fault in REPLACING_FAULTS:  # the answer would be thrown away: skip computing it
            return await state.faults.respond(fault, request, Normal(200, b"", {}))
        normal = answer()
        if fault is not None:
            return await state.faults.respond(fault, request, normal)
        stats.statuses[normal.status] += 1
        return _respond(normal)
    finally:
        state.limiter.release(key)


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
    return await _gate(request, lambda: records_answer(state, params))


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
    )
    app = web.Application(client_max_size=1024**2)
    app[STATE] = state
    app.router.add_post(RECORDS_PATH, records)
    app.router.add_get(FIELDS_PATH, fields)
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
    return runner, f"http://{_url_host(config.host)}:{port}"
