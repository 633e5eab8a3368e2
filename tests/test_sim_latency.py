"""``--latency-base`` and ``--latency-per-row``: a records answer waits a + b x its rows."""

from __future__ import annotations

import time

import aiohttp
import pytest

from harvester.errors import ConfigError
from harvester.sim.cli import add_arguments, config_from_args
from harvester.sim.config import SimConfig
from harvester.sim.server import FIELDS_PATH, RECORDS_PATH
from harvester.sim.testing import run_simulator_inprocess


def test_the_delay_is_the_base_plus_the_rows_served() -> None:
    config = SimConfig(latency_base=0.25, latency_per_row=0.002)
    assert config.records_delay(0) == 0.25
    assert config.records_delay(100) == pytest.approx(0.45)
    assert SimConfig().records_delay(1000) == 0  # the defaults: no wait, as before
    with pytest.raises(ValueError, match="latency base and latency per row"):
        SimConfig(latency_per_row=-1)


def test_the_flags_set_it() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(
        parser.parse_args(["--latency-base", "0.1", "--latency-per-row", "1e-3"])
    )
    assert (config.latency_base, config.latency_per_row) == (0.1, 0.001)
    defaults = config_from_args(parser.parse_args([]))
    assert (defaults.latency_base, defaults.latency_per_row) == (0.0, 0.0)
    with pytest.raises(ConfigError):
        config_from_args(parser.parse_args(["--latency-base", "-2"]))


async def _timed(session: aiohttp.ClientSession, url: str, **form: str) -> tuple[float, int]:
    started = time.perf_counter()
    async with session.post(url + RECORDS_PATH, data=form) as response:
        await response.read()
        return time.perf_counter() - started, response.status


async def test_a_page_waits_longer_than_a_count_and_fields_do_not_wait() -> None:
    # Upper bounds with a second of slack for a loaded machine (CI once took 0.956 s for the
    # 0.6 s page): a wait charged for the 3,000 rows matched rather than served is 12 s.
    slack = 1.0
    async with (
        run_simulator_inprocess(records=3000, latency_base=0.2, latency_per_row=0.004) as url,
        aiohttp.ClientSession() as session,
    ):
        count, status = await _timed(session, url, criteria="*:*", rows="0")
        assert status == 200 and 0.2 <= count < 0.2 + slack  # 3,000 matched, none served
        page, status = await _timed(session, url, criteria="*:*", rows="100")
        assert status == 200 and 0.2 + 100 * 0.004 <= page < 0.6 + slack
        missing, status = await _timed(session, url, criteria="id:nothing")
        assert status == 404 and 0.2 <= missing < 0.2 + slack  # an answer without rows
        started = time.perf_counter()
        async with session.get(url + FIELDS_PATH) as response:
            assert response.status == 200
        assert time.perf_counter() - started < 0.2  # only records answers are paced


async def test_without_the_options_nothing_waits() -> None:
    async with run_simulator_inprocess(records=3000) as url, aiohttp.ClientSession() as session:
        page, status = await _timed(session, url, criteria="*:*", rows="100")
    assert status == 200 and page < 0.2
