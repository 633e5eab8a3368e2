"""ClientPolicy.from_settings: every setting the client obeys reaches its policy, by name."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from harvester.config import Settings
from harvester.service.client import ApiClient
from harvester.service.policy import ClientPolicy

# A value for every field the policy maps, each unlike Settings' default, so a field left
# out (or mapped from the wrong setting) shows as a difference.
UNUSUAL = {
    "rate": 2.5,
    "concurrency": 3,
    "timeout": 7.0,
    "max_attempts": 11,
    "min_429_wait": 0.5,
    "backoff_base": 0.25,
    "backoff_max": 9.0,
    "max_retry_after": 42.0,
    "outage_after": 4,
    "outage_wait_max": 17.0,
    "max_outage": 600.0,
    "quota_wait": True,
    "quota_after": 33.0,
    "quota_probe": 44.0,
    "max_requests": 123,
}


def test_every_policy_field_is_a_setting_of_that_name() -> None:
    names = {f.name for f in dataclasses.fields(ClientPolicy)}
    assert names == set(UNUSUAL)
    assert names <= {f.name for f in dataclasses.fields(Settings)}


def test_every_mapped_setting_reaches_the_policy() -> None:
    defaults = Settings()
    assert all(getattr(defaults, name) != value for name, value in UNUSUAL.items())
    policy = ClientPolicy.from_settings(Settings(**UNUSUAL))  # type: ignore[arg-type]
    assert dataclasses.asdict(policy) == UNUSUAL


def test_the_defaults_are_the_settings_defaults() -> None:
    """The policy keeps no defaults of its own: the default policy is the default
    settings' (only ``rate`` 0, unlimited, is spelt None)."""
    defaults = Settings()
    policy = ClientPolicy.from_settings(defaults)
    for f in dataclasses.fields(ClientPolicy):
        assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        assert getattr(policy, f.name) == getattr(defaults, f.name)


def test_rate_zero_means_no_limiter() -> None:
    policy = ClientPolicy.from_settings(Settings(rate=0))
    assert policy.rate is None
    assert "rate=None" in repr(ApiClient("https://api.example", None, policy))


@pytest.mark.parametrize(
    "change", [{"concurrency": 0}, {"max_attempts": 0}, {"timeout": 0.0}, {"rate": -1.0}]
)
def test_an_impossible_policy_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(ClientPolicy.from_settings(Settings()), **change)


def test_the_policy_is_frozen() -> None:
    policy = ClientPolicy.from_settings(Settings())
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.rate = 1.0  # type: ignore[misc]
