"""ApiClient: the only piece that speaks HTTP to the Office Action Rejection API v2.

One ``aiohttp.ClientSession`` (keep-alive, at most ``concurrency`` connections), one
``AsyncLimiter`` shared by every caller, a semaphore capping requests in flight, and a
shared pause gate for 429s (see ``harvester.service.backoff``). It knows nothing of shards, Parquet
or files: callers get ``Page``s, counts and field names, or one of ``harvester.errors``.

Retry rules (one "attempt" is one HTTP request; every attempt, 429s included, counts
toward ``max_attempts``):

- 200 with a well-formed envelope: done. 404: an empty page (the service's "no match").
- 400 and 413: ``QueryError`` with the server's message; a redirect or another unexpected
  4xx: ``ApiError``. No retry: none would help.
- 401 and 403: ``AuthError``, named by what they most likely mean on ODP's API gateway
  (reference: "Gateway errors"), with the server's own message quoted. 401: no key sent
  ("set USPTO_API_KEY") or the key was not accepted. 403 before the service has ever
  answered 200 (the preflight's field list, usually): a wrong ``--api-url`` (the gateway
  answers 403 ``{"message": "Missing Authentication Token"}`` for unknown routes) or a
  key that is wrong or not active yet (a new key answers 403 for several minutes). 403
  once the service has answered 200: the key was rejected.
- 429: pauses every caller (shared gate) for ``Retry-After`` but at least ``min_429_wait``;
  with no usable ``Retry-After`` (absent, ``0``, garbage), for ``max(min_429_wait,
  backoff_base)`` plus full jitter growing with the streak of consecutive 429s. The
  gateway's bare ``429 {"message": "Too Many Requests"}`` is such a 429: its body is not
  read, only its status.
- 5xx, 408, timeouts, resets, truncated bodies, malformed or empty JSON, a 200 without
  ``response.numFound``/``response.docs``: retried after full-jitter exponential backoff
  (private to the failing request); after ``max_attempts`` -> ``RetriesExhausted(cause)``.
- Connection refused (or DNS failure, or connect timeout) while nothing has *ever* answered
  this client: ``ApiUnreachable`` after ``UNREACHABLE_ATTEMPTS`` attempts, because a wrong
  URL should fail in seconds, not after the whole budget. Once the service has answered
  once, a refusal is a restart or a blip, and gets the full budget.

The long haul (a harvest lasts days; reference: "Weekly quota", "Gateway errors"), whose
state machine is ``harvester.service.outage.OutageWatch`` (the client tells it what each
attempt met and waits on it before each attempt):

- **Outages.** ``outage_after`` failures in a row (5xx, 408, timeouts, resets, refused
  connections; at most ``max_attempts``, so one request alone meets the breaker before it
  runs out of attempts; 0: no breaker), across every caller, with no answer between them,
  begin an outage hold
  (``backoff.ServiceHold``): every caller waits, one request at a time probes, after a
  wait doubling from ``backoff_base`` up to ``outage_wait_max``. Failures during the hold
  do not use up attempts (the outage is not the request's fault). The first answer ends
  it; the report lists it. One lasting over ``max_outage`` seconds: ``OutageTooLong``.
- **The weekly quota.** A ``429`` whose body names a quota (``quota.is_quota_message``),
  or ``429``s persisting ``quota_after`` seconds without one answer between them, mean
  the key's week is spent: ``QuotaExhausted`` (the run stops cleanly, saying when the
  quota resets), or with ``quota_wait`` a quota hold probing every ``quota_probe``
  seconds (never past the reset) until the service answers again. Quota ``429``s use up
  no attempts.
- **Caps.** A ``Retry-After`` over ``max_retry_after`` seconds is cut to it and logged.
  ``max_requests`` (0: none) stops the run cleanly with ``BudgetSpent`` before the
  request that would exceed it.

The API key goes into the ``X-API-KEY`` header and nowhere else: not into ``repr``, stats,
logs or exception messages (server text quoted in errors is scrubbed of it too). It is
never sent in clear to another machine: with a key set, a plain ``http://`` base URL whose
host is not loopback (``127.0.0.0/8``, ``::1``, ``localhost``) is a ``ConfigError`` at
construction. Redirects are never followed, so the key never reaches a redirect's target.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiolimiter import AsyncLimiter

from harvester.errors import (
    ApiError,
    ApiUnreachable,
    AuthError,
    BudgetSpent,
    ConfigError,
    QueryError,
    RetriesExhausted,
)
from harvester.service.backoff import Throttle, full_jitter
from harvester.service.outage import OutageWatch, ProbeResult
from harvester.service.policy import ClientPolicy

log = logging.getLogger("harvester.service.client")

RECORDS_PATH = "/api/v1/patent/oa/oa_rejections/v2/records"
FIELDS_PATH = "/api/v1/patent/oa/oa_rejections/v2/fields"
UNREACHABLE_ATTEMPTS = 3
MESSAGE_LIMIT = 200  # characters of server text quoted in an error: one readable line
KEY_SOURCES = "USPTO_API_KEY (or USPTO_API_KEY_FILE)"  # where a key comes from (config)
USER_AGENT = "harvester/0.1"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page:
    """One page of search results as served. ``raw_bytes`` is the body's size (after any
    transfer decompression), for throughput accounting; ``body`` the body itself, kept so
    the page can be checkpointed without serialising its docs again."""

    num_found: int
    start: int
    docs: list[dict[str, Any]]
    raw_bytes: int
    body: bytes = b""


@dataclass
class ClientStats:
    """Counters read by progress and run reports.

    ``requests``: every HTTP attempt. ``pages_ok``: search pages accepted (404 included).
    ``retries_by_cause``: retryable failures other than 429, by cause, counted whether or not
    another attempt followed. ``throttled_429``: 429 responses. ``wait_seconds_429``: wall
    time the client was paused by 429s (overlapping pauses counted once). ``holds``: the
    outages and quota waits met (``backoff.HoldEpisode.to_json``). ``quota_spent_at``: when
    the weekly quota was found spent ("" if never). ``capped_waits``: ``Retry-After``
    hints cut to ``max_retry_after``.
    """

    requests: int = 0
    pages_ok: int = 0
    retries_by_cause: Counter[str] = field(default_factory=Counter)
    throttled_429: int = 0
    bytes_received: int = 0
    wait_seconds_429: float = 0.0
    holds: list[dict[str, object]] = field(default_factory=list)
    quota_spent_at: str = ""
    capped_waits: int = 0


class _Retryable(Exception):
    """One attempt failed in a way another attempt may not. Internal to this module."""

    def __init__(
        self,
        cause: str,
        *,
        unreachable: bool = False,
        outage_like: bool = False,
        detail: str = "",
    ) -> None:
        super().__init__(cause)
        self.cause = cause
        self.unreachable = unreachable  # nothing is listening, as far as we can tell
        # A failure of the service or the way to it (not a damaged answer): what outages
        # are made of. Refusals and connect timeouts are outage-like too.
        self.outage_like = outage_like or unreachable
        self.detail = detail


@dataclass(frozen=True, slots=True)
class _Done(Generic[T]):
    value: T


@dataclass(frozen=True, slots=True)
class _Retry:
    cause: str
    wait: float  # the private backoff before the next attempt
    counted: bool  # uses up one of max_attempts (not during an outage or quota hold)


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


class ApiClient:
    """Async context manager; see the module docstring for the retry rules. Everything it
    may be told (pace, attempts, waits, caps) is its ``policy`` (``ClientPolicy``, built by
    ``ClientPolicy.from_settings``): the client keeps no defaults of its own."""

    def __init__(self, base_url: str, api_key: str | None, policy: ClientPolicy) -> None:
        self._base = base_url.rstrip("/")
        self._key = (api_key or "").strip() or None
        if self._key:
            _refuse_plain_http(self._base, self._key)
        self.policy = policy
        self._rate = policy.rate
        self._concurrency = policy.concurrency
        # A separate connect timeout makes a black-holed host a "connect timeout" (which
        # the unreachable rule covers) rather than an anonymous total timeout.
        timeout = policy.timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 30.0))
        self._max_attempts = policy.max_attempts
        self._backoff_base = policy.backoff_base
        self._backoff_max = policy.backoff_max
        # max_rate=1 over 1/rate seconds: a bucket of one, so no burst at start or after a
        # pause; the service documents "burst 1".
        self._limiter = AsyncLimiter(1, 1.0 / self._rate) if self._rate else None
        self._semaphore = asyncio.Semaphore(policy.concurrency)
        self._rng = random.Random()
        self._throttle = Throttle(
            min_wait=policy.min_429_wait,
            base=policy.backoff_base,
            cap=policy.backoff_max,
            max_hint=policy.max_retry_after,
            rng=self._rng,
        )
        self._max_retry_after = policy.max_retry_after
        self._max_requests = policy.max_requests
        self._answered = False  # has any HTTP response ever arrived? (the unreachable rule)
        # Has any call been answered 200? Then URL and key are proven, and a 403 means
        # the key was rejected rather than "wrong URL or key not active yet".
        self._proven = False
        self._session: aiohttp.ClientSession | None = None
        self.stats = ClientStats()
        self._outage = OutageWatch(policy, self.stats, self._scrub)

    def __repr__(self) -> str:
        key = "set" if self._key else "unset"
        return (
            f"ApiClient(base_url={self._base!r}, api_key={key}, rate={self._rate},"
            f" concurrency={self._concurrency})"
        )

    async def __aenter__(self) -> ApiClient:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self._key:
            headers["X-API-KEY"] = self._key
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._concurrency),
            headers=headers,
            timeout=self._timeout,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def progress_counters(self) -> tuple[int, int, int]:
        """(requests, 429s, retries) for the progress display."""
        return (
            self.stats.requests,
            self.stats.throttled_429,
            sum(self.stats.retries_by_cause.values()),
        )

    # ---- public calls -------------------------------------------------------------------

    async def search(self, criteria: str, start: int, rows: int, sort: str | None = None) -> Page:
        """One page of ``criteria`` from ``start``; the service may return fewer than
        ``rows`` docs, so callers advance by ``len(page.docs)``. ``sort`` (``"id asc"``) is
        sent only when given: whether the service honours it is probed (``service``)."""
        form = {"criteria": criteria, "start": str(start), "rows": str(rows)}
        if sort is not None:
            form["sort"] = sort

        def parse(response: _Response) -> Page:
            if response.status == 404:
                page = Page(0, start, [], len(response.body))
            else:
                page = _parse_page(response.body, start)
                self._proven = True
            self.stats.pages_ok += 1
            return page

        return await self._call("POST", RECORDS_PATH, form, parse, f"search start={start}")

    def parse_page(self, body: bytes, start: int) -> Page:
        """Read again a search body this client received (a checkpointed page); raises
        ``ValueError`` when it is not a whole search page."""
        try:
            return _parse_page(body, start)
        except _Retryable as exc:
            raise ValueError(str(exc)) from None

    async def count(self, criteria: str) -> int:
        """``numFound`` for ``criteria``. Asks for rows=1, not 0: how the gateway treats
        rows=0 is undocumented (Solr accepts it, a gateway may refuse it or read it as the
        default 100), and one row costs next to nothing."""
        return (await self.search(criteria, 0, 1)).num_found

    async def fields(self) -> list[str]:
        """The field names the service declares."""

        def parse(response: _Response) -> list[str]:
            if response.status == 404:
                # The field list always exists: a 404 here means the URL is wrong, which is
                # worth saying, since a wrong URL would make every search "empty".
                raise ApiError(f"{self._base}{FIELDS_PATH} not found (404): check --api-url")
            names = _parse_fields(response.body)
            self._proven = True
            return names

        return await self._call("GET", FIELDS_PATH, None, parse, "fields")

    # ---- the retry loop -----------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None,
        parse: Callable[[_Response], T],
        what: str,
    ) -> T:
        cause = "no attempt"
        attempt = 0  # attempts that count: not those an outage or a spent quota failed
        while attempt < self._max_attempts:
            await self._outage.wait_out(self._probe)
            result = await self._attempt(method, path, form, parse, what, attempt)
            if isinstance(result, _Done):
                return result.value
            cause = result.cause
            if not result.counted:
                continue  # the hold waits for every caller; no attempt is used up
            attempt += 1
            if attempt < self._max_attempts:
                wait = result.wait
                total = wait + self._throttle.gate.remaining()
                n = self._max_attempts
                log.info("%s: %s (attempt %d/%d), retry in %.2fs", what, cause, attempt, n, total)
                # Sleeps outside the semaphore: a backing-off request holds no slot.
                await asyncio.sleep(wait)
        log.warning("%s: giving up after %d attempts: %s", what, self._max_attempts, cause)
        raise RetriesExhausted(cause, self._max_attempts)

    async def _attempt(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None,
        parse: Callable[[_Response], T],
        what: str,
        attempt: int,
    ) -> _Done[T] | _Retry:
        """One request and what it means: a value, or a retry (counted or not)."""
        try:
            response = await self._send(method, path, form)
            if response.status == 429:
                return self._on_429(response, what)
            if response.status >= 500 or response.status == 408:
                raise _Retryable(f"http {response.status}", outage_like=True)
            self._outage.answered()
            self._throttle.answered()
            self._raise_for_status(response, form, path)
            return _Done(parse(response))
        except _Retryable as failure:
            if (
                failure.unreachable
                and not self._answered
                and attempt + 1 >= min(UNREACHABLE_ATTEMPTS, self._max_attempts)
            ):
                raise ApiUnreachable(
                    self._scrub(f"cannot reach {self._base}: {failure.detail or failure.cause}")
                ) from None
            self.stats.retries_by_cause[failure.cause] += 1
            if failure.outage_like and self._outage.failed(
                failure.cause, what, ever_answered=self._answered
            ):
                return _Retry(failure.cause, 0.0, counted=False)
            wait = full_jitter(attempt + 1, self._backoff_base, self._backoff_max, self._rng)
            return _Retry(failure.cause, wait, counted=True)

    # ---- outages and the weekly quota (harvester.service.outage) -------------------------

    async def _probe(self) -> ProbeResult:
        """The hold's probe: one ``GET`` of the field list; what it met, for the watch."""
        try:
            return (await self._send("GET", FIELDS_PATH, None)).status
        except _Retryable as failure:
            return failure.cause

    def _on_429(self, response: _Response, what: str) -> _Retry:
        """A 429: throttling (the shared gate waits, and the attempt counts) or the weekly
        quota (the watch stops the run, or holds it till the reset: no attempt counts)."""
        self.stats.throttled_429 += 1
        if self._outage.on_429(_server_message(response.body), what):
            return _Retry("weekly quota", 0.0, counted=False)
        self._throttled(response.headers, what)
        return _Retry("http 429", 0.0, counted=True)

    async def _send(self, method: str, path: str, form: dict[str, str] | None) -> _Response:
        """One HTTP attempt; transport failures become ``_Retryable``."""
        if self._session is None:
            raise RuntimeError("ApiClient is used outside 'async with'")
        async with self._semaphore:
            await self._ready()
            if self._max_requests and self.stats.requests >= self._max_requests:
                raise BudgetSpent(
                    f"--max-requests {self._max_requests} reached: stopped; finished work is"
                    " saved, run the same command again to go on"
                )
            self.stats.requests += 1
            try:
                # No redirects: aiohttp would turn a redirected POST into a GET and drop the
                # form, and a redirect means the configured URL is stale anyway.
                async with self._session.request(
                    method, self._base + path, data=form, allow_redirects=False
                ) as resp:
                    self._answered = True
                    body = await resp.read()
                    self.stats.bytes_received += len(body)
                    encoding = resp.headers.get("Content-Encoding", "identity").lower()
                    expected = resp.content_length
                    # aiohttp catches most short bodies; this also catches a body cut at a
                    # chunk boundary or a lying proxy. Skipped when decompression changed
                    # the size.
                    if expected is not None and encoding == "identity" and len(body) != expected:
                        raise _Retryable("truncated body", outage_like=True)
                    return _Response(resp.status, resp.headers, body)
            except aiohttp.ConnectionTimeoutError:
                raise _Retryable("connect timeout", unreachable=True) from None
            except TimeoutError:
                raise _Retryable("timeout", outage_like=True) from None
            except aiohttp.ClientConnectorError as exc:
                detail = exc.os_error.strerror or type(exc.os_error).__name__
                raise _Retryable("connection refused", unreachable=True, detail=detail) from None
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                raise _Retryable("connection reset", outage_like=True) from None
            except aiohttp.ClientPayloadError:
                raise _Retryable("truncated body", outage_like=True) from None
            except aiohttp.ClientConnectionError as exc:
                cause = f"connection error ({type(exc).__name__})"
                raise _Retryable(cause, outage_like=True) from None
            except aiohttp.ClientResponseError:
                raise _Retryable("bad http response", outage_like=True) from None

    async def _ready(self) -> None:
        """Wait for the pause gate, then a limiter slot; again if a 429 closed the gate
        while we queued for the slot (the slot is then lost, which only slows us)."""
        while True:
            await self._throttle.gate.wait()
            if self._limiter is not None:
                await self._limiter.acquire()
            if self._throttle.gate.remaining() <= 0:
                return

    def _throttled(self, headers: Mapping[str, str], what: str) -> None:
        added, hint = self._throttle.throttled(headers.get("Retry-After"))
        self.stats.wait_seconds_429 += added
        if hint is not None and hint > self._max_retry_after:
            self.stats.capped_waits += 1
            log.warning(
                "%s: Retry-After %.0fs is longer than max_retry_after: waiting %.0fs",
                what,
                hint,
                self._max_retry_after,
            )
        shown = "unusable" if hint is None else f"{hint:.2f}s"
        pause = self._throttle.gate.remaining()
        streak = self._throttle.streak
        log.info(
            "%s: 429 (Retry-After %s, streak %d): all paused %.2fs", what, shown, streak, pause
        )

    def _raise_for_status(
        self, response: _Response, form: dict[str, str] | None, path: str
    ) -> None:
        """Raise for every status but 200 and 404 (which the parsers handle)."""
        status = response.status
        if status in (200, 404):
            return
        if status in (401, 403):
            raise self._auth_error(status, _server_message(response.body), path)
        if status >= 500 or status == 408:
            raise _Retryable(f"http {status}")
        message = _server_message(response.body)
        criteria = _shorten((form or {}).get("criteria", ""), 120)
        if status == 400:
            text = f"the API refused the query (400): {message} [criteria: {criteria}]"
            raise QueryError(self._scrub(text), status, self._scrub(message))
        if status == 413:
            text = f"the API refused the request as too large (413): {message}"
            raise QueryError(self._scrub(text), status, self._scrub(message))
        if 300 <= status < 400:
            location = _shorten(response.headers.get("Location", "?"), MESSAGE_LIMIT)
            text = f"the API redirected ({status}) to {location}: check --api-url"
            raise ApiError(self._scrub(text))
        raise ApiError(self._scrub(f"unexpected answer from the API ({status}): {message}"))

    def _auth_error(self, status: int, message: str, path: str) -> AuthError:
        """A 401 or 403 named by its likely cause (module docstring), quoting the server."""
        said = f'(server said "{message}")'
        if status == 401:
            if self._key:
                text = f"the API did not accept the key (401) {said}: check {KEY_SOURCES}"
            else:
                text = f"the API requires a key (401) {said}: set {KEY_SOURCES}"
        elif self._proven:
            if self._key:
                text = f"the API rejected the key (403) {said}: check {KEY_SOURCES}"
            else:
                text = f"the API requires a key (403) {said}: set {KEY_SOURCES}"
        else:
            what = "the field list" if path == FIELDS_PATH else "a search"
            target = f"{what} at {self._base}{path}"
            if self._key:
                cause = (
                    "most likely a wrong --api-url (the gateway answers 403 for unknown"
                    " routes) or a key that is wrong or not active yet (a new key answers 403"
                    " for several minutes): check --api-url and USPTO_API_KEY, or wait a few"
                    " minutes and try again"
                )
            else:
                cause = (
                    "most likely the key is missing (set USPTO_API_KEY) or --api-url is wrong"
                    " (the gateway answers 403 for unknown routes)"
                )
            text = f"the API answered 403 to {target} {said}: {cause}"
        return AuthError(self._scrub(text))

    def _scrub(self, text: str) -> str:
        """Belt and braces: server text quoted in an error could echo the key."""
        return text.replace(self._key, "***") if self._key else text


