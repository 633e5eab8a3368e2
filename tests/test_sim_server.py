"""The endpoints as a client sees them over loopback: envelope, paging, caps, errors, auth."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from harvester.sim.config import SimConfig
from harvester.sim.server import FIELDS_PATH, NO_MATCH, RECORDS_PATH
from harvester.sim.testing import run_simulator_inprocess

BASE = SimConfig(port=0, records=3000, seed=2, admin=True)
SAMPLES = Path(__file__).parent / "fixtures"
# The real captures, when this checkout has the reference next to it (read once, not in a loop).
REAL_DOC = (
    json.loads((SAMPLES / "records-by-application.json").read_text())["response"]["docs"][0]
    if SAMPLES.exists()
    else None
)
REAL_FIELDS = (SAMPLES / "fields.json").read_text() if SAMPLES.exists() else None
DAY = "submissionDate:[2019-01-07T00:00:00Z TO 2019-01-07T23:59:59Z]"


@asynccontextmanager
async def client(config: SimConfig = BASE) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with run_simulator_inprocess(config) as url, aiohttp.ClientSession() as session:
        yield session, url


async def post(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None, **form: Any
) -> tuple[int, Any]:
    data = {k: str(v) for k, v in form.items()}
    async with session.post(url + RECORDS_PATH, data=data, headers=headers) as response:
        return response.status, orjson.loads(await response.read())


async def test_envelope_and_docs_like_the_real_service() -> None:
    async with client() as (session, url):
        status, body = await post(session, url, rows=3)
    assert status == 200
    assert list(body) == ["response"] and list(body["response"]) == ["numFound", "start", "docs"]
    assert body["response"]["numFound"] == 3000 and body["response"]["start"] == 0
    docs = body["response"]["docs"]
    assert len(docs) == 3 and all(list(d) == sorted(d) for d in docs)
    if REAL_DOC is not None:
        assert list(docs[0]) == list(REAL_DOC)


async def test_paging_walks_the_whole_result_in_truth_order() -> None:
    async with client() as (session, url):
        status, first = await post(session, url, criteria=DAY, rows=1)
        found = first["response"]["numFound"]
        docs: list[dict[str, Any]] = []
        while len(docs) < found:
            status, page = await post(session, url, criteria=DAY, start=len(docs), rows=40)
            assert status == 200 and page["response"]["start"] == len(docs)
            docs.extend(page["response"]["docs"])
        async with session.get(url + "/_sim/truth") as response:
            truth = [orjson.loads(line) for line in (await response.read()).splitlines()]
    assert docs == [t for t in truth if t["submissionDate"] == "2019-01-07T00:00:00"]


async def test_query_string_parameters_and_defaults() -> None:
    async with client() as (session, url):
        async with session.post(url + RECORDS_PATH + "?rows=2&start=5") as response:
            body = orjson.loads(await response.read())
        assert len(body["response"]["docs"]) == 2 and body["response"]["start"] == 5
        status, default = await post(session, url)
        assert status == 200 and len(default["response"]["docs"]) == 100  # rows defaults to 100
        # The form wins over the query string.
        async with session.post(url + RECORDS_PATH + "?rows=2", data={"rows": "4"}) as response:
            assert len(orjson.loads(await response.read())["response"]["docs"]) == 4


async def test_rows_capped_silently_and_window_refused() -> None:
    async with client(replace(BASE, max_rows=50, max_window=1000)) as (session, url):
        status, body = await post(session, url, rows=80)
        assert status == 200 and len(body["response"]["docs"]) == 50
        status, body = await post(session, url, start=950, rows=50)
        assert status == 200 and len(body["response"]["docs"]) == 50  # exactly at the window
        status, body = await post(session, url, start=951, rows=50)
        assert status == 400
        assert body["errorDetails"].startswith("Result window is too large")
        assert "[1000] but was [1001]" in body["errorDetails"]
        status, body = await post(session, url, start=0, rows=0)
        assert status == 200 and body["response"]["docs"] == []
        status, body = await post(session, url, criteria=DAY, start=900, rows=10)
        assert status == 200 and body["response"]["docs"] == []  # past the end: empty page


async def test_bad_requests_are_solr_like_400s_and_no_match_is_404() -> None:
    async with client() as (session, url):
        status, body = await post(session, url, criteria="submissionDate:[2019-01-01 TO")
        assert status == 400
        assert body["errorDetails"].startswith("org.apache.solr.search.SyntaxError: Cannot parse")
        cases: list[tuple[dict[str, Any], str]] = [
            ({"start": "x"}, 'For input string: "x"'),
            ({"rows": "1.5"}, 'For input string: "1.5"'),
            ({"start": "-1"}, "'start' parameter cannot be negative"),
            ({"rows": "-5"}, "'rows' parameter cannot be negative"),
        ]
        for form, text in cases:
            status, body = await post(session, url, **form)
            assert status == 400 and text in body["errorDetails"], form
        status, body = await post(session, url, criteria="submissionDate:[2030-01-01 TO *]")
        assert status == 404
        assert body["code"] == 404 and body["errorDetails"] == NO_MATCH
        assert set(body) == {"code", "error", "errorDetails", "requestIdentifier"}


async def test_fields_is_the_captured_field_list() -> None:
    async with client() as (session, url), session.get(url + FIELDS_PATH) as response:
        assert response.status == 200
        body = await response.read()
    fields = json.loads(body)
    assert fields["fieldCount"] == 31 == len(fields["fields"])
    if REAL_FIELDS is not None:
        assert json.loads(body) == json.loads(REAL_FIELDS)
        assert list(json.loads(body)) == list(json.loads(REAL_FIELDS))


async def test_api_key_is_enforced_when_set() -> None:
    async with client(replace(BASE, api_key="sekrit")) as (session, url):
        status, body = await post(session, url)
        assert status == 403 and body["code"] == 403
        status, _ = await post(session, url, headers={"X-API-KEY": "wrong"})
        assert status == 403
        async with session.get(url + FIELDS_PATH) as response:
            assert response.status == 403
        status, _ = await post(session, url, headers={"X-API-KEY": "sekrit"})
        assert status == 200
        async with session.get(url + FIELDS_PATH, headers={"X-API-KEY": "sekrit"}) as response:
            assert response.status == 200
    async with client(replace(BASE, api_key=None)) as (session, url):
        assert (await post(session, url))[0] == 200  # no key configured: none needed


async def test_admin_routes_need_admin() -> None:
    async with client(replace(BASE, admin=False)) as (session, url):
        for method, path in [
            ("GET", "/_sim/truth"),
            ("GET", "/_sim/stats"),
            ("POST", "/_sim/mutate"),
        ]:
            async with session.request(method, url + path) as response:
                assert response.status in (404, 405), path


async def test_mutate_over_http_and_stats() -> None:
    async with client() as (session, url):
        async with session.post(url + "/_sim/mutate", json={"add": 10, "delete": 5}) as response:
            summary = await response.json()
        assert summary["numFound"] == 3005 and summary["version"] == 1
        async with session.post(url + "/_sim/mutate", json={"add": "x"}) as response:
            assert response.status == 400
        _, body = await post(session, url, rows=0)
        assert body["response"]["numFound"] == 3005
        async with session.get(url + "/_sim/stats") as response:
            stats = await response.json()
        assert stats["requests"] == 1 and stats["statuses"] == {"200": 1}
        assert stats["mutations"] == 1 and stats["numFound"] == 3005


async def test_stats_split_answered_records_requests_into_counts_and_pages() -> None:
    async with client() as (session, url):
        found = [(await post(session, url, criteria=DAY, rows=rows))[1] for rows in (0, 1)]
        day_rows = found[0]["response"]["numFound"]
        for rows in (7, 100):
            await post(session, url, criteria=DAY, rows=rows)
        status, _ = await post(session, url, criteria="id:nothing-has-this-id", rows=50)
        async with session.get(url + "/_sim/stats") as response:
            stats = await response.json()
    assert status == 404 and day_rows > 7
    assert stats["requests"] == 5
    assert (stats["counts"], stats["pages"]) == (2, 3)  # the no-match page asked for 50
    assert stats["rows_served"] == 7 + min(100, day_rows)
