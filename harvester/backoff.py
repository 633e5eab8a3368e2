"""Backoff arithmetic and the shared 429 pause gate, kept apart from HTTP so it is testable.

Two kinds of waiting exist and they must not be confused:

- a *retry backoff* (5xx, timeouts, resets, bad bodies) is private to the one request that
  failed: other callers carry on, since one bad response says nothing about the next;
- a *throttle pause* (429) is shared: the key as a whole is over its limit, so every caller
  of the client stops until the pause ends. Letting the others carry on would only earn more
  429s and, on some gateways, a longer penalty.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import random
import re
import time
from collections.abc import Callable

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
    consecutive 429s that grows the wait when the server gives no usable hint."""

    def __init__(
        self,
        *,
        min_wait: float,
        base: float,
        cap: float,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gate = PauseGate(clock)
        self.streak = 0
        self._min_wait, self._base, self._cap = min_wait, base, cap
        self._rng = rng

    def throttled(self, retry_after: str | None) -> tuple[float, float | None]:
        """Record a 429 and close the gate; return (seconds added to the pause, the hint)."""
        # 429s answering requests sent before the gate closed belong to the same episode:
        # they do not lengthen the streak, or N concurrent callers would escalate N times.
        if self.gate.remaining() <= 0:
            self.streak += 1
        hint = parse_retry_after(retry_after)
        wait = throttle_wait(
            hint,
            self.streak,
            min_wait=self._min_wait,
            base=self._base,
            cap=self._cap,
            rng=self._rng,
        )
        return self.gate.extend(wait), hint

    def answered(self) -> None:
        """A response other than 429: the streak is over."""
        self.streak = 0
