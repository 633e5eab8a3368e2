"""Backoff arithmetic, the shared 429 pause gate and the service hold, kept apart from HTTP
so they are testable.

Three kinds of waiting exist and they must not be confused:

- a *retry backoff* (5xx, timeouts, resets, bad bodies) is private to the one request that
  failed: other callers carry on, since one bad response says nothing about the next;
- a *throttle pause* (429) is shared: the key as a whole is over its limit, so every caller
  of the client stops until the pause ends. Letting the others carry on would only earn more
  429s and, on some gateways, a longer penalty;
- a *service hold* (an outage, or a spent weekly quota the run waits out) is shared too,
  and lasts minutes to days: every caller stops, and one request at a time probes whether
  the service is back. Requests failing during a hold are the outage's, not the shard's:
  they do not use up the request's attempts.

Every wait honoured from the server's word is capped (``Throttle``'s ``max_hint``): a
``Retry-After`` of a day must not silently stall a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import math
import random
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

# Delta-seconds as RFC 9110 writes them; fractions are tolerated because some gateways send
# them. float() alone would also accept "nan", "inf" and "1e9", which are not hints.
_SECONDS = re.compile(r"\s*(\d{1,9}(?:\.\d+)?)\s*")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value, or None when it gives no usable hint.

    Accepts delta-seconds or an HTTP-date. ``0``, a date already past, a missing header
    and garbage all return None: the reference says the service sends ``0`` while its
    window is still enforced, so ``0`` must not be read as "retry now".
    """
    if value is None:
        return None
    match = _SECONDS.fullmatch(value)
    if match:
        seconds = float(match.group(1))
        return seconds if seconds > 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" parses naive; HTTP-dates are always GMT
        when = when.replace(tzinfo=dt.UTC)
    delay = when.timestamp() - (time.time() if now is None else now)
    return delay if delay > 0 else None


def backoff_ceiling(attempt: int, base: float, cap: float) -> float:
    """The exponential ceiling for the ``attempt``-th failure (1-based): base * 2^(n-1)."""
    exponent = min(max(attempt - 1, 0), 62)  # avoid float overflow on absurd attempt counts
    return float(min(cap, base * 2.0**exponent))


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """ "Full jitter" backoff: uniform in [0, ceiling]. Spreads retries of many callers apart."""
    return (rng or random).uniform(0.0, backoff_ceiling(attempt, base, cap))


def throttle_wait(
    hint: float | None,
    streak: int,
    *,
    min_wait: float,
    base: float,
    cap: float,
    rng: random.Random | None = None,
) -> float:
    """How long a 429 pauses every caller.

    With a usable ``Retry-After`` the server's word is kept, but never below ``min_wait``
    (the reference: "wait at least 5 seconds"). Without one (absent, ``0``, garbage) the wait
    is ``max(min_wait, base)`` plus full jitter over the exponential ceiling of the streak of
    consecutive 429s: it is never zero, so a throttled client can never spin, and it grows
    while the service keeps refusing.
    """
    if hint is not None:
        return max(hint, min_wait)
    return max(min_wait, base) + full_jitter(max(streak, 1), base, cap, rng)


