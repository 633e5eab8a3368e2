"""The real service's reported habits, each an option off by default, over loopback.

Reference: "More that public sources say" (gateway errors, payload cap, date forms, sort,
weekly quota, outages) and "Limits" (paging window, rows cap).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest

from harvester.sim.cli import add_arguments, config_from_args
from harvester.sim.config import SimConfig
from harvester.sim.corpus import Corpus, SortKey
from harvester.sim.faults import GATEWAY_BODIES
from harvester.sim.lucene import parse
from harvester.sim.mutate import MutationSpec, Mutator
from harvester.sim.predicate import compile_predicate
from harvester.sim.server import FIELDS_PATH, NO_MATCH, PAYLOAD_TOO_LARGE, RECORDS_PATH
from harvester.sim.testing import run_simulator_inprocess, run_simulator_process

BASE = SimConfig(port=0, records=3000, seed=2, admin=True)
DAY = "submissionDate:[2019-01-07T00:00:00Z TO 2019-01-07T23:59:59Z]"
Answer = tuple[int, dict[str, str], Any]


@asynccontextmanager
async def client(**overrides: Any) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with run_simulator_inprocess(BASE, **overrides) as url, aiohttp.ClientSession() as s:
        yield s, url


async def post(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None, **form: Any
) -> Answer:
    data = {k: str(v) for k, v in form.items()}
    async with session.post(url + RECORDS_PATH, data=data, headers=headers) as response:
        body = await response.read()
        return response.status, dict(response.headers), orjson.loads(body) if body else None


def found(answer: Answer) -> int:
    status, _, body = answer
    return int(body["response"]["numFound"]) if status == 200 else 0


async def truth(session: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    async with session.get(url + "/_sim/truth") as response:
        return [orjson.loads(line) for line in (await response.read()).splitlines()]


# --- 1-3: paging window, rows cap, payload size ----------------------------------------------


async def test_window_error_500_is_a_bare_gateway_500() -> None:
    async with client(max_window=100, window_error=500) as (session, url):
        assert (await post(session, url, start=90, rows=10))[0] == 200  # at the window
        status, _, body = await post(session, url, start=91, rows=10)
    assert status == 500 and orjson.dumps(body) == GATEWAY_BODIES[500]


async def test_page_cap_refuse_answers_400_above_max_rows() -> None:
    async with client(max_rows=50, page_cap_mode="refuse") as (session, url):
        status, _, body = await post(session, url, rows=50)
        assert status == 200 and len(body["response"]["docs"]) == 50
        status, _, body = await post(session, url, rows=51)
    assert status == 400
    assert "'rows' must be less than or equal to 50 but was 51" in body["errorDetails"]


async def test_max_response_bytes_answers_odps_413() -> None:
    async with client(max_response_bytes=20_000) as (session, url):
        assert (await post(session, url, rows=5))[0] == 200  # ~4 KB
        status, _, body = await post(session, url, rows=100)  # ~80 KB
        assert (await post(session, url, criteria="id:nothing"))[0] == 404
    assert status == 413 and list(body) == [
        "code", "message", "detailedMessage", "requestIdentifier"
    ]  # fmt: skip
    assert body["code"] == 413 and body["message"] == PAYLOAD_TOO_LARGE
    assert "reduce page size" in body["detailedMessage"]
    assert "20000 bytes" in body["detailedMessage"]


# --- 4: dates compared as strings ---------------------------------------------------------------

STRING_QUERIES = [
    "submissionDate:[2019-01-02T00:00:00Z TO 2019-01-09T23:59:59Z]",
    "submissionDate:[2019-01-02T00:00:00 TO 2019-01-09T23:59:59]",
    "submissionDate:[2019-01-02 TO 2019-01-09]",
    "submissionDate:{2019-01-02 TO 2019-01-09T00:00:00}",
    "submissionDate:[* TO 2019-01-09T00:00:00Z]",
    "submissionDate:2019-01-07T00\\:00\\:00",
    "submissionDate:[2019-01-07T00:00:00 TO 2019-01-07T00:00:00] AND id:[0 TO 8}",
    "createDateTime:[2019-02-01T00:00:00Z TO *]",
    "createDateTime:[2019-02-01 TO 2019-02-10]",
    "createDateTime:{2019-01-20T12:00:00 TO 2019-03-01T00:00:00]",
    "createDateTime:[2019-04-16 TO *] OR submissionDate:[2019-01-05 TO 2019-01-06]",
    "NOT createDateTime:[* TO 2019-02-15T00:00:00Z}",
]


def test_string_dates_prune_exactly_like_brute_force() -> None:
    corpus = Corpus(9, 6000, dt.date(2019, 1, 1), dt.date(2019, 2, 28), string_dates=True)
    Mutator(corpus).apply(MutationSpec(add=200, late=100, modify=100, delete=50, seed=1))
    rows = [orjson.loads(line) for chunk in corpus.truth_chunks() for line in chunk.splitlines()]
    for query in STRING_QUERIES:
        node = parse(query, string_dates=True)
        predicate = compile_predicate(node, string_dates=True)
        want = [r for r in rows if predicate(r)]
        assert corpus.search(node, 0, len(rows) + 1) == (len(want), want), query
        assert 0 < len(want) < len(rows) or query.startswith("NOT"), query


def test_string_comparison_is_letter_by_letter() -> None:
    row = {"submissionDate": "2019-07-01T00:00:00", "createDateTime": "2019-07-31T10:00:00"}

    def hit(query: str, string_dates: bool) -> bool:
        node = parse(query, string_dates=string_dates)
        return compile_predicate(node, string_dates=string_dates)(row)

    zone = "submissionDate:[2019-07-01T00:00:00Z TO 2019-07-31T23:59:59Z]"
    assert hit(zone, False) and not hit(zone, True)  # "...00Z" sorts after "...00"
    date_only = "createDateTime:[2019-07-01 TO 2019-07-31]"
    assert not hit(date_only, True)  # the 31st is "2019-07-31T..." > "2019-07-31"
    assert hit("createDateTime:[2019-07-01 TO 2019-08-01]", True)


async def test_date_field_string_over_http() -> None:
    no_zone = "submissionDate:[2019-01-07T00:00:00 TO 2019-01-07T23:59:59]"
    two_days = "submissionDate:[2019-01-07 TO 2019-01-08]"
    day7 = "submissionDate:[2019-01-07 TO 2019-01-07T23:59:59Z]"
    day8 = "submissionDate:[2019-01-08 TO 2019-01-08T23:59:59Z]"
    async with client() as (session, url):
        as_dates = [found(await post(session, url, criteria=q, rows=1)) for q in (day7, day8)]
        assert (await post(session, url, criteria=no_zone))[0] == 400  # zone-less: not a date
        assert found(await post(session, url, criteria=two_days, rows=1)) == sum(as_dates)
    assert all(as_dates)
    async with client(date_field="string") as (session, url):
        status, _, body = await post(session, url, criteria=DAY)
        assert status == 404 and body["errorDetails"] == NO_MATCH  # "...T00:00:00Z" > served
        assert found(await post(session, url, criteria=no_zone, rows=1)) == as_dates[0]
        assert found(await post(session, url, criteria=two_days, rows=1)) == as_dates[0]


# --- 5: sort ------------------------------------------------------------------------------------


async def test_sort_honour_pages_by_id_key() -> None:
    async with client(sort="honour", max_rows=100) as (session, url):
        ids: list[str] = []
        after = "[*"  # then "{<last id seen>": keyset paging, always from start=0
        while True:
            criteria = f"submissionDate:[2019-01-07 TO 2019-01-11] AND id:{after} TO *]"
            status, _, body = await post(session, url, criteria=criteria, rows=100, sort="id asc")
            if status == 404:
                break
            page = [d["id"] for d in body["response"]["docs"]]
            assert page == sorted(page) and page
            ids.extend(page)
            after = "{" + page[-1]
        rows = await truth(session, url)
    days = {f"2019-01-{d:02d}T00:00:00" for d in range(7, 12)}
    assert ids == sorted(r["id"] for r in rows if r["submissionDate"] in days)


async def test_sort_honour_desc_and_by_date() -> None:
    async with client(sort="honour") as (session, url):
        rows = await truth(session, url)
        _, _, body = await post(session, url, rows=10, start=5, sort="id desc")
        assert body["response"]["docs"] == sorted(rows, key=lambda r: r["id"])[::-1][5:15]
        _, _, body = await post(session, url, rows=20, sort="submissionDate desc")
        # Newest day first; within a day the index order (sorted() keeps ties in place).
        newest_first = sorted(rows, key=lambda r: r["submissionDate"], reverse=True)
        assert body["response"]["docs"] == newest_first[:20]
        _, _, body = await post(session, url, rows=20, start=1000, sort="submissionDate desc")
        assert body["response"]["docs"] == newest_first[1000:1020]
        _, _, body = await post(session, url, rows=20, sort="submissionDate asc")
        assert body["response"]["docs"] == rows[:20]
        for spec, text in [
            ("id", "Can't determine a Sort Order"),
            ("id up", "Can't determine a Sort Order"),
            ("nationalClass asc", "sort param field can't be found: nationalClass"),
            ("id asc, submissionDate desc", "one field only"),
        ]:
            status, _, body = await post(session, url, rows=1, sort=spec)
            assert status == 400 and text in body["errorDetails"], spec


def test_sorted_search_equals_a_full_sort_after_mutations() -> None:
    corpus = Corpus(4, 2000, dt.date(2019, 1, 1), dt.date(2019, 1, 31))
    Mutator(corpus).apply(MutationSpec(add=100, late=50, modify=60, delete=30, seed=3))
    node = parse("submissionDate:[2019-01-03 TO 2019-01-20] AND id:[4 TO c}")
    total, everything = corpus.search(node, 0, 10_000)
    for key in ("id", "createDateTime"):
        ordered = sorted(everything, key=lambda r: r[key])
        assert corpus.search(node, 7, 50, sort=SortKey(key)) == (total, ordered[7:57])
        reverse = sorted(everything, key=lambda r: r[key], reverse=True)
        assert corpus.search(node, 0, 30, sort=SortKey(key, True))[1] == reverse[:30]


async def test_sort_ignored_by_default_and_refused_on_request() -> None:
    async with client() as (session, url):
        plain = await post(session, url, rows=5)
        assert (await post(session, url, rows=5, sort="id desc"))[2] == plain[2]
    async with client(sort="refuse") as (session, url):
        status, _, body = await post(session, url, rows=5, sort="submissionDate desc")
        assert (await post(session, url, rows=5))[0] == 200
    assert status == 400 and "Unknown parameter 'sort'" in body["errorDetails"]


# --- 6-7: gateway errors and throttling bodies ----------------------------------------------------


async def test_gateway_auth_and_route_errors() -> None:
    async with client(api_key="k", gateway_errors=True) as (session, url):
        assert (await post(session, url))[::2] == (401, {"message": "Unauthorized"})
        wrong = await post(session, url, headers={"X-API-KEY": "x"})
        assert wrong[::2] == (403, {"message": "Forbidden"})
        assert (await post(session, url, headers={"X-API-KEY": "k"}))[0] == 200
        async with session.get(url + FIELDS_PATH) as response:
            assert response.status == 401
        for method, path in [
            ("POST", "/api/v1/patent/oa/oa_rejections/v2/nothing"),
            ("GET", "/api/v1/patent/oa/oa_rejections/v3/records"),
            ("GET", RECORDS_PATH),  # a known resource, the wrong method
        ]:
            async with session.request(method, url + path) as response:
                assert response.status == 403, path
                assert await response.json() == {"message": "Missing Authentication Token"}
        async with session.get(url + "/_sim/stats") as response:
            assert response.status == 200  # outside the API: untouched
    async with client(api_key="k") as (session, url):
        assert (await post(session, url))[0] == 403  # the default: one 403 for both
        async with session.post(url + "/api/v1/nothing") as response:
            assert response.status == 404


async def test_gateway_throttle_style_has_no_retry_after() -> None:
    async with client(rate=1.0, throttle_style="gateway") as (session, url):
        assert (await post(session, url, rows=1))[0] == 200
        status, headers, body = await post(session, url, rows=1)
    assert status == 429 and body == {"message": "Too Many Requests"}
    assert "Retry-After" not in headers


# --- 8: counts that do not add up -------------------------------------------------------------------


async def test_count_drift_breaks_the_sum_of_days() -> None:
    month = "submissionDate:[2019-01-01 TO 2019-01-31T23:59:59Z]"
    days = [f"submissionDate:[2019-01-{d:02d} TO 2019-01-{d:02d}T23:59:59Z]" for d in range(1, 32)]
    async with client(count_drift=7) as (session, url):
        counted = found(await post(session, url, criteria=month, rows=1))
        per_day = [found(await post(session, url, criteria=q, rows=1)) for q in days]
        assert found(await post(session, url, criteria=month, rows=0)) == counted
        paged = found(await post(session, url, criteria=month, rows=2))
    assert counted == sum(per_day) + 7 == paged + 7  # pages say the truth


# --- 9-11 ---------------------------------------------------------------------------------------------


async def test_weekly_quota_until_reset() -> None:
    async with client(weekly_quota=3) as (session, url):
        me = {"X-API-KEY": "me"}
        assert [(await post(session, url, me, rows=1))[0] for _ in range(3)] == [200] * 3
        status, headers, body = await post(session, url, me, rows=1)
        assert (status, body) == (429, {"message": "Limit Exceeded"})
        assert "Retry-After" not in headers
        assert (await post(session, url, {"X-API-KEY": "you"}, rows=1))[0] == 200  # per key
        async with session.post(url + "/_sim/quota-reset") as response:
            assert await response.json() == {"reset": 2}
        assert (await post(session, url, me, rows=1))[0] == 200
        async with session.get(url + "/_sim/stats") as response:
            stats = await response.json()
    assert stats["throttled_by"] == {"quota": 1} and stats["quota_used"] == 1


async def test_outage_503_with_an_empty_body() -> None:
    async with client(outage_after=2, outage_seconds=0.4) as (session, url):
        assert [(await post(session, url, rows=1))[0] for _ in range(2)] == [200, 200]
        down = [await post(session, url, rows=1) for _ in range(2)]
        assert [(s, b) for s, _, b in down] == [(503, None), (503, None)]
        await asyncio.sleep(0.45)
        assert (await post(session, url, rows=1))[0] == 200


async def test_outage_refuse_closes_the_port_then_listens_again() -> None:
    async with client(outage_after=1, outage_seconds=0.5, outage_kind="refuse") as (_, url):
        async with aiohttp.ClientSession() as session:
            assert (await post(session, url, rows=1))[0] == 200
            with pytest.raises(aiohttp.ClientOSError):  # the kept-alive connection is reset
                await post(session, url, rows=1)
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectorError):  # refused
                await post(session, url, rows=1)
            await asyncio.sleep(0.6)
            assert (await post(session, url, rows=1))[0] == 200  # same port again


async def test_spurious_empty_once_per_query() -> None:
    hostile = {"faults": "hostile", "fault_rate": 1.0, "fault_kinds": ("spurious-empty",)}
    async with client(**hostile) as (session, url):
        first = await post(session, url, criteria=DAY, rows=5)
        assert first[0] == 404 and first[2]["errorDetails"] == NO_MATCH
        again = await post(session, url, criteria=DAY, rows=5)
        assert again[0] == 200 and len(again[2]["response"]["docs"]) == 5
        assert (await post(session, url, rows=1))[0] == 404  # another query: its own once
        assert (await post(session, url, rows=1))[0] == 200
        async with session.get(url + FIELDS_PATH) as response:
            assert response.status == 200  # no query, nothing to empty
        async with session.get(url + "/_sim/stats") as response:
            assert (await response.json())["faults"] == {"spurious-empty": 2}


# --- options ------------------------------------------------------------------------------------------


def test_cli_flags_reach_the_config_and_defaults_are_off() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    default = config_from_args(parser.parse_args([]))
    assert default == SimConfig()
    flags = (
        "--window-error 500 --page-cap-mode refuse --max-response-bytes 9000 --date-field string "
        "--sort honour --gateway-errors --throttle-style gateway --count-drift 3 "
        "--weekly-quota 10 --outage-after 5 --outage-seconds 2.5 --outage-kind refuse "
        "--fault-kinds spurious-empty"
    )
    config = config_from_args(parser.parse_args(flags.split()))
    assert (config.window_error, config.page_cap_mode, config.max_response_bytes) == (
        500, "refuse", 9000
    )  # fmt: skip
    assert (config.date_field, config.sort, config.gateway_errors) == ("string", "honour", True)
    assert (config.throttle_style, config.count_drift, config.weekly_quota) == ("gateway", 3, 10)
    assert (config.outage_after, config.outage_seconds, config.outage_kind) == (5, 2.5, "refuse")
    assert config.fault_kinds == ("spurious-empty",)


@pytest.mark.parametrize(
    "bad",
    [{"window_error": 404}, {"page_cap_mode": "x"}, {"max_response_bytes": -1},
     {"date_field": "text"}, {"sort": "yes"}, {"throttle_style": "aws"}, {"count_drift": -1},
     {"weekly_quota": -2}, {"outage_after": 3}, {"outage_kind": "404"}],
)  # fmt: skip
def test_bad_habit_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SimConfig(**bad)


def test_the_process_takes_the_flags() -> None:
    with run_simulator_process("--records", "300", "--window-error", "500", "--max-window",
                               "10", "--gateway-errors", "--api-key", "k") as sim:  # fmt: skip
        request = urllib.request.Request(
            sim.url + RECORDS_PATH, data=b"start=5&rows=10", headers={"X-API-KEY": "k"}
        )
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=30)
        assert error.value.code == 500
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(sim.url + RECORDS_PATH, data=b"rows=1", timeout=30)
        assert error.value.code == 401
