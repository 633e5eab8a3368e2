"""Seeded, reproducible transport and server faults for the records and fields endpoints.

Each request draws from one seeded stream, in arrival order, whether it fails and how, so a
sequential client meets the same faults on every run. The kinds are what a harvester meets
behind a gateway and proxies: 5xx (502/504 with a proxy's HTML page), a response that hangs
past the client's timeout, a connection reset, a body cut short of its Content-Length,
malformed JSON, an empty 200, and a body that trickles in slowly. One opt-in kind,
``spurious-empty``, answers a query that has rows with the no-match 404, once per distinct
query: a client that takes one 404 as "empty" loses a shard.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections import Counter
from dataclasses import dataclass

from aiohttp import web

from harvester.sim.config import FAULT_KINDS, KNOWN_FAULT_KINDS, SimConfig
from harvester.sim.seeding import derive_seed

PROFILE_RATES = {"none": 0.0, "flaky": 0.03, "hostile": 0.25}
FLAKY_WEIGHTS = {
    "http500": 3, "http502": 3, "http503": 3, "http504": 2, "hang": 1,
    "reset": 2, "truncated": 1, "malformed": 1, "empty": 1, "trickle": 1, "spurious-empty": 1,
}  # fmt: skip
# Kinds that replace the answer entirely (the others delay, cut or garble the real one).
REPLACING_FAULTS = frozenset({"http500", "http502", "http503", "http504", "reset", "empty"})
TRICKLE_CHUNKS = 8

PROXY_PAGES = {
    502: b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n",
    504: b"<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
    b"<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n",
}
GATEWAY_BODIES = {
    500: b'{"code":500,"error":"Internal Server Error","errorDetails":"Internal server error"}',
    503: b'{"message":"Service Unavailable"}',
}


@dataclass(frozen=True, slots=True)
class Normal:
    """The response the request deserves, which a fault may delay, cut or replace."""

    status: int
    body: bytes
    headers: dict[str, str]
    query: str | None = None  # the criteria of a records answer (for spurious-empty)
    rows: int = 0  # docs a records answer serves (for --latency-per-row)


class FaultPlan:
    """Decides, per request, whether and how it fails; counts what it injected."""

    def __init__(self, config: SimConfig) -> None:
        # "none" means none: --fault-rate only tunes the flaky and hostile profiles.
        rate = PROFILE_RATES[config.faults] if config.fault_rate is None else config.fault_rate
        self.rate = 0.0 if config.faults == "none" else rate
        hostile = config.faults == "hostile"
        weights = dict.fromkeys(KNOWN_FAULT_KINDS, 1) if hostile else FLAKY_WEIGHTS
        kinds = config.fault_kinds or FAULT_KINDS  # opt-in kinds only when named
        self.kinds = [k for k in KNOWN_FAULT_KINDS if k in kinds]
        self.weights = [weights[k] for k in self.kinds]
        self.rng = random.Random(derive_seed(config.seed, "faults"))
        self.hang_seconds = config.hang_seconds
        self.trickle_seconds = config.trickle_seconds
        self.injected: Counter[str] = Counter()
        self._emptied: set[str] = set()  # queries a spurious-empty has already hit

    def configure(self, rate: float, kinds: list[str] | None = None) -> None:
        """Fault ``rate`` of the requests from now on, with ``kinds`` (default: those of
        the start); the seeded draws go on where they were."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be within 0..1, not {rate}")
        if kinds is not None:
            unknown = sorted(set(kinds) - set(KNOWN_FAULT_KINDS))
            if unknown or not kinds:
                raise ValueError(f"unknown fault kinds: {unknown or kinds}")
            self.kinds = [k for k in KNOWN_FAULT_KINDS if k in kinds]
            self.weights = [FLAKY_WEIGHTS.get(k, 1) for k in self.kinds]
        self.rate = rate

    def draw(self) -> str | None:
        # Both numbers are drawn every time so one request's outcome never shifts the next.
        roll, pick = self.rng.random(), self.rng.random()
        if roll >= self.rate:
            return None
        total = sum(self.weights)
        for kind, weight in zip(self.kinds, self.weights, strict=True):
            pick -= weight / total
            if pick < 0:
                return kind
        return self.kinds[-1]

    def spurious_empty(self, query: str) -> bool:
        """Whether a drawn ``spurious-empty`` hits ``query``: only its first time, so a
        client that asks again gets the real answer (it was the index, not the query)."""
        if query in self._emptied:
            return False
        self._emptied.add(query)
        self.injected["spurious-empty"] += 1
        return True

    async def respond(self, kind: str, request: web.Request, normal: Normal) -> web.StreamResponse:
        """Answer ``request`` with fault ``kind`` instead of (or around) ``normal``."""
        self.injected[kind] += 1
        if kind.startswith("http"):
            return _server_error(int(kind[4:]))
        if kind == "hang":
            # Past any sane client timeout; then the right answer, for clients that wait.
            await asyncio.sleep(self.hang_seconds)
            return _plain(normal)
        if kind == "reset":
            reset(request)
            # Nothing can be sent any more; aiohttp drops whatever is returned.
            return web.Response(status=500)
        if kind == "truncated":
            return await _truncated(request, normal)
        if kind == "malformed":
            cut = max(1, len(normal.body) * 2 // 3)
            return _plain(Normal(200, normal.body[:cut] + b'"docs\x00', normal.headers))
        if kind == "empty":
            return web.Response(status=200, body=b"", content_type="application/json")
        if kind == "trickle":
            return await _trickle(request, normal, self.trickle_seconds)
        raise ValueError(f"unknown fault kind {kind!r}")


def _plain(normal: Normal) -> web.Response:
    return web.Response(
        status=normal.status, body=normal.body, headers=normal.headers,
        content_type="application/json",
    )  # fmt: skip


def _server_error(status: int) -> web.Response:
    if status in PROXY_PAGES:
        return web.Response(status=status, body=PROXY_PAGES[status], content_type="text/html")
    return web.Response(status=status, body=GATEWAY_BODIES[status], content_type="application/json")


def reset(request: web.Request) -> None:
    """Abort the request's connection with RST (the fault ``reset``, a ``refuse`` outage)."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0: close() sends RST instead of FIN, so the client sees a reset.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _truncated(request: web.Request, normal: Normal) -> web.StreamResponse:
    response = web.StreamResponse(status=normal.status, headers=normal.headers)
    response.content_type = "application/json"
    response.content_length = len(normal.body)  # promised in full, then not delivered
    await response.prepare(request)
    await response.write(normal.body[: len(normal.body) // 2])
    transport = request.transport
    if transport is not None:
        transport.close()  # flushes what was written, then FIN: the body ends early
    return response


async def _trickle(request: web.Request, normal: Normal, seconds: float) -> web.StreamResponse:
    response = web.StreamResponse(status=normal.status, headers=normal.headers)
    response.content_type = "application/json"
    response.content_length = len(normal.body)
    await response.prepare(request)
    step = max(1, -(-len(normal.body) // TRICKLE_CHUNKS))
    for offset in range(0, len(normal.body), step):
        await response.write(normal.body[offset : offset + step])
        await asyncio.sleep(seconds / TRICKLE_CHUNKS)
    await response.write_eof()
    return response
