"""ApiClient against scripted aiohttp servers on 127.0.0.1.

Each test scripts the exact answers a server gives, in order, and the server records when
every request arrived (same monotonic clock as the client, same event loop), how many were
in flight at once, and what was sent. Timing asserts are lower bounds or orderings with
generous margins; no test relies on an upper bound tighter than seconds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from harvester.config import Settings
from harvester.errors import (
    EXIT_API,
    EXIT_CONFIG,
    ApiError,
    ApiUnreachable,
    AuthError,
    BudgetSpent,
    ConfigError,
    OutageTooLong,
    QueryError,
    QuotaExhausted,
    RetriesExhausted,
)
from harvester.service.backoff import PauseGate, backoff_ceiling, parse_retry_after, throttle_wait
from harvester.service.client import FIELDS_PATH, RECORDS_PATH, ApiClient, ClientStats
from harvester.service.policy import ClientPolicy
from harvester.sim.config import SimConfig
from harvester.sim.testing import run_simulator_inprocess

KEY = "SECRET-KEY-0123456789"
UNLIMITED = ClientPolicy.from_settings(Settings(rate=0))  # the defaults, with no rate limit
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DOCS = [{"id": "a" * 32, "patentApplicationNumber": "12190351"}, {"id": "b" * 32}]


@dataclass
class Hit:
    at: float
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]


@dataclass
class Scripted:
    """A server answering the n-th request with script[n] (the last entry repeats)."""

    script: list[Handler]
    hits: list[Hit] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    url: str = ""
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            form = {k: str(v) for k, v in (await request.post()).items()}
            index = len(self.hits)
            self.hits.append(
                Hit(time.monotonic(), request.method, request.path, dict(request.headers), form)
            )
            return await self.script[min(index, len(self.script) - 1)](request)
        finally:
            self.in_flight -= 1

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def gaps(self) -> list[float]:
        return [b.at - a.at for a, b in zip(self.hits, self.hits[1:], strict=False)]


Serve = Callable[..., Awaitable[Scripted]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[Scripted] = []

    async def start(*script: Handler) -> Scripted:
        server = Scripted(list(script))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", server.handle)
        server.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await server.runner.setup()
        site = web.TCPSite(server.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        server.url = f"http://127.0.0.1:{port}"
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def fast_client(url: str, **overrides: Any) -> ApiClient:
    options: dict[str, Any] = {
        "rate": 0.0,
        "concurrency": 1,
        "timeout": 2.0,
        "max_attempts": 4,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
        "min_429_wait": 0.05,
        # The outage breaker has tests of its own (below); here a failing service must
        # exhaust a request's attempts as before: no breaker.
        "outage_after": 0,
    }
    key = overrides.pop("api_key", KEY)
    options.update(overrides)
    return ApiClient(url, key, ClientPolicy.from_settings(Settings(**options)))


# ---- scripted answers -------------------------------------------------------------------


def envelope(docs: list[dict[str, Any]] = DOCS, num_found: int = 31, start: int = 0) -> bytes:
    return orjson.dumps({"response": {"numFound": num_found, "start": start, "docs": docs}})


def ok(body: bytes | None = None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=envelope() if body is None else body, content_type="application/json"
        )

    return handler


def status(
    code: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=code, body=body, headers=headers, content_type=content_type)

    return handler


def truncated() -> Handler:
    """Promise 1000 bytes, send 20, close the connection."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b'{"response": {"numF')
        assert request.transport is not None
        request.transport.close()
        return response

    return handler


def reset() -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    return handler


def slow(seconds: float) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.Response(body=envelope(), content_type="application/json")

    return handler


def throttle(retry_after: str | None) -> Handler:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return status(429, b'{"message": "Too Many Requests"}', headers)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ---- success and the plain statuses -----------------------------------------------------


async def test_success_envelope_and_request_shape(serve: Serve) -> None:
    server = await serve(ok())
    async with fast_client(server.url + "/") as client:
        page = await client.search("patentApplicationNumber:12190351", 200, 100)
    assert (page.num_found, page.start, page.docs) == (31, 0, DOCS)
    assert page.raw_bytes == len(envelope())
    [hit] = server.hits
    assert (hit.method, hit.path) == ("POST", RECORDS_PATH)
    assert hit.form == {
        "criteria": "patentApplicationNumber:12190351",
        "start": "200",
        "rows": "100",
    }
    assert hit.headers["X-API-KEY"] == KEY
    assert hit.headers["User-Agent"] == "harvester/0.1"
    assert hit.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    stats = client.stats
    assert (stats.requests, stats.pages_ok, stats.bytes_received) == (1, 1, len(envelope()))
    assert not stats.retries_by_cause
    assert client.progress_counters() == (1, 0, 0)


