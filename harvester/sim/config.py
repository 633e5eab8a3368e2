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
    admin: bool = False
    bad_rows: int = 0
    cache_rows: int = 150_000  # generated rows kept in memory (LRU of whole days, ~1 KiB each)

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
        unknown = sorted(set(self.fault_kinds or ()) - set(FAULT_KINDS))
        if unknown:
            problems.append(f"unknown fault kinds {unknown}; known: {', '.join(FAULT_KINDS)}")
        if self.fault_kinds is not None and not self.fault_kinds:
            problems.append("fault kinds must name at least one kind")
        if self.hang_seconds < 0 or self.trickle_seconds < 0 or self.latency_ms < 0:
            problems.append("hang seconds, trickle seconds and latency must be >= 0")
        if not 0 <= self.bad_rows <= self.records:
            problems.append(f"bad rows must be within 0..records, got {self.bad_rows}")
        if self.cache_rows < 1:
            problems.append(f"cache rows must be >= 1, got {self.cache_rows}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def capacity(self) -> float:
        """The token bucket's size: ``--bucket-capacity`` or ``max(1, rate)``."""
        return self.bucket_capacity if self.bucket_capacity is not None else max(1.0, self.rate)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1
