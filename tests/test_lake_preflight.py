"""Every command with each bad ``--out``: one line, the documented exit code, no traceback,
and not one API request spent (the simulator counts them). Local outs are real unusable
paths; S3 outs are moto's server: no credentials, no bucket, and a server that enforces IAM
(credentials allowed nothing, or only to read). Then: an unexpected exception is one line
naming the file with its traceback, and a preflight leaves nothing behind."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harvester.sim.testing import SimHandle
from tests.support.cli import cli
from tests.support.env import scrubbed_environ
from tests.support.harvest import harvest_env
from tests.support.s3server import FAKE_CREDENTIALS, REGION, MotoS3
from tests.support.sharedsim import ReadOnlySim

EXIT_CONFIG, EXIT_LAKE = 2, 4  # docs/operations.md, "Exit codes"

# Each command as a user types it; "{url}" is the simulator's.
COMMANDS: dict[str, tuple[str, ...]] = {
    "harvest": ("harvest", "--api-url", "{url}", "--rate", "0"),
    "refresh": ("refresh", "--api-url", "{url}", "--rate", "0"),
    "plan": ("plan", "--api-url", "{url}", "--rate", "0"),
    "status": ("status",),
    "verify": ("verify", "--api-url", "{url}", "--rate", "0"),
    "verify --repair": ("verify", "--repair", "--api-url", "{url}", "--rate", "0"),
    "compact": ("compact",),
    "show": ("show",),
}
# The commands that open their lake for writing before they read a thing from it: on a
# path that does not exist they say the lake cannot be made there. The others find first
# that no lake is there.
CREATING = {"harvest", "refresh", "plan"}


@dataclass(frozen=True)
class BadOut:
    """One bad --out: the URI (with {tmp}, {bucket} to fill in), the exit code, and the
    message every command must print (``creating``: what CREATING commands print instead).
    ``s3``: which S3 server and credentials the run gets."""

    uri: str
    code: int
    message: str
    creating: str | None = None
    s3: str | None = None  # "moto", "no-credentials", "denied", "read-only"


NOT_A_LAKE = r"is not a harvester lake"
BAD_OUTS: dict[str, BadOut] = {
    # procfs refuses new directories (ENOENT); sysfs refuses them even to root (EPERM).
    "/proc/lake": BadOut(
        "/proc/lake", EXIT_LAKE, NOT_A_LAKE, r"cannot create the directory /proc/lake"
    ),
    "/sys/lake": BadOut(
        "/sys/lake", EXIT_LAKE, NOT_A_LAKE, r"cannot create the directory /sys/lake"
    ),
    # A file where a directory must be (the issue's /etc/hostname/lake, on a file of ours).
    "file/lake": BadOut("{tmp}/a-file/lake", EXIT_LAKE, r"a-file is a file, not a directory"),
    "/": BadOut("/", EXIT_CONFIG, r"invalid lake URI '/' .*filesystem root"),
    "s3://": BadOut("s3://", EXIT_CONFIG, r"invalid lake URI 's3://' .*names a bucket"),
    "s3 without credentials": BadOut(
        "s3://{bucket}/lake",
        EXIT_LAKE,
        r"no usable AWS credentials for s3://\S+ .*set AWS_ACCESS_KEY_ID",
        s3="no-credentials",
    ),
    "s3 without the bucket": BadOut(
        "s3://no-such-bucket-here/lake",
        EXIT_LAKE,
        r"bucket no-such-bucket-here does not exist",
        s3="moto",
    ),
    "s3 access denied": BadOut(
        "s3://{bucket}/lake",
        EXIT_LAKE,
        r"access denied: cannot (read|write to) s3://\S+ \(Access Denied\)",
        s3="denied",
    ),
    # Reading allowed, writing not: readers find no lake, writers are refused before a
    # request, which is what the write probe is for.
    "s3 read-only": BadOut(
        "s3://{bucket}/lake",
        EXIT_LAKE,
        NOT_A_LAKE,
        r"access denied: cannot write to s3://\S+",
        s3="read-only",
    ),
}


@pytest.fixture
def sim(shared_sim: ReadOnlySim) -> SimHandle:
    """Every command here is refused before a request: the shared simulator counts them."""
    return shared_sim


# -- a second moto server that enforces IAM ------------------------------------------------
_IAM_SERVER = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
print(f"http://{host}:{port}", flush=True)
sys.stdin.read()  # serve until the test closes stdin
server.stop()
"""
READ_ONLY_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject"], "Resource": "*"}
    ],
}


