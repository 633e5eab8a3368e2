"""ClientPolicy: every knob of the client's behaviour (pace, retries, waits, outages, the
quota, the request budget), built once from the run's ``Settings``.

Its defaults live in one place, and that place is ``harvester.config.Settings``: the policy
has no defaults of its own, so ``ClientPolicy.from_settings(Settings())`` *is* the default
policy. ``Settings`` is the one table of every setting (its flag, variable and TOML key,
shown by ``harvester config`` and the README); a second set of defaults here would be a
copy free to drift from it, as the client's keyword defaults once were. Field names are
the settings' names, so a policy reads as the settings that made it and a test can build
one as ``from_settings(Settings(timeout=2.0, ...))``.
"""

from __future__ import annotations

from dataclasses import dataclass

from harvester.config import Settings


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """How an ``ApiClient`` paces, retries and waits (see ``harvester.service.client``).

    ``rate``: requests per second at most, None for no limiter (a setting of 0).
    ``concurrency``: requests in flight at most (and connections). ``timeout``: seconds per
    request. ``max_attempts``: HTTP attempts per call, 429s included. ``min_429_wait``,
    ``backoff_base``, ``backoff_max``: the 429 pause and the retry backoff.
    ``max_retry_after``: the cap on a server's ``Retry-After``. ``outage_after``,
    ``outage_wait_max``, ``max_outage``: the outage breaker (``harvester.service.outage``).
    ``quota_wait``, ``quota_after``, ``quota_probe``: the weekly quota. ``max_requests``:
    the run's request budget (0: none).

    Invariant (checked at construction): ``concurrency >= 1``, ``max_attempts >= 1``,
    ``timeout > 0``, and ``rate`` is None or positive, so the client never has to ask.
    """

    rate: float | None
    concurrency: int
    timeout: float
    max_attempts: int
    min_429_wait: float
    backoff_base: float
    backoff_max: float
    max_retry_after: float
    outage_after: int
    outage_wait_max: float
    max_outage: float
    quota_wait: bool
    quota_after: float
    quota_probe: float
    max_requests: int

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.max_attempts < 1 or self.timeout <= 0:
            raise ValueError("concurrency and max_attempts must be >= 1 and timeout > 0")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive, or None for no limit")

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientPolicy:
        """The policy of a run's settings; ``rate`` 0 (unlimited) becomes None."""
        return cls(
            rate=settings.rate if settings.rate > 0 else None,
            concurrency=settings.concurrency,
            timeout=settings.timeout,
            max_attempts=settings.max_attempts,
            min_429_wait=settings.min_429_wait,
            backoff_base=settings.backoff_base,
            backoff_max=settings.backoff_max,
            max_retry_after=settings.max_retry_after,
            outage_after=settings.outage_after,
            outage_wait_max=settings.outage_wait_max,
            max_outage=settings.max_outage,
            quota_wait=settings.quota_wait,
            quota_after=settings.quota_after,
            quota_probe=settings.quota_probe,
            max_requests=settings.max_requests,
        )