async def test_no_key_sends_no_header(serve: Serve) -> None:
    server = await serve(ok())
    async with ApiClient(server.url, None, UNLIMITED) as client:
        await client.search("*:*", 0, 10)
    assert "X-API-KEY" not in server.hits[0].headers


async def test_count_asks_one_row_and_fields_parse(serve: Serve) -> None:
    fields = orjson.dumps({"fieldCount": 2, "fields": ["id", "submissionDate"]})

    async def route(request: web.Request) -> web.StreamResponse:
        body = fields if request.path == FIELDS_PATH else envelope(num_found=86_973_947)
        return web.Response(body=body, content_type="application/json")

    server = await serve(route)
    async with fast_client(server.url) as client:
        assert await client.count("*:*") == 86_973_947
        assert await client.fields() == ["id", "submissionDate"]
    assert server.hits[0].form["rows"] == "1"
    assert (server.hits[1].method, server.hits[1].path) == ("GET", FIELDS_PATH)


async def test_404_is_an_empty_page(serve: Serve) -> None:
    server = await serve(status(404, b'{"message": "No matching record found"}'))
    async with fast_client(server.url) as client:
        page = await client.search("id:nothing", 0, 100)
    assert (page.num_found, page.docs, page.start) == (0, [], 0)
    assert client.stats.pages_ok == 1
    assert len(server.hits) == 1


async def test_404_on_fields_means_a_wrong_url(serve: Serve) -> None:
    server = await serve(status(404))
    async with fast_client(server.url) as client:
        with pytest.raises(ApiError, match="check --api-url"):
            await client.fields()


async def test_400_is_a_query_error_without_retry(serve: Serve) -> None:
    message = (
        "org.apache.solr.search.SyntaxError: Cannot parse 'id:[':\n  Encountered <EOF>" + "x" * 500
    )
    server = await serve(status(400, orjson.dumps({"error": {"msg": message, "code": 400}})))
    async with fast_client(server.url) as client:
        with pytest.raises(QueryError) as caught:
            await client.search("id:[", 0, 100)
    text = str(caught.value)
    assert "Cannot parse" in text and "\n" not in text and len(text) < 400
    assert len(server.hits) == 1


@pytest.mark.parametrize(
    ("code", "cause"),
    [(401, r"did not accept the key \(401\)"), (403, r"403 to a search .*wrong --api-url")],
)
async def test_auth_failures_are_not_retried(serve: Serve, code: int, cause: str) -> None:
    server = await serve(status(code, b'{"message": "Forbidden"}'))
    async with fast_client(server.url) as client:
        with pytest.raises(AuthError, match=cause):
            await client.search("*:*", 0, 100)
    assert len(server.hits) == 1


async def test_413_is_a_query_error(serve: Serve) -> None:
    server = await serve(
        status(
            413, b"<html><body><h1>too many records</h1></body></html>", content_type="text/html"
        )
    )
    async with fast_client(server.url) as client:
        with pytest.raises(QueryError, match=r"413.*too many records"):
            await client.search("*:*", 0, 100)
    assert len(server.hits) == 1


async def test_redirect_is_not_followed(serve: Serve) -> None:
    server = await serve(status(301, headers={"Location": "https://elsewhere.example/x"}))
    async with fast_client(server.url) as client:
        with pytest.raises(ApiError, match=r"elsewhere\.example"):
            await client.search("*:*", 0, 100)
    assert len(server.hits) == 1


