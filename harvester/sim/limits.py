"""Per-key rate limits: a token bucket and a cap on requests in flight, as ODP publishes them.

The reference ("Limits") gives burst 1 (no parallel requests per key) and 4-15 requests per
second; past either the service answers 429. Its ``Retry-After`` may be seconds, ``0``
while the window is still enforced, an HTTP date, or absent: the hostile profile sends all
four; otherwise it is the honest number of whole seconds until a token is available.
``WeeklyQuota`` is ODP's weekly call quota per key ("More that public sources say").
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate

Clock = Callable[[], float]
RETRY_AFTER_STYLES = ("seconds", "zero", "date", "none")
HOSTILE_STYLE_WEIGHTS = (4, 2, 2, 2)
BURST_RETRY_SECONDS = 1.0  # a slot frees when a request ends; nothing better to promise


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request was throttled and how long until a retry could pass."""

    reason: str  # "rate" or "burst"
    wait: float


class TokenBucket:
    """``rate`` tokens per second up to ``capacity``; a request takes one whole token."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def take(self, now: float) -> float:
        """0 if a token was taken, else the seconds until one will be there."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Limiter:
    """Both limits, per API key. ``rate == 0`` / ``burst == 0`` switch a limit off."""

    def __init__(
        self, rate: float, capacity: float, burst: int, clock: Clock = time.monotonic
    ) -> None:
        self.rate = rate
        self.capacity = capacity
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._in_flight: dict[str, int] = {}

    def admit(self, key: str) -> Refusal | None:
        """Let a request in (the caller must ``release`` it) or say why not."""
        in_flight = self._in_flight.get(key, 0)
        # In-flight first: a request refused for concurrency must not cost a token.
        if self.burst and in_flight >= self.burst:
            return Refusal("burst", BURST_RETRY_SECONDS)
        if self.rate:
            now = self.clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(self.rate, self.capacity, now)
            wait = bucket.take(now)
            if wait > 0:
                return Refusal("rate", wait)
        self._in_flight[key] = in_flight + 1
        return None

    def release(self, key: str) -> None:
        left = self._in_flight.get(key, 0) - 1
        if left > 0:
            self._in_flight[key] = left
        else:
            self._in_flight.pop(key, None)

    def in_flight(self, key: str) -> int:
        return self._in_flight.get(key, 0)


class RetryAfter:
    """The ``Retry-After`` header of a 429: honest, or (hostile) any of the quirky forms."""

    def __init__(self, hostile: bool, rng: random.Random, wall: Clock = time.time) -> None:
        self.hostile = hostile
        self.rng = rng
        self.wall = wall

    def style(self) -> str:
        if not self.hostile:
            return "seconds"
        return self.rng.choices(RETRY_AFTER_STYLES, HOSTILE_STYLE_WEIGHTS)[0]

    def header(self, wait: float, style: str) -> str | None:
        seconds = max(1, math.ceil(wait))
        if style == "seconds":
            return str(seconds)
        if style == "zero":
            return "0"  # while the limit is still enforced: a client must not trust it
        if style == "date":
            return formatdate(self.wall() + seconds, usegmt=True)
        return None


class WeeklyQuota:
    """At most ``limit`` admitted requests per key until ``reset`` (``0`` = no quota).

    ODP gives 5,000,000 calls per key per week, reset Sunday 00:00 UTC. The simulator never
    reads wall time, so its "Sunday" is ``POST /_sim/quota-reset`` (``--admin``).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used: Counter[str] = Counter()

    def exhausted(self, key: str) -> bool:
        return bool(self.limit) and self.used[key] >= self.limit

    def spend(self, key: str) -> None:
        if self.limit:
            self.used[key] += 1

    def reset(self) -> int:
        """Start a new week; returns how many keys had used some of the old one."""
        keys = len(self.used)
        self.used.clear()
        return keys
