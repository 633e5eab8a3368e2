"""The weekly quota's arithmetic (``harvester.storage.quota``): its week, how a quota 429 reads,
the calendar a job's requests take under it, and the lake's ledger of what a key spent."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from harvester.storage import quota
from harvester.storage.state import HarvestState
from harvester.storage.store import Lake

UTC = dt.UTC
MONDAY = dt.datetime(2026, 11, 30, 17, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "start"),
    [
        (MONDAY, dt.datetime(2026, 11, 29, tzinfo=UTC)),
        (dt.datetime(2026, 11, 29, 0, 0, tzinfo=UTC), dt.datetime(2026, 11, 29, tzinfo=UTC)),
        (dt.datetime(2026, 11, 28, 23, 59, tzinfo=UTC), dt.datetime(2026, 11, 22, tzinfo=UTC)),
        # 01:00 on Sunday in UTC+2 is still Saturday in UTC: the week is UTC's.
        (
            dt.datetime(2026, 11, 29, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            dt.datetime(2026, 11, 22, tzinfo=UTC),
        ),
    ],
)
def test_the_quota_week_starts_sunday_midnight_utc(now: dt.datetime, start: dt.datetime) -> None:
    assert quota.week_start(now) == start
    assert quota.next_reset(now) == start + dt.timedelta(days=7)


@pytest.mark.parametrize(
    ("message", "is_quota"),
    [
        ("Limit Exceeded", True),  # AWS API Gateway usage plan
        ("Quota exceeded for this API key", True),
        ("Too Many Requests", False),  # the gateway's throttle
        ("Rate limit exceeded: too many requests per second", False),  # Solr-style throttle
    ],
)
def test_a_quota_429_is_told_from_throttling_by_its_words(message: str, is_quota: bool) -> None:
    assert quota.is_quota_message(message) is is_quota


def test_a_job_within_the_quota_ends_at_the_rate() -> None:
    end, stops = quota.calendar_finish(
        400, rate=4.0, quota=5_000_000, spent_this_week=0, now=MONDAY
    )
    assert (end, stops) == (MONDAY + dt.timedelta(seconds=100), 0)


def test_a_job_bigger_than_the_quota_waits_for_resets() -> None:
    # Unlimited rate: 4M left this week, then 5M a week: 4 + 5 + 5 + 5 = 19M, 1M in week 5.
    end, stops = quota.calendar_finish(
        20_000_000, rate=None, quota=5_000_000, spent_this_week=1_000_000, now=MONDAY
    )
    assert stops == 4 and end == dt.datetime(2026, 12, 27, tzinfo=UTC)


def test_at_odps_rate_the_rate_not_the_quota_sets_the_calendar() -> None:
    # 4 requests/s is 2.42M a week, under the 5M quota: never stopped by it.
    end, stops = quota.calendar_finish(
        20_000_000, rate=4.0, quota=5_000_000, spent_this_week=0, now=MONDAY
    )
    assert stops == 0 and end == MONDAY + dt.timedelta(seconds=5_000_000)


def test_a_spent_week_starts_at_the_reset() -> None:
    end, stops = quota.calendar_finish(
        100, rate=4.0, quota=5_000_000, spent_this_week=5_000_000, now=MONDAY
    )
    assert stops == 1 and end == quota.next_reset(MONDAY) + dt.timedelta(seconds=25)


def test_the_ledger_counts_per_key_and_starts_again_each_week(tmp_path: Path) -> None:
    state = HarvestState(Lake.open(str(tmp_path / "lake")))
    alice, bob = quota.key_id("alice-key"), quota.key_id("bob-key")
    assert alice != bob and "alice" not in alice and len(alice) == 12
    quota.record(state, alice, 100, "", MONDAY)
    quota.record(state, alice, 50, "2026-11-30T18:00:00Z", MONDAY)
    quota.record(state, bob, 7, "", MONDAY)
    assert quota.spent_this_week(state, alice, MONDAY) == (150, "2026-11-30T18:00:00Z")
    assert quota.spent_this_week(state, bob, MONDAY) == (7, "")
    next_week = MONDAY + dt.timedelta(days=7)
    assert quota.spent_this_week(state, alice, next_week) == (0, "")
    quota.record(state, alice, 3, "", next_week)
    assert quota.spent_this_week(state, alice, next_week) == (3, "")
    assert quota.spent_this_week(state, bob, next_week) == (0, "")
