"""Pytest fixtures for a real S3 endpoint: moto's server on 127.0.0.1, spoken to over HTTP.

Nothing is patched: s3fs, boto3 and subprocesses talk to the server as they would to AWS,
so the code under test runs its real S3 paths. Use with ``pytest_plugins = ["tests.s3server"]``
(or register it in ``tests/conftest.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
REGION = "us-east-1"


@dataclass(frozen=True)
class MotoS3:
    endpoint_url: str
    bucket: str

    def storage_options(self) -> dict[str, Any]:
        """Options for ``s3fs.S3FileSystem`` (and ``Lake.open``) to reach this server."""
        return {
            "key": FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "secret": FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "endpoint_url": self.endpoint_url,
            "client_kwargs": {"region_name": REGION},
        }


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """One moto S3 server for the session, with fake credentials in the env and a bucket."""
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