# ---- retried failures -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "cause"),
    [
        (status(503), "http 503"),
        (
            status(502, b"<html><body>502 Bad Gateway</body></html>", content_type="text/html"),
            "http 502",
        ),
        (ok(b'{"response": {"numFound": 3, "docs": [{"id": '), "malformed json"),
        (ok(b"<html>maintenance</html>"), "malformed json"),
        (ok(b""), "empty body"),
        (ok(b'{"response": {"start": 0, "docs": []}}'), "bad envelope"),
        (ok(b'{"response": {"numFound": 3}}'), "bad envelope"),
        (ok(b'{"error": "gateway"}'), "bad envelope"),
        (truncated(), "truncated body"),
        (reset(), "connection reset"),
        (slow(1.5), "timeout"),
    ],
)
async def test_retryable_failure_then_success(serve: Serve, bad: Handler, cause: str) -> None:
    server = await serve(bad, ok())
    async with fast_client(server.url, timeout=0.4) as client:
        page = await client.search("*:*", 0, 100)
    assert page.num_found == 31
    assert len(server.hits) == 2
    assert client.stats.requests == 2
    assert client.stats.pages_ok == 1
    assert client.stats.retries_by_cause == {cause: 1}


async def test_exhausted_retries_carry_the_cause(serve: Serve) -> None:
    server = await serve(status(503, b"Service Unavailable", content_type="text/plain"))
    async with fast_client(server.url, max_attempts=5) as client:
        with pytest.raises(RetriesExhausted) as caught:
            await client.search("*:*", 0, 100)
    assert caught.value.cause == "http 503"
    assert caught.value.attempts == 5
    assert len(server.hits) == 5
    assert client.stats.retries_by_cause == {"http 503": 5}


async def test_backoff_grows_between_retries(serve: Serve) -> None:
    server = await serve(status(500))
    async with fast_client(server.url, max_attempts=4, backoff_base=0.1, backoff_max=10) as client:
        with pytest.raises(RetriesExhausted):
            await client.search("*:*", 0, 100)
    # Full jitter has no lower bound per gap, but the ceilings are 0.1, 0.2, 0.4: the total
    # stays under their sum (plus slack), which proves the waits are bounded and exponential
    # rather than fixed at backoff_max.
    assert sum(server.gaps()) < 0.7 + 0.5


# ---- 429 and the shared pause gate ------------------------------------------------------


async def test_429_retry_after_pauses_every_caller(serve: Serve) -> None:
    answered = asyncio.Event()

    async def throttle_once(request: web.Request) -> web.StreamResponse:
        answered.set()
        return await throttle("1")(request)

    server = await serve(throttle_once, ok())
    async with fast_client(server.url, concurrency=3) as client:
        first = asyncio.create_task(client.search("*:*", 0, 100))
        await asyncio.wait_for(answered.wait(), 5)
        await asyncio.sleep(0.1)  # the client reads the 429 and closes the gate
        assert client.stats.throttled_429 == 1
        # Two callers that never saw a 429 themselves must still wait for the deadline.
        others = [asyncio.create_task(client.search("*:*", n, 100)) for n in (100, 200)]
        pages = await asyncio.gather(first, *others)
    assert [p.num_found for p in pages] == [31, 31, 31]
    throttled_at = server.hits[0].at
    assert len(server.hits) == 4
    assert all(hit.at >= throttled_at + 0.98 for hit in server.hits[1:]), server.gaps()
    assert client.stats.throttled_429 == 1
    assert 0.9 <= client.stats.wait_seconds_429 <= 1.5
    assert client.stats.retries_by_cause == {}