@dataclass(frozen=True)
class IamS3:
    endpoint_url: str
    bucket: str
    credentials: dict[str, dict[str, str]]  # "denied" / "read-only" -> AWS_* variables


@pytest.fixture(scope="module")
def iam_s3() -> Iterator[IamS3]:
    """moto in its own process (its IAM switch is global to a process: the session's shared
    server must stay open), with a bucket, a user allowed nothing and one allowed to read;
    then IAM is enforced for every request (moto's ``reset-auth``)."""
    import boto3

    env = scrubbed_environ()
    process = subprocess.Popen(
        [sys.executable, "-c", _IAM_SERVER],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        endpoint = process.stdout.readline().strip()
        assert endpoint.startswith("http://127.0.0.1:"), endpoint
        admin = {
            "endpoint_url": endpoint,
            "region_name": REGION,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        bucket = "harvester-iam"
        boto3.client("s3", **admin).create_bucket(Bucket=bucket)
        iam = boto3.client("iam", **admin)
        credentials = {}
        for user in ("denied", "read-only"):
            iam.create_user(UserName=user)
            if user == "read-only":
                iam.put_user_policy(
                    UserName=user, PolicyName="read", PolicyDocument=json.dumps(READ_ONLY_POLICY)
                )
            key = iam.create_access_key(UserName=user)["AccessKey"]
            credentials[user] = {
                "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            }
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
            headers={"Content-Type": "text/plain"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
        yield IamS3(endpoint, bucket, credentials)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _env(bad: BadOut, moto: MotoS3, iam: IamS3, tmp: Path) -> dict[str, str]:
    env = harvest_env()
    if bad.s3 is None:
        return env
    for name in [n for n in env if n.startswith("AWS_")]:
        del env[name]
    # No machine's AWS setup is ever read, and no instance-metadata request leaves the host.
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp / "no-credentials")
    env["AWS_CONFIG_FILE"] = str(tmp / "no-config")
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["AWS_DEFAULT_REGION"] = REGION
    if bad.s3 == "no-credentials":
        env["HARVESTER_S3_ENDPOINT_URL"] = moto.endpoint_url
    elif bad.s3 == "moto":
        env.update(FAKE_CREDENTIALS)
        env["HARVESTER_S3_ENDPOINT_URL"] = moto.endpoint_url
    else:
        env.update(iam.credentials[bad.s3])
        env["HARVESTER_S3_ENDPOINT_URL"] = iam.endpoint_url
    return env


@pytest.mark.parametrize("name", list(BAD_OUTS))
def test_every_command_refuses_a_bad_out_in_one_line_before_any_request(
    name: str, sim: SimHandle, moto_s3: MotoS3, iam_s3: IamS3, tmp_path: Path
) -> None:
    bad = BAD_OUTS[name]
    (tmp_path / "a-file").write_text("a file, not a directory\n")
    bucket = iam_s3.bucket if bad.s3 in ("denied", "read-only") else moto_s3.bucket
    out = bad.uri.format(tmp=tmp_path, bucket=bucket)
    env = _env(bad, moto_s3, iam_s3, tmp_path)
    before = sim.stats()["requests"]

    def run(command: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        args = [a.format(url=sim.url) for a in COMMANDS[command]]
        return command, cli(*args, "--out", out, env=env, timeout=120)

    # The commands run side by side: the request count is checked for all of them at once
    # (it must stay where it was, so each one spent none).
    with ThreadPoolExecutor(4) as pool:
        results = dict(pool.map(run, COMMANDS))
    assert sim.stats()["requests"] == before, f"{name}: requests were spent"
    for command, result in results.items():
        expected = bad.creating if command in CREATING and bad.creating else bad.message
        lines = result.stderr.strip().splitlines()
        where = f"{command} --out {out}: exit {result.returncode}, stderr {result.stderr!r}"
        assert result.returncode == bad.code, where
        assert "Traceback" not in result.stderr + result.stdout, where
        assert len(lines) == 1 and lines[0].startswith("harvester: error: "), where
        assert re.search(expected, lines[0]), where
        assert result.stdout == "", where
    if bad.s3 == "read-only":  # the write probe was refused, so nothing can be left over
        import boto3

        client = boto3.client(
            "s3", endpoint_url=iam_s3.endpoint_url, region_name=REGION,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )  # fmt: skip
        assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


# -- the unexpected, and what a preflight leaves -----------------------------------------------
def test_an_unexpected_exception_is_one_line_naming_its_details(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    (lake / "_harvest").mkdir(parents=True)
    (lake / "_harvest" / "lake.json").write_text("{ not json")  # nothing maps this one
    details_dir = tmp_path / "tmp"
    details_dir.mkdir()
    env = harvest_env(TMPDIR=str(details_dir))
    result = cli("status", "--out", str(lake), env=env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    match = re.fullmatch(
        r"harvester: error: unexpected JSONDecodeError: .+ \(details: (\S+);"
        r" run with -v for the traceback\)",
        lines[0],
    )
    assert match, lines[0]
    details = Path(match.group(1))
    assert details.parent == details_dir
    text = details.read_text()
    assert "Traceback (most recent call last)" in text and "JSONDecodeError" in text
    assert "command: " in text and "status --out" in text

    verbose = cli("status", "--out", str(lake), "-v", env=env)
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stderr
    last = verbose.stderr.strip().splitlines()[-1]
    assert last.startswith("harvester: error: unexpected JSONDecodeError") and "-v" not in last


def test_an_api_key_never_reaches_the_details(tmp_path: Path) -> None:
    key = "sekrit-key-0123456789"
    lake = tmp_path / "lake"
    (lake / "_harvest").mkdir(parents=True)
    (lake / "_harvest" / "lake.json").write_text(key)  # the parser quotes what it read
    env = harvest_env(TMPDIR=str(tmp_path), USPTO_API_KEY=key)
    result = cli("status", "--out", str(lake), "-v", env=env)
    assert result.returncode == 1
    assert key not in result.stderr
    for log in tmp_path.glob("harvester-error_*.log"):
        assert key not in log.read_text()


def test_a_failed_start_leaves_no_directory_and_no_probe(tmp_path: Path, sim: SimHandle) -> None:
    # A new lake three directories deep: the write probe makes them, then removes them.
    out = tmp_path / "a" / "b" / "lake"
    plan = cli("plan", "--api-url", sim.url, "--rate", "0", "--out", str(out), *_dates())
    assert plan.returncode == 0, plan.stderr
    assert not (tmp_path / "a").exists()
    # The API cannot be reached: the lake was proven writable, then nothing was written.
    harvest = cli("harvest", "--api-url", "http://127.0.0.1:9", "--out", str(out), *_dates())
    assert harvest.returncode == 3, harvest.stderr
    assert not (tmp_path / "a").exists()
    # An existing empty directory stays empty (no probe left in it).
    empty = tmp_path / "empty"
    empty.mkdir()
    again = cli("harvest", "--api-url", "http://127.0.0.1:9", "--out", str(empty), *_dates())
    assert again.returncode == 3, again.stderr
    assert list(empty.iterdir()) == []


def test_an_s3_preflight_leaves_no_probe(moto_s3: MotoS3, s3_lake_uri: str) -> None:
    import boto3

    env = harvest_env(HARVESTER_S3_ENDPOINT_URL=moto_s3.endpoint_url)
    result = cli("harvest", "--api-url", "http://127.0.0.1:9", "--out", s3_lake_uri, env=env)
    assert result.returncode == 3, result.stderr
    prefix = s3_lake_uri.split("/", 3)[3]
    client = boto3.client("s3", endpoint_url=moto_s3.endpoint_url, region_name=REGION)
    listed: dict[str, Any] = client.list_objects_v2(Bucket=moto_s3.bucket, Prefix=prefix)
    assert listed.get("KeyCount") == 0, listed.get("Contents")


def _dates() -> tuple[str, ...]:
    return ("--from", "2019-01-01", "--to", "2019-02-28")
