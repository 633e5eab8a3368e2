"""Both rate limits, per key, with 429 + Retry-After; the hostile profile's Retry-After quirks."""

from __future__ import annotations

import asyncio
import email.utils
import random
from dataclasses import replace

import aiohttp
import pytest

from harvester.sim.config import SimConfig
from harvester.sim.limits import Limiter, RetryAfter, TokenBucket
from harvester.sim.server import RECORDS_PATH
from harvester.sim.testing import run_simulator_inprocess

BASE = SimConfig(port=0, records=500, seed=3, admin=True)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_at_rate_up_to_capacity() -> None:
    bucket = TokenBucket(rate=2.0, capacity=3.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == 0.5  # one token every 0.5 s
    assert bucket.take(0.25) == 0.25
    assert bucket.take(0.5) == 0.0
    assert bucket.take(100.0) == 0.0 and bucket.tokens == 2.0  # capped at capacity


def test_limiter_checks_in_flight_before_spending_a_token() -> None:
    clock = FakeClock()
    limiter = Limiter(rate=1.0, capacity=1.0, burst=1, clock=clock)
    assert limiter.admit("k") is None
    refusal = limiter.admit("k")
    assert refusal is not None and refusal.reason == "burst"
    assert limiter.admit("other") is None  # per key
    limiter.release("k")
    refusal = limiter.admit("k")  # slot free, but the only token was spent
    assert refusal is not None and refusal.reason == "rate" and refusal.wait == 1.0
    clock.now += 1.0
    assert limiter.admit("k") is None


def test_unlimited_when_zero() -> None:
    limiter = Limiter(rate=0.0, capacity=1.0, burst=0)
    assert all(limiter.admit("k") is None for _ in range(1000))


def test_hostile_retry_after_takes_every_form() -> None:
    policy = RetryAfter(True, random.Random(1), wall=lambda: 1_700_000_000.0)
    styles = {policy.style() for _ in range(200)}
    assert styles == {"seconds", "zero", "date", "none"}
    assert policy.header(0.2, "seconds") == "1"  # whole seconds, rounded up
    assert policy.header(2.5, "zero") == "0"
    assert policy.header(2.5, "none") is None
    date = policy.header(2.5, "date")
    assert date is not None and email.utils.parsedate_to_datetime(date).timestamp() == 1_700_000_003
    assert {RetryAfter(False, random.Random(1)).style() for _ in range(50)} == {"seconds"}


async def _status(
    session: aiohttp.ClientSession, url: str, key: str = ""
) -> tuple[int, str | None]:
    headers = {"X-API-KEY": key} if key else {}
    async with session.post(url + RECORDS_PATH, data={"rows": "1"}, headers=headers) as response:
        await response.read()
        return response.status, response.headers.get("Retry-After")


async def test_token_bucket_over_http() -> None:
    config = replace(BASE, rate=2.0, bucket_capacity=2.0)
    async with run_simulator_inprocess(config) as url, aiohttp.ClientSession() as session:
        results = [await _status(session, url) for _ in range(3)]
        assert [s for s, _ in results] == [200, 200, 429]
        assert results[2][1] == "1"  # ceil(<= 0.5 s)
        assert (await _status(session, url, key="someone-else"))[0] == 200  # per key
        await asyncio.sleep(0.55)
        assert (await _status(session, url))[0] == 200  # a token came back
        async with session.get(url + "/_sim/stats") as response:
            stats = await response.json()
    assert stats["throttled"] == 1 and stats["throttled_by"] == {"rate": 1}


async def test_in_flight_limit_over_http() -> None:
    config = replace(BASE, burst=1, latency_ms=500)
    async with run_simulator_inprocess(config) as url, aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(_status(session, url) for _ in range(3)))
        assert sorted(s for s, _ in results) == [200, 429, 429]
        assert all(after == "1" for s, after in results if s == 429)
        assert (await _status(session, url))[0] == 200  # the slot is free again
    async with (
        run_simulator_inprocess(replace(config, burst=2)) as url,
        aiohttp.ClientSession() as session,
    ):
        results = await asyncio.gather(*(_status(session, url) for _ in range(3)))
        assert sorted(s for s, _ in results) == [200, 200, 429]


async def test_hostile_429s_still_enforce_after_retry_after_zero() -> None:
    config = replace(BASE, rate=0.2, faults="hostile", fault_rate=0.0)  # a token per 5 s
    async with run_simulator_inprocess(config) as url, aiohttp.ClientSession() as session:
        assert (await _status(session, url))[0] == 200
        seen: dict[str, int] = {}
        for _ in range(40):
            status, after = await _status(session, url)
            assert status == 429  # a "0" never opens the window early
            kind = "none" if after is None else "zero" if after == "0" else (
                "seconds" if after.isdigit() else "date")  # fmt: skip
            seen[kind] = seen.get(kind, 0) + 1
    assert set(seen) == {"seconds", "zero", "date", "none"}, seen


async def test_a_client_that_gives_up_frees_its_slot() -> None:
    config = replace(BASE, burst=1, faults="hostile", fault_rate=1.0, fault_kinds=("hang",),
                     hang_seconds=30)  # fmt: skip
    quick = aiohttp.ClientTimeout(total=0.2)
    async with run_simulator_inprocess(config) as url:
        for _ in range(2):  # the second is admitted (and hangs) rather than refused with 429
            async with aiohttp.ClientSession(timeout=quick) as session:
                with pytest.raises(TimeoutError):
                    await _status(session, url)
            await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as session, session.get(url + "/_sim/stats") as r:
            stats = await r.json()
    assert stats["throttled"] == 0 and stats["faults"] == {"hang": 2}
