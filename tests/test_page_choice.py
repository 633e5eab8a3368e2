"""Pages sized for rows per second (issue 20, item 5): the choice is a pure function of the
measured latencies, the rate limit and the concurrency; the probe climbs past 1,000 up
to what the service serves under the payload cap; the profile keeps the choice, and only
the service lowers it; ``rows`` stays the user's ceiling. One end-to-end harvest learns a
page above 1,000 rows."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harvester.service.profile import (
    CHOSEN,
    FIXED,
    PAYLOAD_CAP_BYTES,
    PAYLOAD_SHARE,
    _choose_confirmed,
    _probe_page_size,
    choose_page_size,
    limits_from,
    remember,
    rows_per_second,
    still_valid,
)
from harvester.sim.testing import run_simulator_process
from harvester.storage.state import ServiceProfile
from harvester.storage.store import Lake
from tests.support.cli import reports
from tests.support.harvest import RANGE, harvest_env, run_harvest
from tests.support.lakecheck import assert_lake_equals_truth


def linear(a: float, b: float, sizes: list[int]) -> dict[int, float]:
    return {p: a + b * p for p in sizes}


CLIMB = [100, 200, 400, 800, 1600, 3200, 5000]


def test_rows_per_second_is_bound_by_the_rate_or_by_the_latency() -> None:
    assert rows_per_second(1000, 0.1, 4.0, 1) == 4000  # 10 pages/s possible, 4 allowed
    assert rows_per_second(1000, 0.5, 4.0, 1) == 2000  # 2 pages/s possible
    assert rows_per_second(1000, 0.5, 4.0, 4) == 4000  # 8 possible in flight, 4 allowed
    assert rows_per_second(1000, 0.5, 0.0, 2) == 4000  # no rate limit: 2 in flight


def test_a_latency_linear_in_the_page_picks_the_largest_page() -> None:
    # 150 ms + 0.2 ms/row: min(4p, p / (0.15 + 0.0002p)) grows with p.
    assert choose_page_size(linear(0.15, 0.0002, CLIMB), 4.0, 1, 5000) == 5000
    assert choose_page_size(linear(0.15, 0.0002, CLIMB), 4.0, 8, 5000) == 5000


def test_a_latency_growing_faster_than_the_page_picks_a_smaller_one() -> None:
    # A gateway that slows down sharply past 1,600 rows: 3,200 rows take 4 s, 5,000 take 9.
    latencies = {**linear(0.15, 0.0002, CLIMB[:5]), 3200: 4.0, 5000: 9.0}
    chosen = choose_page_size(latencies, 4.0, 1, 5000)
    assert chosen == 1600  # 1600 / 0.47 s = 3,400 rows/s; 5000 / 9 s = 556
    assert rows_per_second(1600, latencies[1600], 4.0, 1) > 3 * rows_per_second(5000, 9.0, 4.0, 1)


def test_a_smaller_page_only_slightly_faster_does_not_win() -> None:
    # 4,000 rows/s at 1,000 against 3,500 at 2,000: within the margin, the larger page
    # (half the requests against the quota) is kept.
    latencies = {1000: 0.25, 2000: 2000 / 3500}
    assert choose_page_size(latencies, 0.0, 1, 2000) == 2000
    assert choose_page_size(latencies, 0.0, 1, 2000, margin=0.1) == 1000


def test_noise_of_a_fast_service_never_picks_a_small_page() -> None:
    # Milliseconds (loopback): below the latency floor every page counts as equally fast.
    latencies = {100: 0.001, 200: 0.0009, 400: 0.004, 370: 0.012}
    assert choose_page_size(latencies, 0.0, 4, 400) == 400


def test_the_ceiling_bounds_the_choice() -> None:
    latencies = linear(0.15, 0.0002, CLIMB)
    assert choose_page_size(latencies, 4.0, 1, 2000) == 1600  # the largest measured <= 2000
    assert choose_page_size({}, 4.0, 1, 2000) == 2000  # nothing measured: the ceiling


def profile(**changes: Any) -> ServiceProfile:
    fields: dict[str, Any] = {
        "api_url": "http://sim",
        "page_size": 4000,
        "window": None,
        "date_template": "t",
        "configured_template": "t",
        "stamp_form": "{stamp}Z",
        "sort": "ignored",
        "probed_at": "",
        "ceiling": 5000,
        "chosen_by": CHOSEN,
        **changes,
    }
    return ServiceProfile(**fields)


def test_limits_use_the_choice_under_the_rows_ceiling() -> None:
    assert limits_from(profile(), 10_000, 10_000, 10_000).page_size == 4000  # the choice
    assert limits_from(profile(), 10_000, 10_000, 1000).page_size == 1000  # the user's ceiling
    assert limits_from(profile(), 10_000, 10_000, 10_000, fixed=True).page_size == 5000
    assert limits_from(profile(), 10_000, 10_000, 1000, fixed=True).page_size == 1000
    assert limits_from(profile(), 3000, 10_000, 10_000).page_size == 3000  # the window
    # A profile from before the choice keeps its page, under the ceiling, as then.
    old = profile(page_size=800, ceiling=None, chosen_by="")
    assert limits_from(old, 10_000, 10_000, 500).page_size == 500
    assert limits_from(old, 10_000, 10_000, 10_000).page_size == 800


def test_only_the_service_lowers_the_stored_page() -> None:
    kept = profile()
    asked_less = limits_from(kept, 10_000, 10_000, 500, fixed=True)
    assert not remember(kept, asked_less)
    assert (kept.page_size, kept.ceiling) == (4000, 5000)
    limits = limits_from(kept, 10_000, 10_000, 10_000)
    assert limits.shrink_page(4000, "a 413")
    assert remember(kept, limits)
    assert (kept.page_size, kept.ceiling) == (2000, 2000)


def test_a_profile_is_probed_again_when_the_run_allows_what_its_climb_did_not() -> None:
    fixed = profile(chosen_by=FIXED)
    assert not still_valid(fixed, "t")  # no choice was made
    assert still_valid(fixed, "t", fixed=True)
    assert still_valid(profile(), "t") and still_valid(profile(chosen_by=""), "t")
    # The climb stopped at rows=20, not at the service: a run allowing 10,000 climbs again.
    small = profile(page_size=20, ceiling=20, probed_rows=20)
    assert still_valid(small, "t", rows=20) and not still_valid(small, "t", rows=10_000)
    # The climb stopped at the service's cap (3,000 < 10,000): nothing more to learn.
    capped = profile(page_size=3000, ceiling=3000, probed_rows=10_000)
    assert still_valid(capped, "t", rows=20_000)
    assert not still_valid(capped, "u", rows=10_000)  # another configured date form


@dataclass
class FakePage:
    num_found: int
    docs: list[dict[str, Any]]
    raw_bytes: int


class CappedService:
    """``*:*`` over ``rows`` rows of ``row_bytes`` each, capped silently at ``cap``."""

    def __init__(self, rows: int, cap: int, row_bytes: int) -> None:
        self.rows, self.cap, self.row_bytes = rows, cap, row_bytes
        self.asked: list[int] = []

    async def search(self, criteria: str, start: int, rows: int, sort: str | None = None) -> Any:
        self.asked.append(rows)
        served = min(rows, self.cap, self.rows)
        docs = [{"id": f"{i:032x}"} for i in range(served)]
        return FakePage(self.rows, docs, served * self.row_bytes)

    async def count(self, criteria: str) -> int:
        return self.rows


class SlowOnce(CappedService):
    """Its first page of ``slow`` rows takes 0.3 s, every other page 10 ms, on a clock of
    its own: the claim is about the choice, and on a loaded machine the real clock can
    spend more than 0.1 s building a page of 3,000 fake rows (a CI run chose 1,600)."""

    def __init__(self, slow: int) -> None:
        super().__init__(rows=100_000, cap=slow, row_bytes=800)
        self.slow, self.slowed = slow, False
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def search(self, criteria: str, start: int, rows: int, sort: str | None = None) -> Any:
        page = await super().search(criteria, start, rows, sort)
        if len(page.docs) == self.slow and not self.slowed:
            self.slowed = True
            self.now += 0.3
        else:
            self.now += 0.01
        return page


def test_one_slow_answer_at_the_ceiling_is_timed_again_before_a_smaller_page_wins() -> None:
    service = SlowOnce(3000)
    evidence: list[str] = []

    async def choose(confirm: bool) -> int:
        climb = await _probe_page_size(service, 10_000, 10_000, 0.0, evidence, service.clock)
        if not confirm:
            return choose_page_size(climb.latencies, 0.0, 4, climb.honoured)
        return await _choose_confirmed(service, climb, 0.0, 4, evidence, service.clock)

    # The one slow answer alone would halve the page (1,600 at the floor's 50 ms beats
    # 3,000 in 0.3 s): the confirmation is what keeps 3,000.
    assert asyncio.run(choose(confirm=False)) == 1600
    service.asked.clear()
    service.slowed = False
    assert asyncio.run(choose(confirm=True)) == 3000
    assert service.asked == [100, 200, 400, 800, 1600, 3200, 3000]  # one request more
    assert any("timed again" in line for line in evidence)


def test_the_climb_goes_past_1000_up_to_the_service_cap() -> None:
    service = CappedService(rows=100_000, cap=3000, row_bytes=800)
    climb = asyncio.run(_probe_page_size(service, 10_000, 10_000, 0.0, []))
    assert climb.honoured == 3000
    assert service.asked == [100, 200, 400, 800, 1600, 3200]  # 6 pages; 3200 served 3000
    assert sorted(climb.latencies) == [100, 200, 400, 800, 1600, 3000]


def test_the_climb_stops_below_the_payload_cap_and_at_rows() -> None:
    service = CappedService(rows=100_000, cap=50_000, row_bytes=1000)
    climb = asyncio.run(_probe_page_size(service, 50_000, 50_000, 0.0, []))
    assert climb.honoured == int(PAYLOAD_CAP_BYTES * PAYLOAD_SHARE / 1000)  # 4,800 rows
    fixed = CappedService(rows=100_000, cap=50_000, row_bytes=1000)
    assert asyncio.run(_probe_page_size(fixed, 1000, 50_000, 0.0, [])).honoured == 1000
    assert fixed.asked == [100, 200, 400, 800, 1000]


def test_a_harvest_learns_a_page_above_1000_and_the_lake_equals_the_truth(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    env = harvest_env()
    for name in ("HARVESTER_MAX_WINDOW", "HARVESTER_SHARD_SIZE"):  # the defaults: 10,000
        env.pop(name, None)
    # A service time of 50 ms + 0.02 ms a row stands well above loopback's noise, so the
    # choice is the service's, not the scheduler's, on a loaded machine too.
    args = ("--records", "12000", *RANGE, "--max-rows", "3000", "--seed", "5", "--admin")
    args += ("--latency-base", "0.05", "--latency-per-row", "0.00002")
    with run_simulator_process(*args) as sim:
        result = run_harvest(sim.url, str(out), env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert_lake_equals_truth(Lake.open(str(out)), sim.truth())
    service = reports(out, "harvest")[-1]["extra"]["service"]
    stored = json.loads((out / "_harvest" / "service.json").read_text())
    # Past the old ceiling (1,000); 3,000 unless a busy machine slowed both of its pages.
    assert service["page_size"] > 1000, stored["evidence"]
    assert (stored["ceiling"], stored["chosen_by"]) == (3000, CHOSEN)
