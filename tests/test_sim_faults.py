"""Each fault kind as a real aiohttp client meets it over loopback; the plan is reproducible."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace

import aiohttp
import orjson
import pytest

from harvester.sim.config import FAULT_KINDS, SimConfig
from harvester.sim.faults import FaultPlan
from harvester.sim.server import FIELDS_PATH, RECORDS_PATH
from harvester.sim.testing import run_simulator_inprocess

BASE = SimConfig(port=0, records=800, seed=5, admin=True, faults="hostile", fault_rate=1.0,
                 hang_seconds=0.6, trickle_seconds=0.4)  # fmt: skip
QUICK = aiohttp.ClientTimeout(total=0.3)
PATIENT = aiohttp.ClientTimeout(total=10)


def only(kind: str) -> SimConfig:
    return replace(BASE, fault_kinds=(kind,))


async def fetch(url: str, limit: aiohttp.ClientTimeout = PATIENT) -> tuple[int, str, bytes]:
    async with (
        aiohttp.ClientSession(timeout=limit) as session,
        session.post(url + RECORDS_PATH, data={"rows": "50"}) as response,
    ):
        return response.status, response.content_type, await response.read()


@pytest.mark.parametrize(
    ("kind", "status", "content_type"),
    [("http500", 500, "application/json"), ("http502", 502, "text/html"),
     ("http503", 503, "application/json"), ("http504", 504, "text/html")],
)  # fmt: skip
async def test_server_errors(kind: str, status: int, content_type: str) -> None:
    async with run_simulator_inprocess(only(kind)) as url:
        got, got_type, body = await fetch(url)
    assert (got, got_type) == (status, content_type)
    if content_type == "text/html":
        assert body.startswith(b"<html>") and str(status).encode() in body


async def test_hang_outlasts_a_client_timeout_then_answers() -> None:
    async with run_simulator_inprocess(only("hang")) as url:
        with pytest.raises(TimeoutError):
            await fetch(url, QUICK)
        started = time.monotonic()
        status, _, body = await fetch(url)
        assert time.monotonic() - started >= 0.6
    assert status == 200 and len(orjson.loads(body)["response"]["docs"]) == 50


async def test_reset() -> None:
    async with run_simulator_inprocess(only("reset")) as url:
        with pytest.raises((aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
            await fetch(url)


async def test_truncated_body() -> None:
    async with run_simulator_inprocess(only("truncated")) as url:
        with pytest.raises(aiohttp.ClientPayloadError):
            await fetch(url)


async def test_malformed_json() -> None:
    async with run_simulator_inprocess(only("malformed")) as url:
        status, content_type, body = await fetch(url)
    assert status == 200 and content_type == "application/json" and body
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)


async def test_empty_200() -> None:
    async with run_simulator_inprocess(only("empty")) as url:
        assert await fetch(url) == (200, "application/json", b"")


async def test_trickle_is_slow_but_whole() -> None:
    async with run_simulator_inprocess(only("trickle")) as url:
        started = time.monotonic()
        status, _, body = await fetch(url)
        assert time.monotonic() - started >= 0.35
        with pytest.raises(TimeoutError):
            await fetch(url, QUICK)  # a read timeout shorter than the trickle fails
    assert status == 200 and len(orjson.loads(body)["response"]["docs"]) == 50


async def test_fields_endpoint_is_faulted_but_admin_routes_never() -> None:
    async with run_simulator_inprocess(only("http503")) as url, aiohttp.ClientSession() as session:
        async with session.get(url + FIELDS_PATH) as response:
            assert response.status == 503
        for _ in range(5):
            async with session.get(url + "/_sim/stats") as response:
                assert response.status == 200
                stats = await response.json()
    assert stats["faults"] == {"http503": 1} and stats["requests"] == 1


def test_fault_plan_is_seeded_and_profiles_have_their_rates() -> None:
    def draws(config: SimConfig, n: int) -> list[str | None]:
        plan = FaultPlan(config)
        return [plan.draw() for _ in range(n)]

    hostile = replace(BASE, fault_rate=None)
    assert draws(hostile, 500) == draws(hostile, 500)
    assert draws(hostile, 500) != draws(replace(hostile, seed=6), 500)
    kinds = Counter(draws(hostile, 4000))
    assert 0.2 < 1 - kinds[None] / 4000 < 0.3  # ~25%
    assert set(kinds) - {None} == set(FAULT_KINDS)  # every kind, often
    flaky = Counter(draws(replace(hostile, faults="flaky"), 4000))
    assert 0.015 < 1 - flaky[None] / 4000 < 0.05  # a few percent
    assert Counter(draws(replace(hostile, faults="none", fault_rate=0.9), 500)) == {None: 500}
    assert Counter(draws(replace(hostile, faults="flaky", fault_rate=0.5), 4000))[None] < 2200


async def test_hostile_profile_over_a_short_harvest() -> None:
    config = replace(BASE, fault_rate=None, hang_seconds=0.2, trickle_seconds=0.05)
    outcomes: Counter[str] = Counter()
    async with run_simulator_inprocess(config) as url:
        for _ in range(60):
            try:
                status, _, body = await fetch(url, aiohttp.ClientTimeout(total=0.15))
                orjson.loads(body)
                outcomes[str(status)] += 1
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
                outcomes[type(exc).__name__] += 1
        async with aiohttp.ClientSession() as session, session.get(url + "/_sim/stats") as r:
            stats = await r.json()
    assert 5 <= sum(stats["faults"].values()) <= 30, stats
    assert outcomes["200"] >= 30 and len(outcomes) >= 3, outcomes
