"""SimConfig: everything one simulator instance needs, validated once at construction.

The CLI, the in-process test helper and the benchmarks all build a ``SimConfig``; nothing
else reads flags, so a setting has exactly one default and one validation rule.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

FAULT_PROFILES = ("none", "flaky", "hostile")
FAULT_KINDS = (
    "http500",
    "http502",
    "http503",
    "http504",
    "hang",
    "reset",
    "truncated",
    "malformed",
    "empty",
    "trickle",
)
# Kinds no profile draws unless ``--fault-kinds`` names them (adding them to FAULT_KINDS
# would change every seeded hostile and flaky run).
OPT_IN_FAULT_KINDS = ("spurious-empty",)
KNOWN_FAULT_KINDS = FAULT_KINDS + OPT_IN_FAULT_KINDS
# Habits of the real service that the public sources report but nobody has verified
# (reference: "More that public sources say"); each is off by default.
WINDOW_ERRORS = (400, 500)
PAGE_CAP_MODES = ("silent", "refuse")
DATE_FIELD_KINDS = ("date", "string")
SORT_MODES = ("ignore", "honour", "refuse")
THROTTLE_STYLES = ("solr", "gateway")
OUTAGE_KINDS = ("503", "refuse")


@dataclass(frozen=True)
class SimConfig:
    """One simulator's settings. ``0`` means "unlimited" for ``rate`` and ``burst``."""

    host: str = "127.0.0.1"
    port: int = 8765
    seed: int = 1
    records: int = 100_000
    start: dt.date = dt.date(2018, 6, 1)
    end: dt.date = dt.date(2019, 5, 31)
    api_key: str | None = None
    # Unlimited by default so benchmarks measure the client; ``--rate 4 --burst 1`` is ODP's
    # published limit (reference: "Limits").
    rate: float = 0.0
    burst: int = 0
    bucket_capacity: float | None = None  # None = max(1, rate)
    max_rows: int = 100
    max_window: int = 10_000
    faults: str = "none"
    fault_rate: float | None = None  # None = the profile's rate
    fault_kinds: tuple[str, ...] | None = None  # None = every kind the profile uses
    hang_seconds: float = 30.0
    trickle_seconds: float = 3.0
    latency_ms: float = 0.0
    # A records answer waits latency_base + latency_per_row * its docs (seconds): the real
    # service's time grows with the page (issue 20, item 5). 0 and 0: no wait, as before.
    latency_base: float = 0.0
    latency_per_row: float = 0.0
    admin: bool = False
    bad_rows: int = 0
    cache_rows: int = 150_000  # generated rows kept in memory (LRU of whole days, ~1 KiB each)
    # The real service's reported habits (docs/simulator.md, "Habits"); defaults = today's.
    window_error: int = 400  # status of a request past --max-window: 400 (Solr) or 500
    page_cap_mode: str = "silent"  # rows > max_rows: "silent" cap or "refuse" (400)
    max_response_bytes: int = 0  # records bodies above this answer 413 (0 = no limit)
    date_field: str = "date"  # "string": date ranges compare text letter by letter
    sort: str = "ignore"  # the ``sort`` parameter: "ignore", "honour" or "refuse" (400)
    gateway_errors: bool = False  # API-gateway 401/403 bodies; unknown routes 403
    throttle_style: str = "solr"  # "gateway": 429 {"message": ...} without Retry-After
    count_drift: int = 0  # added to numFound of multi-day count queries (rows <= 1)
    weekly_quota: int = 0  # admitted requests per key until /_sim/quota-reset (0 = none)
    outage_after: int = 0  # API requests served before the outage begins (0 = no outage)
    outage_seconds: float = 0.0
    outage_kind: str = "503"  # "503" (empty body) or "refuse" (the port stops listening)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not 0 <= self.port <= 65535:
            problems.append(f"port must be 0..65535, got {self.port}")
        if self.records < 0:
            problems.append(f"records must be >= 0, got {self.records}")
        if self.end < self.start:
            problems.append(f"end {self.end} is before start {self.start}")
        if self.rate < 0:
            problems.append(f"rate must be >= 0, got {self.rate}")
        if self.burst < 0:
            problems.append(f"burst must be >= 0, got {self.burst}")
        if self.bucket_capacity is not None and self.bucket_capacity < 1:
            problems.append(f"bucket capacity must be >= 1, got {self.bucket_capacity}")
        if self.max_rows < 1:
            problems.append(f"max rows must be >= 1, got {self.max_rows}")
        if self.max_window < 1:
            problems.append(f"max window must be >= 1, got {self.max_window}")
        if self.faults not in FAULT_PROFILES:
            problems.append(
                f"faults must be one of {', '.join(FAULT_PROFILES)}, got {self.faults!r}"
            )
        if self.fault_rate is not None and not 0 <= self.fault_rate <= 1:
            problems.append(f"fault rate must be within 0..1, got {self.fault_rate}")
        unknown = sorted(set(self.fault_kinds or ()) - set(KNOWN_FAULT_KINDS))
        if unknown:
            problems.append(f"unknown fault kinds {unknown}; known: {', '.join(KNOWN_FAULT_KINDS)}")
        if self.fault_kinds is not None and not self.fault_kinds:
            problems.append("fault kinds must name at least one kind")
        if self.hang_seconds < 0 or self.trickle_seconds < 0 or self.latency_ms < 0:
            problems.append("hang seconds, trickle seconds and latency must be >= 0")
        if self.latency_base < 0 or self.latency_per_row < 0:
            problems.append("latency base and latency per row must be >= 0")
        # Against a negative --records the bad rows' bound says nothing new: one clause.
        if self.records >= 0 and not 0 <= self.bad_rows <= self.records:
            problems.append(f"bad rows must be within 0..records, got {self.bad_rows}")
        if self.cache_rows < 1:
            problems.append(f"cache rows must be >= 1, got {self.cache_rows}")
        problems.extend(self._habit_problems())
        if problems:
            raise ValueError("; ".join(problems))

    def _habit_problems(self) -> list[str]:
        problems: list[str] = []
        choices: list[tuple[str, object, tuple[object, ...]]] = [
            ("window error", self.window_error, WINDOW_ERRORS),
            ("page cap mode", self.page_cap_mode, PAGE_CAP_MODES),
            ("date field", self.date_field, DATE_FIELD_KINDS),
            ("sort", self.sort, SORT_MODES),
            ("throttle style", self.throttle_style, THROTTLE_STYLES),
            ("outage kind", self.outage_kind, OUTAGE_KINDS),
        ]
        for name, value, allowed in choices:
            if value not in allowed:
                problems.append(
                    f"{name} must be one of {', '.join(map(str, allowed))}, got {value!r}"
                )
        counts = [
            ("max response bytes", self.max_response_bytes),
            ("count drift", self.count_drift),
            ("weekly quota", self.weekly_quota),
            ("outage after", self.outage_after),
        ]
        for name, number in counts:
            if number < 0:
                problems.append(f"{name} must be >= 0, got {number}")
        if self.outage_seconds < 0:
            problems.append(f"outage seconds must be >= 0, got {self.outage_seconds}")
        if self.outage_after and not self.outage_seconds:
            problems.append("outage after needs outage seconds > 0")
        return problems

    def records_delay(self, rows: int) -> float:
        """Seconds a records answer serving ``rows`` docs waits (``--latency-base`` +
        ``--latency-per-row`` x rows), on top of ``--latency``."""
        return self.latency_base + self.latency_per_row * rows

    @property
    def capacity(self) -> float:
        """The token bucket's size: ``--bucket-capacity`` or ``max(1, rate)``."""
        return self.bucket_capacity if self.bucket_capacity is not None else max(1.0, self.rate)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1
