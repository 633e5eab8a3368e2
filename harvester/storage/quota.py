"""The weekly quota: its calendar, how a quota ``429`` looks, and what a key has spent.

ODP publishes a quota of 5,000,000 metadata calls per key per week, reset Sunday 00:00 UTC
(reference: "Weekly quota"); going over answers ``429``, the status of ordinary throttling,
usually without ``Retry-After`` and with a gateway body such as
``{"message": "Limit Exceeded"}``. Throttling passes in seconds; a spent quota lasts until
the reset, so the two must be told apart: by the body when it says so, else by ``429``s that
persist past ``quota_after`` seconds without one answer in between (the client's rule).

What a key spent is counted in the lake (``state.QuotaLedger``), per key and per week, by
every run that saves a report. Keys are named by ``key_id``: a short digest, never the key.
The count is the lake's own: runs of the same key against other lakes or by other tools are
not in it, which is why ``status`` says "by runs on this lake".
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re

from harvester.storage.state import HarvestState, QuotaLedger

# Gateway and API-management wordings of a spent quota: AWS API Gateway's usage plans answer
# exactly "Limit Exceeded", others name a "quota". Throttling says "Too Many Requests" or,
# Solr-style, "Rate limit exceeded: ...", which must not match: hence the anchors.
QUOTA_MESSAGE = re.compile(r"^\W*limit exceeded\W*$|quota", re.IGNORECASE)

RESET_WEEKDAY = 6  # Sunday (Monday is 0), 00:00 UTC


def is_quota_message(message: str) -> bool:
    """Whether a ``429``'s body names a spent quota rather than throttling."""
    return bool(QUOTA_MESSAGE.search(message))


def week_start(now: dt.datetime) -> dt.datetime:
    """The start (Sunday 00:00 UTC) of the quota week holding ``now``."""
    now = now.astimezone(dt.UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - dt.timedelta(days=(now.weekday() - RESET_WEEKDAY) % 7)


def next_reset(now: dt.datetime) -> dt.datetime:
    """When the quota week holding ``now`` ends."""
    return week_start(now) + dt.timedelta(days=7)


def key_id(key: str | None) -> str:
    """A key's name in state and reports: 12 hex digits of its SHA-256, or ``no-key``.
    Enough to tell a lake's keys apart; says nothing of the key itself."""
    if not key:
        return "no-key"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def calendar_finish(
    requests: int,
    *,
    rate: float | None,
    quota: int,
    spent_this_week: int,
    now: dt.datetime,
) -> tuple[dt.datetime, int]:
    """When ``requests`` sent at ``rate`` per second (None: no limit, sending takes no time)
    end, if every week allows ``quota`` (0: none) and this one has ``spent_this_week``
    already; and how many times the run meets a spent quota and must wait for a reset."""
    left = requests
    clock = now.astimezone(dt.UTC)
    stops = 0
    room = max(quota - spent_this_week, 0) if quota else None
    while True:
        reset = next_reset(clock)
        week_left = (reset - clock).total_seconds()
        can = left if room is None else min(left, room)
        need = can / rate if rate else 0.0
        if need <= week_left:
            if can == left:
                return clock + dt.timedelta(seconds=need), stops
            left -= can  # the quota is spent before the week ends: wait for the reset
            stops += 1
        else:
            left -= int(week_left * (rate or 0))  # the week ends first: its rest is lost
        clock, room = reset, (quota or None)


def spent_this_week(state: HarvestState, key: str, now: dt.datetime) -> tuple[int, str]:
    """(requests, when the quota was met or "") that runs on this lake spent with the key
    named ``key`` (a ``key_id``) in the quota week holding ``now``."""
    ledger = state.load_quota()
    if ledger is None or ledger.week_start != week_start(now).isoformat():
        return 0, ""
    return ledger.requests.get(key, 0), ledger.spent_at.get(key, "")


def record(
    state: HarvestState, key: str, requests: int, spent_at: str, now: dt.datetime
) -> QuotaLedger:
    """Add a run's ``requests`` to this week's count for ``key``; a new week starts the
    ledger again. (A run spanning a reset counts all its requests in the week it ends in:
    the ledger is for "how much is left", where erring high is the safe side.)"""
    start = week_start(now).isoformat()
    ledger = state.load_quota()
    if ledger is None or ledger.week_start != start:
        ledger = QuotaLedger(start)
    ledger.requests[key] = ledger.requests.get(key, 0) + requests
    if spent_at:
        ledger.spent_at[key] = spent_at
    state.save_quota(ledger)
    return ledger
