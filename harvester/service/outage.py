"""OutageWatch: the client's long-haul state machine, outages and the weekly quota
(reference: "Weekly quota", "Gateway errors").

States: *serving* (no hold), *outage hold*, *quota hold* (``backoff.ServiceHold`` keeps
the episode, the queue for the one probe, and the history the report lists).

- serving -> outage: ``outage_after`` outage-like failures in a row (5xx, 408, timeouts,
  resets, refused connections), across every caller, with no answer between them, once
  the service has answered at least once (before that it is unreachable, a wrong URL,
  which the client reports in seconds). ``outage_after`` is capped at ``max_attempts``, so
  one request alone meets the breaker before it runs out of attempts; 0: no breaker.
- serving or outage -> quota: a 429 whose body names a quota (``quota.is_quota_message``),
  or 429s persisting ``quota_after`` seconds without one answer between them. Without
  ``quota_wait``: ``QuotaExhausted`` (the run stops cleanly, saying when the quota resets).
- a hold -> serving: the first answer that is neither a failure nor a 429 (``answered``);
  a probe's throttling 429 during an outage counts as such an answer, a 429 during a
  quota hold does not (it is no proof the week is back).
- an outage lasting over ``max_outage`` seconds: ``OutageTooLong``.

Relation to the shared 429 gate (``backoff.Throttle``, kept by the client): a 429 is an
answer, so it breaks a run of outage-like failures; a throttling 429 goes to the gate (and
uses up an attempt), a quota 429 does not touch the gate and uses up none. During a hold
every caller waits here (``wait_out``) before the gate and the limiter, and one at a time
sends the probe; failures during a hold are the hold's, never a request's attempts.

The client tells the watch what each attempt met (``answered``, ``failed``, ``on_429``)
and calls ``wait_out`` before each attempt; the watch never sends a request itself but
through the probe the client hands it, so it knows nothing of HTTP.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from harvester.errors import OutageTooLong, QuotaExhausted
from harvester.humanize import duration_text
from harvester.service.backoff import ServiceHold, backoff_ceiling
from harvester.service.policy import ClientPolicy
from harvester.storage import quota

log = logging.getLogger("harvester.service.outage")

# What the probe met: the status of an answer, or the cause of a failed attempt (a
# transport failure or a damaged body, as the client names it).
ProbeResult = int | str


class HoldRecord(Protocol):
    """Where the watch records the holds for the report (``client.ClientStats``)."""

    holds: list[dict[str, object]]
    quota_spent_at: str


class OutageWatch:
    """The outage breaker and the quota wait; see the module docstring for the states.

    ``record`` receives the holds as they change (so a run stopped during one reports it)
    and when the quota was found spent; ``scrub`` removes the key from text quoted in an
    error."""

    def __init__(
        self, policy: ClientPolicy, record: HoldRecord, scrub: Callable[[str], str]
    ) -> None:
        self._hold = ServiceHold()
        self._record = record
        self._scrub = scrub
        # A lone request must meet the breaker before it runs out of attempts (the failure
        # that begins a hold is not counted): never more than max_attempts. 0: no breaker.
        after = policy.outage_after
        self._outage_after = min(after, policy.max_attempts) if after > 0 else 0
        self._outage_base = max(policy.backoff_base, 0.1)
        self._outage_wait_max = policy.outage_wait_max
        self._max_outage = policy.max_outage
        self._quota_wait = policy.quota_wait
        self._quota_after = policy.quota_after
        self._quota_probe = policy.quota_probe
        self._failures_in_row = 0  # outage-like failures since the last answer, all callers
        self._throttled_since: float | None = None  # first 429 since the last answer

    async def wait_out(self, probe: Callable[[], Awaitable[ProbeResult]]) -> None:
        """Return once no hold is on; meanwhile take turns sending the hold's probe (the
        client's one ``GET`` of the field list, which proves the service answers, and the
        quota is back, without risking a request that fails by itself)."""
        while self._hold.episode is not None:
            async with self._hold.probe_slot() as probing:
                if not probing:
                    return
                await self._probe(probe)

    async def _probe(self, probe: Callable[[], Awaitable[ProbeResult]]) -> None:
        episode = self._hold.episode
        if episode is None:  # a request in flight was answered while this one waited
            return
        met = await probe()
        if isinstance(met, str):
            self._hold_failed(met)
        elif met >= 500 or met == 408:
            self._hold_failed(f"http {met}")
        elif met == 429 and episode.kind == "quota":
            episode.failed_requests += 1  # still spent (a throttling 429 is no proof either)
            self._keep_record()
        else:
            # Any other answer (a throttling 429 too) shows the service up: the waiting
            # requests go on, and meet whatever it answers on their own.
            self.answered()

    def answered(self) -> None:
        """An answer that is not a failure nor a 429: outage and quota holds are over."""
        self._failures_in_row = 0
        self._throttled_since = None
        episode = self._hold.end()
        if episode is not None:
            self._keep_record()
            what = "outage" if episode.kind == "outage" else "wait for the weekly quota"
            log.warning(
                "the service answers again: %s over after %s (%s .. %s, %d failed requests)",
                what,
                duration_text(episode.seconds),
                episode.started_at,
                episode.ended_at,
                episode.failed_requests,
            )

    def failed(self, cause: str, what: str, *, ever_answered: bool) -> bool:
        """Count an outage-like failure; True when an outage holds (it began now, or the
        request was in flight when it began), so the failure is the outage's and uses up
        no attempt. ``ever_answered``: has any response ever reached the client (before,
        the service is unreachable, not down)."""
        self._failures_in_row += 1
        episode = self._hold.episode
        if episode is None:
            # Never before the service has answered once: then it is unreachable (a wrong
            # URL), which ApiUnreachable reports in seconds.
            if (
                not self._outage_after
                or not ever_answered
                or self._failures_in_row < self._outage_after
            ):
                return False
            self._hold.begin("outage", cause, self._outage_wait)
            log.warning(
                "%s: %d requests in a row failed (%s): the service looks down; every worker"
                " pauses and one request at a time probes (waits up to %.0fs)",
                what,
                self._failures_in_row,
                cause,
                self._outage_wait_max,
            )
        self._hold_failed(cause)
        return True

    def on_429(self, message: str, what: str) -> bool:
        """A 429 with the server's ``message``: False for throttling (the client's shared
        gate waits, and the attempt counts); True for the weekly quota, whose hold now
        waits for the reset with one probe at a time (no attempt counts). Raises
        ``QuotaExhausted`` for the quota when the run does not wait for it."""
        self._failures_in_row = 0  # the service answers: not an outage
        now = time.monotonic()
        if self._throttled_since is None:
            self._throttled_since = now
        persisted = now - self._throttled_since >= self._quota_after
        if not (quota.is_quota_message(message) or persisted):
            return False
        why = (
            f'the API said "{message}"'
            if not persisted
            else f"429s for {duration_text(now - self._throttled_since)} without an answer"
        )
        wall = dt.datetime.now(dt.UTC)
        reset = quota.next_reset(wall)
        if not self._record.quota_spent_at:
            self._record.quota_spent_at = wall.strftime("%Y-%m-%dT%H:%M:%SZ")
        resets = f"{reset:%Y-%m-%d %H:%M} UTC (in {duration_text((reset - wall).total_seconds())})"
        if not self._quota_wait:
            raise QuotaExhausted(
                self._scrub(
                    f"the key's weekly quota is spent ({why}); it resets {resets}."
                    " Finished work is saved: run the same command again then, or add"
                    " --wait-for-quota to wait"
                ),
                reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
        if self._hold.begin("quota", "weekly quota", self._quota_wait_for):
            log.warning(
                "%s: the key's weekly quota is spent (%s); waiting for its reset %s,"
                " one probe every %.0fs",
                what,
                self._scrub(why),
                resets,
                self._quota_probe,
            )
        self._hold_failed("weekly quota")
        return True

    def _outage_wait(self, probe: int) -> float:
        """Before the n-th probe of an outage: doubling from the retry base, capped."""
        return backoff_ceiling(probe, self._outage_base, self._outage_wait_max)

    def _quota_wait_for(self, probe: int) -> float:
        """Before each probe of a quota hold: ``quota_probe``, never past the reset."""
        until_reset = quota.next_reset(dt.datetime.now(dt.UTC)) - dt.datetime.now(dt.UTC)
        return max(min(self._quota_probe, until_reset.total_seconds() + 1.0), 0.0)

    def _hold_failed(self, cause: str) -> None:
        """A failure during an outage hold: the hold's, never a request's attempt.
        ``OutageTooLong`` once the hold has lasted ``max_outage``."""
        episode = self._hold.episode
        if episode is None:  # ended meanwhile by another caller's answer: nothing to count
            return
        episode.failed_requests += 1
        self._keep_record()
        if episode.kind == "outage" and self._hold.age() > self._max_outage:
            raise OutageTooLong(
                f"the service has failed every request since {episode.started_at}"
                f" ({duration_text(self._hold.age())}, last: {cause}), longer than"
                f" max_outage ({self._max_outage:.0f}s): stopped; finished work is saved,"
                " run the same command again later to resume"
            )

    def _keep_record(self) -> None:
        self._record.holds = [e.to_json() for e in self._hold.episodes()]
