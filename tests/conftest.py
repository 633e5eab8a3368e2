"""Fixtures shared by several test modules. Shared helpers (not fixtures) are in
``tests/support``; fixtures that only one module uses stay in that module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

# Before tests.support is first imported: its asserts report their values as a test's do.
pytest.register_assert_rewrite("tests.support")

from harvester.config import API_KEY_ENV, API_KEY_FILE_ENV, SPECS  # noqa: E402
from tests.support.s3server import FAKE_CREDENTIALS, REGION, MotoS3  # noqa: E402


@pytest.fixture
def no_settings_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """No HARVESTER_* or key variable of the machine running the tests may leak in."""
    for spec in SPECS:
        monkeypatch.delenv(spec.env, raising=False)
    for variable in (API_KEY_ENV, API_KEY_FILE_ENV):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """One moto S3 server for the session, with fake credentials in the env and a bucket."""
    # Imported here: only the sessions that use S3 pay for importing moto and boto3.
    import boto3
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as patch:
        # Fake credentials only: whatever AWS setup the machine has is never touched.
        for name, value in FAKE_CREDENTIALS.items():
            patch.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            patch.delenv(name, raising=False)
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