async def test_429_for_concurrent_callers_all_wait(serve: Serve) -> None:
    # The half second runs from the first request, not from the test's start: a loaded CI
    # machine took over 0.5 s to start the server and the client, and all three callers
    # were then answered 200 at once (3 hits, not 6).
    first_hit: list[float] = []

    async def first_half_second(request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        if not first_hit:
            first_hit.append(now)
        if now - first_hit[0] < 0.5:
            return await throttle("1")(request)
        return await ok()(request)

    server = await serve(first_half_second)
    async with fast_client(server.url, concurrency=3) as client:
        await asyncio.gather(*(client.search("*:*", n, 100) for n in (0, 100, 200)))
    assert len(server.hits) == 6
    first = server.hits[0].at
    assert all(hit.at < first + 0.3 for hit in server.hits[:3])
    assert all(hit.at >= first + 0.98 for hit in server.hits[3:]), server.gaps()
    assert client.stats.throttled_429 == 3
    # Overlapping pauses are one pause: about 1 s, not 3.
    assert client.stats.wait_seconds_429 < 1.5


async def test_429_http_date(serve: Serve) -> None:
    server = await serve(throttle(email.utils.formatdate(time.time() + 2, usegmt=True)), ok())
    async with fast_client(server.url) as client:
        await client.search("*:*", 0, 100)
    # The date has whole-second resolution: the wait is in (1, 2] seconds.
    assert server.gaps()[0] >= 0.95


@pytest.mark.parametrize("retry_after", ["0", None, "soon", "-3"])
async def test_429_without_usable_hint_backs_off(serve: Serve, retry_after: str | None) -> None:
    server = await serve(throttle(retry_after), throttle(retry_after), ok())
    async with fast_client(server.url, min_429_wait=0.25, backoff_base=0.05) as client:
        await client.search("*:*", 0, 100)
    assert len(server.hits) == 3
    assert all(gap >= 0.24 for gap in server.gaps()), server.gaps()
    assert client.stats.throttled_429 == 2


async def test_min_429_wait_floors_a_short_retry_after(serve: Serve) -> None:
    server = await serve(throttle("1"), ok())
    async with fast_client(server.url, min_429_wait=1.5) as client:
        await client.search("*:*", 0, 100)
    assert server.gaps()[0] >= 1.45


async def test_persistent_429_exhausts_the_budget(serve: Serve) -> None:
    server = await serve(throttle("0"))
    async with fast_client(server.url, max_attempts=3, min_429_wait=0.01) as client:
        with pytest.raises(RetriesExhausted) as caught:
            await client.search("*:*", 0, 100)
    assert caught.value.cause == "http 429"
    assert len(server.hits) == 3


# ---- limiter and semaphore --------------------------------------------------------------


async def test_limiter_spaces_requests_without_initial_burst(serve: Serve) -> None:
    server = await serve(ok())
    async with fast_client(server.url, rate=20, concurrency=3) as client:
        began = time.monotonic()
        await asyncio.gather(*(client.search("*:*", n, 10) for n in range(10)))
        elapsed = time.monotonic() - began
    assert elapsed >= 0.4
    # No initial burst: the k-th request comes no sooner than k intervals (0.05 s) after
    # the first. Cumulative, not gap by gap: on a loaded machine one request held back
    # and the next on time leave a short gap without any burst.
    since_first = [hit.at - server.hits[0].at for hit in server.hits]
    assert all(t >= k * 0.05 - 0.02 for k, t in enumerate(since_first)), since_first


async def test_semaphore_caps_requests_in_flight(serve: Serve) -> None:
    server = await serve(slow(0.1))
    async with fast_client(server.url, concurrency=2) as client:
        await asyncio.gather(*(client.search("*:*", n, 10) for n in range(6)))
    assert server.max_in_flight == 2


# ---- unreachable ------------------------------------------------------------------------


async def test_unreachable_port_fails_fast() -> None:
    client = fast_client(f"http://127.0.0.1:{free_port()}", max_attempts=8)
    async with client:
        with pytest.raises(ApiUnreachable, match=r"cannot reach http://127\.0\.0\.1"):
            await client.search("*:*", 0, 100)
    assert client.stats.requests == 3


async def test_refused_after_the_service_answered_gets_the_full_budget(serve: Serve) -> None:
    server = await serve(ok())
    async with fast_client(server.url, max_attempts=4) as client:
        await client.search("*:*", 0, 100)
        await server.stop()
        with pytest.raises(RetriesExhausted) as caught:
            await client.search("*:*", 100, 100)
    assert caught.value.cause == "connection refused"
    assert client.stats.requests == 1 + 4


# ---- the key stays secret ---------------------------------------------------------------


async def test_key_never_shows(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echo = orjson.dumps({"message": f"bad query from key {KEY}"})
    server = await serve(status(400, echo), status(403), status(503))
    errors: list[Exception] = []
    async with fast_client(server.url, max_attempts=2) as client:
        assert KEY not in repr(client) and "api_key=set" in repr(client)
        for _ in range(3):
            try:
                await client.search("*:*", 0, 100)
            except Exception as exc:  # collecting every kind on purpose
                errors.append(exc)
    async with fast_client(f"http://127.0.0.1:{free_port()}") as dead:
        with pytest.raises(ApiUnreachable) as caught:
            await dead.search("*:*", 0, 100)
    errors.append(caught.value)
    assert [type(e) for e in errors] == [QueryError, AuthError, RetriesExhausted, ApiUnreachable]
    assert server.hits[0].headers["X-API-KEY"] == KEY
    for text in [*map(str, errors), *map(repr, errors), repr(client.stats), caplog.text]:
        assert KEY not in text


# ---- errors as the gateway sends them (reference: "Gateway errors") ----------------------

GATEWAY_SIM = SimConfig(port=0, records=3000, seed=2, admin=True)
SIM_KEY = "SIM-KEY-9876543210"
MONTH = "submissionDate:[2019-01-01T00:00:00Z TO 2019-01-31T23:59:59Z]"


def gateway_sim() -> AbstractAsyncContextManager[str]:
    """The simulator answering as ODP's gateway: 401 without a key, 403 for a wrong one,
    403 "Missing Authentication Token" for unknown routes."""
    return run_simulator_inprocess(GATEWAY_SIM, gateway_errors=True, api_key=SIM_KEY)


def assert_api_error(exc: BaseException, kind: type[Exception], *keys: str) -> str:
    """The exact class, exit code 3, one line, and no key in it; returns the message."""
    assert type(exc) is kind
    assert isinstance(exc, ApiError) and exc.exit_code == EXIT_API
    text = str(exc)
    assert "\n" not in text
    for key in keys:
        assert key not in text and key not in repr(exc)
    return text


async def sim_stats(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url + "/_sim/stats") as answer:
        stats: dict[str, Any] = await answer.json()
    return stats


async def test_gateway_401_without_a_key_says_set_the_key() -> None:
    async with (
        gateway_sim() as url,
        fast_client(url, api_key=None) as client,
    ):
        with pytest.raises(AuthError) as caught:
            await client.fields()
    text = assert_api_error(caught.value, AuthError, SIM_KEY)
    assert "requires a key (401)" in text and "set USPTO_API_KEY" in text
    assert 'server said "Unauthorized"' in text
    assert client.stats.requests == 1  # not retried


async def test_gateway_401_with_a_key_says_it_was_not_accepted(serve: Serve) -> None:
    server = await serve(status(401, orjson.dumps({"message": f"Unauthorized: {KEY}"})))
    async with fast_client(server.url) as client:
        with pytest.raises(AuthError) as caught:
            await client.fields()
    text = assert_api_error(caught.value, AuthError, KEY)
    assert "the API did not accept the key (401)" in text and "check USPTO_API_KEY" in text
    assert 'server said "Unauthorized: ***"' in text
    assert server.hits[0].headers["X-API-KEY"] == KEY and len(server.hits) == 1


@pytest.mark.parametrize(
    ("suffix", "key", "server_said"),
    [
        # A key the gateway does not know (or not yet: new keys answer 403 for minutes).
        ("", "WRONG-OR-NEW-KEY-555", "Forbidden"),
        # The right key, an --api-url with the path doubled: an unknown route.
        ("/api/v1/patent", SIM_KEY, "Missing Authentication Token"),
    ],
)
async def test_gateway_403_on_the_field_list_names_url_or_inactive_key(
    suffix: str, key: str, server_said: str
) -> None:
    async with (
        gateway_sim() as url,
        fast_client(url + suffix, api_key=key) as client,
    ):
        with pytest.raises(AuthError) as caught:
            await client.fields()
    text = assert_api_error(caught.value, AuthError, key, SIM_KEY)
    assert f"403 to the field list at {url}{suffix}{FIELDS_PATH}" in text
    assert "most likely a wrong --api-url" in text
    assert "gateway answers 403 for unknown routes" in text
    assert "wrong or not active yet" in text and "several minutes" in text
    assert f'server said "{server_said}"' in text
    assert client.stats.requests == 1


async def test_403_on_the_field_list_without_a_key_says_set_it(serve: Serve) -> None:
    server = await serve(status(403, b'{"message": "Forbidden"}'))
    async with fast_client(server.url, api_key=None) as client:
        with pytest.raises(AuthError) as caught:
            await client.fields()
    text = assert_api_error(caught.value, AuthError)
    assert "403 to the field list" in text
    assert "key is missing (set USPTO_API_KEY)" in text and "--api-url is wrong" in text


async def test_gateway_right_key_and_url_pass_the_preflight() -> None:
    async with (
        gateway_sim() as url,
        fast_client(url, api_key=SIM_KEY) as client,
    ):
        assert "submissionDate" in await client.fields()
        assert await client.count(MONTH) > 0


async def test_403_on_a_search_after_the_field_list_means_the_key_was_rejected(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fields = orjson.dumps({"fields": ["id"]})

    async def route(request: web.Request) -> web.StreamResponse:
        if request.path == FIELDS_PATH:
            return web.Response(body=fields, content_type="application/json")
        return web.Response(status=403, body=b'{"message": "Forbidden"}')

    server = await serve(route)
    async with fast_client(server.url) as client:
        assert await client.fields() == ["id"]
        with pytest.raises(AuthError) as caught:
            await client.search("*:*", 0, 100)
    text = assert_api_error(caught.value, AuthError, KEY)
    assert (
        text
        == 'the API rejected the key (403) (server said "Forbidden"): check USPTO_API_KEY (or USPTO_API_KEY_FILE)'
    )
    assert len(server.hits) == 2
    assert KEY not in caplog.text


async def test_gateway_429_without_retry_after_is_ordinary_throttling() -> None:
    """A harvest-like run against the gateway's bare 429s: a month counted, then paged by
    three concurrent callers with no client-side rate limit, so the simulator's limit (20/s,
    burst 1, ODP's shape) refuses many requests. Every page arrives, every row once, every
    429 went through the shared gate (counted, paused), and none counted as an ordinary
    retry."""
    sim = {"throttle_style": "gateway", "rate": 20.0, "bucket_capacity": 1, "api_key": SIM_KEY}
    async with run_simulator_inprocess(GATEWAY_SIM, **sim) as url:
        async with fast_client(
            url, api_key=SIM_KEY, concurrency=3, max_attempts=30, min_429_wait=0.05
        ) as client:
            await client.fields()
            total = await client.count(MONTH)
            starts = range(0, total, 10)
            pages = await asyncio.gather(*(client.search(MONTH, s, 10) for s in starts))
        stats = await sim_stats(url)
    ids = [doc["id"] for page in pages for doc in page.docs]
    assert 100 < total == len(ids) == len(set(ids))
    assert client.stats.throttled_429 >= 10
    assert client.stats.throttled_429 == stats["retry_after"]["none"] == stats["statuses"]["429"]
    assert client.stats.wait_seconds_429 >= 0.05
    assert client.stats.retries_by_cause == {}
    assert client.stats.pages_ok == len(pages) + 1


# ---- the key never travels in clear or to a redirect -------------------------------------


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://api.uspto.gov", "api.uspto.gov"),
        ("HTTP://API.USPTO.GOV:80/", "api.uspto.gov"),
        ("http://10.0.0.5:8080", "10.0.0.5"),
        ("http://0.0.0.0:8765", "0.0.0.0"),
        ("http://localhost.example.com", "localhost.example.com"),
        ("http://127.0.0.1.nip.io", "127.0.0.1.nip.io"),
        ("http://[::2]:8080", "::2"),
        (f"http://{KEY}.example.org", "***.example.org"),
    ],
)
def test_key_over_plain_http_to_another_host_is_refused(url: str, host: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ApiClient(url, KEY, UNLIMITED)
    assert type(caught.value) is ConfigError and caught.value.exit_code == EXIT_CONFIG
    assert str(caught.value) == f"refusing to send the API key over plain http to {host}: use https"
    assert KEY.lower() not in str(caught.value).lower()


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("http://127.0.0.1:8765", KEY),
        ("http://127.8.9.10", KEY),
        ("http://localhost:8080", KEY),
        ("http://LOCALHOST.", KEY),
        ("http://[::1]:8080", KEY),
        ("https://api.uspto.gov", KEY),
        ("http://api.uspto.gov", None),  # no key, nothing to leak
        ("http://api.uspto.gov", "  "),
    ],
)
def test_loopback_https_or_no_key_is_allowed(url: str, key: str | None) -> None:
    ApiClient(url, key, UNLIMITED)


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("call", ["search", "fields"])
async def test_redirect_to_another_host_gets_nothing(serve: Serve, code: int, call: str) -> None:
    elsewhere = await serve(ok())  # another port: another origin, which must see nothing
    path = RECORDS_PATH if call == "search" else FIELDS_PATH
    server = await serve(status(code, headers={"Location": elsewhere.url + path}))
    async with fast_client(server.url) as client:
        with pytest.raises(ApiError) as caught:
            await (client.search("*:*", 0, 100) if call == "search" else client.fields())
    text = assert_api_error(caught.value, ApiError, KEY)
    assert f"redirected ({code}) to {elsewhere.url}{path}: check --api-url" in text
    assert server.hits[0].headers["X-API-KEY"] == KEY and len(server.hits) == 1
    assert elsewhere.hits == []


