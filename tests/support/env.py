"""The environment every test runs in: none of the machine's harvester settings, API keys
or AWS setup, whatever the shell that started the tests exported.

``tests/conftest.py``'s autouse fixture applies ``scrub`` to ``os.environ`` around every
test; a test that starts a subprocess builds its environment with ``scrubbed_environ``
(``tests.support.harvest.harvest_env`` adds the fast test settings on top of it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from tests.support.s3server import FAKE_CREDENTIALS

# What the harvester or the libraries under it read from the environment: its settings
# (harvester.config.SPECS, all HARVESTER_*), the key variables (USPTO_API_KEY, _FILE) and
# boto's / s3fs's AWS_* (credentials, profiles, endpoints, region).
MACHINE_PREFIXES = ("HARVESTER_", "USPTO_", "AWS_")

# In place of the machine's AWS setup: fake credentials (so no credential chain reaches for
# ~/.aws or instance metadata) and no config or credentials file.
TEST_ENVIRON: Mapping[str, str] = {
    **FAKE_CREDENTIALS,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def is_machine_setting(name: str) -> bool:
    return name.startswith(MACHINE_PREFIXES)


def scrubbed_environ(**extra: str) -> dict[str, str]:
    """``os.environ`` less every machine setting, with ``TEST_ENVIRON`` and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not is_machine_setting(k)}
    return {**env, **TEST_ENVIRON, **extra}