def _refuse_plain_http(base_url: str, key: str) -> None:
    """``ConfigError`` when ``base_url`` would carry the key in clear to another machine."""
    parts = urlsplit(base_url)
    if parts.scheme.lower() != "http":
        return
    host = parts.hostname or ""
    if not _is_loopback(host):
        # A key pasted into the URL must not show either (the host comes back lowercased).
        shown = re.sub(re.escape(key), "***", host or base_url, flags=re.IGNORECASE)
        raise ConfigError(f"refusing to send the API key over plain http to {shown}: use https")


def _is_loopback(host: str) -> bool:
    """``localhost``, ``127.0.0.0/8`` or ``::1``; a name that merely resolves to one is not
    trusted (DNS could answer otherwise tomorrow)."""
    name = host.lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# ---- parsing ----------------------------------------------------------------------------


def _load_json(body: bytes) -> Any:
    if not body.strip():
        raise _Retryable("empty body")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _Retryable("malformed json") from None


def _parse_page(body: bytes, start: int) -> Page:
    """The search envelope; anything short of ``response.numFound`` and ``response.docs``
    is a damaged answer (a gateway error page served as 200, a cut proxy): retried."""
    data = _load_json(body)
    response = data.get("response") if isinstance(data, dict) else None
    if not isinstance(response, dict):
        raise _Retryable("bad envelope")
    num_found = response.get("numFound")
    docs = response.get("docs")
    if (
        not isinstance(num_found, int)
        or isinstance(num_found, bool)
        or num_found < 0
        or not isinstance(docs, list)
        or not all(isinstance(doc, dict) for doc in docs)
    ):
        raise _Retryable("bad envelope")
    served_start = response.get("start")
    if not isinstance(served_start, int) or isinstance(served_start, bool):
        served_start = start
    return Page(num_found, served_start, docs, len(body), body)


def _parse_fields(body: bytes) -> list[str]:
    """``{"fields": [...]}`` as captured in samples/fields.json; a bare list is accepted."""
    data = _load_json(body)
    names = data.get("fields") if isinstance(data, dict) else data
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _Retryable("bad envelope")
    return list(names)


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_TAG = re.compile(r"<[^>]*>")


def _server_message(body: bytes) -> str:
    """The server's own words from an error body, as one short line: a JSON error field if
    there is one (gateway and Solr shapes), else the text with any HTML tags removed."""
    text = ""
    try:
        data = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        for key in ("detailedMessage", "errorDetails", "message", "error", "detail", "msg"):
            value = data.get(key)
            if isinstance(value, dict):  # Solr: {"error": {"msg": ..., "code": 400}}
                value = value.get("msg") or value.get("message")
            if isinstance(value, str) and value.strip():
                text = value
                break
    if not text:
        text = _TAG.sub(" ", body.decode("utf-8", "replace"))
    return _shorten(text, MESSAGE_LIMIT) or "(no message)"
