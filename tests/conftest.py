"""Fixtures shared by several test modules. Shared helpers (not fixtures) are in
``tests/support``; fixtures that only one module uses stay in that module."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

# Before tests.support is first imported: its asserts report their values as a test's do.
pytest.register_assert_rewrite("tests.support")

from harvester.sim.testing import run_simulator_process  # noqa: E402
from tests.support.env import TEST_ENVIRON, is_machine_setting, scrubbed_environ  # noqa: E402
from tests.support.s3server import REGION, MotoS3  # noqa: E402
from tests.support.sharedsim import SHARED_SIM_ARGS, ReadOnlySim  # noqa: E402


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile`` with the long files first (``tests/support/schedule.py``)."""
    if config.getoption("dist") != "loadfile":
        return None
    from tests.support.schedule import LongFirstScheduling

    return LongFirstScheduling(config, log)


@pytest.fixture(autouse=True)
def no_settings_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """No HARVESTER_*, key or AWS_* variable of the machine running the tests leaks into
    any test (nor, through ``tests.support.env.scrubbed_environ``, its subprocesses); the
    AWS ones are replaced by fake credentials and no config file."""
    for name in [n for n in os.environ if is_machine_setting(n)]:
        monkeypatch.delenv(name)
    for name, value in TEST_ENVIRON.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """One moto S3 server for the session, with fake credentials in the env and a bucket."""
    # Imported here: only the sessions that use S3 pay for importing moto and boto3.
    import boto3
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as patch:
        # Fake credentials only (the session fixture is set up before the autouse one):
        # whatever AWS setup the machine has is never touched.
        for name in [n for n in os.environ if is_machine_setting(n)]:
            patch.delenv(name)
        for name, value in TEST_ENVIRON.items():
            patch.setenv(name, value)
        # Port 0: the OS picks a free port at bind time (no race with other test runs).
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            bucket = "harvester-test"
            client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
            client.create_bucket(Bucket=bucket)
            yield MotoS3(endpoint, bucket)
        finally:
            server.stop()


@pytest.fixture
def s3_lake_uri(moto_s3: MotoS3) -> str:
    """A fresh, empty ``s3://bucket/<uuid>`` lake root for one test."""
    return f"s3://{moto_s3.bucket}/{uuid.uuid4().hex}"


@pytest.fixture(scope="session")
def shared_sim() -> Iterator[ReadOnlySim]:
    """One read-only simulator process per xdist worker (``tests/support/sharedsim.py``)."""
    with run_simulator_process(*SHARED_SIM_ARGS, env=scrubbed_environ()) as handle:
        yield ReadOnlySim(handle.url, handle.process)
