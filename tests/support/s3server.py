"""A real S3 endpoint for the tests: moto's server on 127.0.0.1, spoken to over HTTP.

Nothing is patched: s3fs, boto3 and subprocesses talk to the server as they would to AWS,
so the code under test runs its real S3 paths. The ``moto_s3`` and ``s3_lake_uri`` fixtures
in ``tests/conftest.py`` start it; this module holds what they hand to the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