# ---- backoff arithmetic -----------------------------------------------------------------


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 2.5 ", now) == 2.5
    for unusable in (None, "", "0", "-1", "nan", "inf", "1e3", "soon"):
        assert parse_retry_after(unusable, now) is None
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(30, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) is None


class CeilingRandom(random.Random):
    """uniform() always returns its upper end, to read the ceiling off the formula."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_throttle_wait_floors_and_grows() -> None:
    rng = CeilingRandom()
    assert throttle_wait(1.0, 1, min_wait=5, base=1, cap=60, rng=rng) == 5.0
    assert throttle_wait(9.0, 1, min_wait=5, base=1, cap=60, rng=rng) == 9.0
    waits = [throttle_wait(None, n, min_wait=5, base=1, cap=60, rng=rng) for n in (1, 2, 3, 4)]
    assert waits == [6.0, 7.0, 9.0, 13.0]
    assert throttle_wait(None, 50, min_wait=5, base=1, cap=60, rng=rng) == 65.0
    # Never zero, even with min_wait 0 and the jitter at its low end.
    assert throttle_wait(None, 1, min_wait=0, base=0.5, cap=60, rng=random.Random(1)) >= 0.5
    assert backoff_ceiling(1000, 1, 60) == 60


def test_pause_gate_only_moves_later() -> None:
    # A clock of our own: on a loaded machine more than 0.1 s of the real one can pass
    # between two lines, and the claim is about deadlines, not about the machine's speed.
    now = [100.0]
    gate = PauseGate(clock=lambda: now[0])
    assert gate.remaining() == 0
    assert gate.extend(0.2) == pytest.approx(0.2)
    assert gate.extend(0.1) == 0.0  # already paused longer
    now[0] += 0.05
    assert gate.remaining() == pytest.approx(0.15)
    assert gate.extend(0.25) == pytest.approx(0.1)  # only the part beyond the old deadline
    now[0] += 0.3
    assert gate.remaining() == 0


async def test_pause_gate_wait_sleeps_until_it_opens() -> None:
    gate = PauseGate()
    gate.extend(0.2)
    began = time.monotonic()
    await gate.wait()
    assert time.monotonic() - began >= 0.15
    assert gate.remaining() == 0


def test_stats_start_empty() -> None:
    stats = ClientStats()
    assert (stats.requests, stats.throttled_429, dict(stats.retries_by_cause)) == (0, 0, {})


# ---- the long haul: outages, the weekly quota, caps and the request budget -----------------


def by_path(search: Handler, fields: Handler) -> Handler:
    """Searches answered by ``search``, the field list (the hold's probe) by ``fields``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await (fields if request.path == FIELDS_PATH else search)(request)

    return handler


LIMIT_EXCEEDED = b'{"message": "Limit Exceeded"}'


async def test_an_outage_holds_every_caller_and_uses_up_no_attempts(serve: Serve) -> None:
    server = await serve(*[status(503)] * 7, ok())
    async with fast_client(server.url, max_attempts=3, outage_after=3, outage_wait_max=0.02) as c:
        page = await c.search("q", 0, 10)  # seven 503s, yet only three attempts allowed
        stats = c.stats
    assert page.num_found == 31
    # Three searches fail (the third begins the hold); then the field list probes, one at a
    # time, until it answers; then the search goes on.
    probes = [(h.method, h.path) for h in server.hits[3:8]]
    assert probes == [("GET", FIELDS_PATH)] * 5, probes
    assert (server.hits[-1].method, server.hits[-1].path) == ("POST", RECORDS_PATH)
    [outage] = stats.holds
    assert outage["kind"] == "outage" and outage["cause"] == "http 503"
    assert outage["ended_at"] and outage["failed_requests"] == 5  # the third search + 4 probes


async def test_a_request_that_fails_by_itself_is_no_outage(serve: Serve) -> None:
    """A search the service chokes on while its field list answers: the probe ends each
    hold at once, and the search's own attempts run out, as before the breaker."""
    server = await serve(by_path(status(500), ok(b'{"fields": ["id"]}')))
    async with fast_client(server.url, max_attempts=4, outage_after=2, outage_wait_max=0.02) as c:
        with pytest.raises(RetriesExhausted, match="http 500"):
            await c.search("q", 0, 10)


async def test_an_outage_longer_than_max_outage_stops_the_run(serve: Serve) -> None:
    server = await serve(status(503))
    async with fast_client(
        server.url, outage_after=2, outage_wait_max=0.02, max_outage=0.3
    ) as client:
        started = time.monotonic()
        with pytest.raises(OutageTooLong, match="max_outage"):
            await client.search("q", 0, 10)
    assert time.monotonic() - started < 5


async def test_a_quota_429_stops_at_once_saying_when_it_resets(serve: Serve) -> None:
    server = await serve(status(429, LIMIT_EXCEEDED))
    async with fast_client(server.url, max_attempts=8) as client:
        with pytest.raises(QuotaExhausted, match="weekly quota is spent") as caught:
            await client.search("q", 0, 10)
        assert client.stats.quota_spent_at
    assert len(server.hits) == 1  # no retry of a spent quota
    resets = dt.datetime.fromisoformat(caught.value.resets_at.replace("Z", "+00:00"))
    assert resets.weekday() == 6 and (resets.hour, resets.minute) == (0, 0)  # Sunday 00:00
    assert resets > dt.datetime.now(dt.UTC)


async def test_429s_that_persist_past_quota_after_are_taken_as_the_quota(serve: Serve) -> None:
    server = await serve(throttle(None))  # the gateway's bare throttle, forever
    async with fast_client(server.url, max_attempts=10_000, quota_after=0.3) as client:
        with pytest.raises(QuotaExhausted, match="429s for"):
            await client.search("q", 0, 10)


async def test_wait_for_quota_probes_until_the_quota_is_back(serve: Serve) -> None:
    server = await serve(*[status(429, LIMIT_EXCEEDED)] * 3, ok())
    async with fast_client(server.url, max_attempts=1, quota_wait=True, quota_probe=0.05) as client:
        page = await client.search("q", 0, 10)  # one attempt allowed: quota 429s use none
        stats = client.stats
    assert page.num_found == 31
    assert [(h.method, h.path) for h in server.hits[1:4]] == [
        ("GET", FIELDS_PATH),
        ("GET", FIELDS_PATH),
        ("GET", FIELDS_PATH),
    ]
    [wait] = stats.holds
    assert wait["kind"] == "quota" and wait["ended_at"] and wait["probes"] == 3


async def test_a_long_retry_after_is_capped_and_counted(serve: Serve) -> None:
    server = await serve(throttle("3600"), ok())
    async with fast_client(server.url, max_retry_after=0.1) as client:
        started = time.monotonic()
        await client.search("q", 0, 10)
        assert time.monotonic() - started < 5  # not an hour
        assert client.stats.capped_waits == 1


async def test_max_requests_stops_before_the_request_over_budget(serve: Serve) -> None:
    server = await serve(ok())
    async with fast_client(server.url, max_requests=2) as client:
        await client.search("q", 0, 10)
        await client.search("q", 10, 10)
        with pytest.raises(BudgetSpent, match="--max-requests 2"):
            await client.search("q", 20, 10)
    assert len(server.hits) == 2


async def test_an_answer_in_flight_ends_a_hold_while_a_probe_waits(serve: Serve) -> None:
    """A request in flight when the hold began is answered while another caller sleeps
    before its probe: the hold is over, so that caller goes on without probing."""
    failed_once: list[bool] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        start = (await request.post()).get("start")
        if start == "0":  # in flight for 0.2 s, then answered
            await asyncio.sleep(0.2)
            return web.Response(body=envelope(), content_type="application/json")
        if not failed_once:
            failed_once.append(True)
            return web.Response(status=503)
        return web.Response(body=envelope(), content_type="application/json")

    server = await serve(handler)
    async with fast_client(
        server.url, concurrency=2, outage_after=1, backoff_base=0.6, outage_wait_max=0.6
    ) as client:
        slow = asyncio.create_task(client.search("q", 0, 10))
        await asyncio.sleep(0.05)  # the slow one is in flight
        second = await client.search("q", 10, 10)  # 503: a hold begins, its probe waits 0.6 s
        await slow
        stats = client.stats
    assert second.num_found == 31
    assert all(h.path == RECORDS_PATH for h in server.hits)  # no probe was needed
    [hold] = stats.holds
    assert hold["ended_at"] and hold["failed_requests"] == 1