class PauseGate:
    """A shared "resume-at" deadline on the monotonic clock.

    Every request waits here before it takes a rate-limiter slot (and checks again after,
    since the gate may have closed while it queued). A deadline rather than an Event: it
    can only move later, so concurrent 429s with different hints compose by ``max``.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._resume_at = 0.0

    def remaining(self) -> float:
        """Seconds until the gate opens; 0 when open."""
        return max(0.0, self._resume_at - self._clock())

    def extend(self, seconds: float) -> float:
        """Close the gate for at least ``seconds`` from now; return the seconds added to the
        pause (0 when an existing pause already reaches further)."""
        now = self._clock()
        target = now + max(seconds, 0.0)
        current = max(self._resume_at, now)
        if target <= current:
            return 0.0
        self._resume_at = target
        return target - current

    async def wait(self) -> float:
        """Sleep until the gate is open, following any extension made meanwhile; return the
        seconds slept."""
        slept = 0.0
        while (remaining := self.remaining()) > 0:
            started = self._clock()
            await asyncio.sleep(remaining)
            slept += self._clock() - started
        return slept


class Throttle:
    """The 429 policy: one ``PauseGate`` shared by every caller, and the streak of
    consecutive 429s that grows the wait when the server gives no usable hint. A hint
    longer than ``max_hint`` seconds is cut to it (``capped`` counts how often)."""

    def __init__(
        self,
        *,
        min_wait: float,
        base: float,
        cap: float,
        max_hint: float = math.inf,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gate = PauseGate(clock)
        self.streak = 0
        self.capped = 0
        self._min_wait, self._base, self._cap = min_wait, base, cap
        self._max_hint = max_hint
        self._rng = rng

    def throttled(self, retry_after: str | None) -> tuple[float, float | None]:
        """Record a 429 and close the gate; return (seconds added to the pause, the hint as
        the server gave it: compare it with ``max_hint`` to tell a cap was applied)."""
        # 429s answering requests sent before the gate closed belong to the same episode:
        # they do not lengthen the streak, or N concurrent callers would escalate N times.
        if self.gate.remaining() <= 0:
            self.streak += 1
        given = parse_retry_after(retry_after)
        hint = given
        if hint is not None and hint > self._max_hint:
            hint = self._max_hint
            self.capped += 1
        wait = throttle_wait(
            hint,
            self.streak,
            min_wait=self._min_wait,
            base=self._base,
            cap=self._cap,
            rng=self._rng,
        )
        return self.gate.extend(wait), given

    def answered(self) -> None:
        """A response other than 429: the streak is over."""
        self.streak = 0


HoldKind = Literal["outage", "quota"]


@dataclass
class HoldEpisode:
    """One hold, as the run report lists it: what held the service, from when to when,
    and what it cost (requests that failed or probed during it)."""

    kind: HoldKind
    cause: str  # the failure that began it ("http 503", "connection refused", "quota")
    started_at: str  # ISO 8601 UTC
    ended_at: str = ""  # "" while it lasts (or when the run stopped during it)
    seconds: float = 0.0
    failed_requests: int = 0
    probes: int = 0
    started: float = field(default=0.0, repr=False)  # on the monotonic clock

    def to_json(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if k != "started"}


class ServiceHold:
    """While the service is down (or the run waits out a spent quota), every caller waits
    here and one probe at a time asks whether it is back.

    ``probe_slot`` yields False at once while nothing holds. During a hold callers queue
    for the one slot; the caller holding it sleeps the hold's next wait (``waits(n)`` before
    the n-th probe: the client's policy, growing and capped) and yields True: it must send
    the probe, a request known to be harmless (the field list), not its own, because a
    request that fails by itself (a query the service chokes on) must not pass for an
    outage, nor hold every worker forever. The first answer ends the hold (``end``), and the
    callers still queued go on. Invariant: during a hold one request at a time is sent,
    apart from those already in flight when it began.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.episode: HoldEpisode | None = None
        self.history: list[HoldEpisode] = []
        self._clock = clock
        self._slot = asyncio.Lock()
        self._waits: Callable[[int], float] = lambda n: 0.0

    def begin(self, kind: HoldKind, cause: str, waits: Callable[[int], float]) -> bool:
        """Start a hold (True) or, when one of the same kind holds, keep it (False). A
        hold of another kind ends the current one first."""
        if self.episode is not None and self.episode.kind == kind:
            return False
        self.end()
        self.episode = HoldEpisode(kind, cause, _utc_now(), started=self._clock())
        self._waits = waits
        return True

    def end(self) -> HoldEpisode | None:
        """The service answered: end the hold, if any, and return it."""
        episode, self.episode = self.episode, None
        if episode is not None:
            episode.ended_at = _utc_now()
            episode.seconds = round(self._clock() - episode.started, 3)
            self.history.append(episode)
        return episode

    def age(self) -> float:
        """Seconds the current hold has lasted; 0 without one."""
        return 0.0 if self.episode is None else self._clock() - self.episode.started

    def episodes(self) -> list[HoldEpisode]:
        """Every hold of the run, the current one last (with its length so far)."""
        out = list(self.history)
        if self.episode is not None:
            out.append(replace(self.episode, seconds=round(self.age(), 3)))
        return out

    @contextlib.asynccontextmanager
    async def probe_slot(self) -> AsyncIterator[bool]:
        """False at once when nothing holds (or the hold ended while this caller queued);
        else, after the hold's next wait, True: this caller sends the one probe."""
        if self.episode is None:
            yield False
            return
        async with self._slot:
            if self.episode is None:
                yield False
                return
            self.episode.probes += 1
            await asyncio.sleep(max(self._waits(self.episode.probes), 0.0))
            # A request in flight when the hold began may have been answered meanwhile.
            yield self.episode is not None


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
