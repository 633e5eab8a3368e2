"""Security and hygiene: the API key appears nowhere it could leak, and values from the data
never become paths except through the validated partitioning."""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import re
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harvester.cli import setup_logging
from harvester.config import Secret, read_api_key, resolve
from harvester.errors import ConfigError
from harvester.service.decode import decode_docs
from harvester.sim.testing import run_simulator_process
from harvester.storage.datafile import DataFileName
from harvester.storage.partition import Partition
from harvester.storage.schema import ARROW_SCHEMA
from harvester.storage.shard import Shard
from harvester.storage.store import Lake
from harvester.storage.writer import write_shard
from tests.support.cli import cli
from tests.support.harvest import RANGE, WINDOW, harvest_env
from tests.support.lakecheck import assert_lake_equals_truth

KEY = "KEY-canary-7f3e9d"


def parquet_text(data: bytes) -> str:
    """A Parquet file's values and metadata as text: its bytes are zstd-compressed, so a
    plain byte search would miss a key stored in a column."""
    table = pq.read_table(io.BytesIO(data))
    metadata = pq.read_metadata(io.BytesIO(data)).metadata or {}
    return repr(table.to_pylist()) + repr(metadata)


def leaks(root: Path, key: str) -> list[str]:
    """Every file under ``root`` whose bytes, or decoded Parquet values, contain ``key``."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if key.encode() in data or (path.suffix == ".parquet" and key in parquet_text(data)):
            found.append(str(path.relative_to(root)))
    return found


def test_the_leak_scanner_sees_a_key_in_state_files_and_inside_parquet_values(
    tmp_path: Path,
) -> None:
    # Guards the scan below. Compressed pages need not hold the key's bytes as they are, so
    # Parquet files are also scanned by their decoded values.
    row: dict[str, object] = {name: None for name in ARROW_SCHEMA.names}
    row.update(id="a" * 32, submissionDate=dt.date(2019, 1, 2), nationalClass=KEY)
    pq.write_table(pa.Table.from_pylist([row], schema=ARROW_SCHEMA), tmp_path / "x.parquet")
    assert KEY in parquet_text((tmp_path / "x.parquet").read_bytes())
    (tmp_path / "_harvest").mkdir()
    (tmp_path / "_harvest" / "plan.json").write_text(f'{{"k": "{KEY}"}}')
    (tmp_path / "clean.json").write_text("{}")
    assert leaks(tmp_path, KEY) == ["_harvest/plan.json", "x.parquet"]


def test_the_key_is_in_no_log_line_report_state_or_lake_file(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    outputs: list[subprocess.CompletedProcess[str]] = []
    sim_args = (
        "--records",
        "2500",
        *RANGE,
        "--max-window",
        WINDOW,
        "--seed",
        "91",
        "--api-key",
        KEY,
    )
    with run_simulator_process(
        *sim_args, "--bad-rows", "5", "--faults", "flaky", "--fault-rate", "0.08", "--admin"
    ) as sim:
        env = harvest_env(USPTO_API_KEY=KEY, HARVESTER_PROGRESS_INTERVAL="0.1")
        del env["HARVESTER_QUIET"]  # progress lines are output too
        api = ("--api-url", sim.url, "--out", str(out), "--rate", "0", "--concurrency", "2")

        def run(*args: str, expect: int = 0, environ: dict[str, str] = env) -> None:
            result = cli(*args, env=environ)
            outputs.append(result)
            assert result.returncode == expect, result.stdout + result.stderr

        run("plan", *api, "-v")
        run("harvest", *api, "-v")
        sim.mutate(add=50, late=40, modify=30, delete=20, seed=1)
        run("refresh", *api, "--reconcile-days", "120", "-v")
        sim.mutate(late=20, delete=10, seed=2)
        run("refresh", *api, "--reconcile-days", "120", "--log-format", "json", "-v")
        sim.mutate(delete=10, seed=3)
        run("verify", *api, "--repair", "-v", "--log-format", "json", expect=0)
        run("status", "--out", str(out), "-v")
        run("compact", "--out", str(out), "-v")
        # A wrong key (which contains the right one) is refused, and is not echoed either.
        run("verify", *api, "-v", expect=3, environ={**env, "USPTO_API_KEY": KEY + "-wrong"})
        stats = sim.stats()
    # The service demanded the key and got it: the runs above did send it.
    assert stats["statuses"].get("403", 0) >= 1 and stats["statuses"].get("200", 0) > 100
    assert any("progress" in r.stderr for r in outputs), "no progress output was captured"
    assert any("retry in" in r.stderr for r in outputs), "-v logged no retries: faults too rare?"
    for result in outputs:
        assert KEY not in result.stdout and KEY not in result.stderr, result.args
    assert (out / "_harvest" / "quarantine").is_dir() and list(
        (out / "_harvest" / "runs").glob("*.json")
    )
    assert leaks(out, KEY) == []


def key_file(tmp_path: Path, text: str = f"{KEY}\n") -> Path:
    """A key file as an operator makes one: the key and a newline, readable by its owner."""
    path = tmp_path / "uspto_api_key"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_a_run_with_the_key_in_a_file_works_and_writes_the_key_nowhere(tmp_path: Path) -> None:
    """The key from ``USPTO_API_KEY_FILE`` (as a scheduler provides it) reaches the service,
    and appears in no output line, report, state file or lake file."""
    out = tmp_path / "lake"
    secret = key_file(tmp_path)
    outputs: list[subprocess.CompletedProcess[str]] = []
    sim_args = ("--records", "1500", *RANGE, "--max-window", WINDOW, "--seed", "17")
    with run_simulator_process(*sim_args, "--api-key", KEY, "--bad-rows", "3", "--admin") as sim:
        env = harvest_env(USPTO_API_KEY_FILE=str(secret), HARVESTER_PROGRESS_INTERVAL="0.1")
        del env["HARVESTER_QUIET"]  # progress lines are output too
        assert "USPTO_API_KEY" not in env
        api = ("--api-url", sim.url, "--out", str(out), "--rate", "0", "--concurrency", "2")

        def run(*args: str, expect: int = 0, environ: dict[str, str] = env) -> str:
            result = cli(*args, env=environ)
            outputs.append(result)
            assert result.returncode == expect, result.stdout + result.stderr
            return result.stdout + result.stderr

        shown = run("config", *api, "--show-origin")
        assert f"# API key: ***  # from $USPTO_API_KEY_FILE ({secret})" in shown
        run("config", *api, "--json")
        run("plan", *api, "-v")
        run("harvest", *api, "-v", "--log-format", "json")
        truth = sim.truth()
        assert_lake_equals_truth(Lake.open(str(out)), truth)  # the run worked, row by row
        sim.mutate(add=30, late=20, modify=20, delete=10, seed=5)
        run("refresh", *api, "--reconcile-days", "120", "-v")
        run("verify", *api, "-v")  # exit 0: the refresh made the lake equal the service
        assert_lake_equals_truth(Lake.open(str(out)), sim.truth())
        run("status", "--out", str(out), "-v")
        # A file holding a wrong key (the right one inside it) is refused and not echoed.
        wrong = tmp_path / "wrong" / "key"
        wrong.parent.mkdir()
        wrong.write_text(f"{KEY}-wrong\n")
        run("verify", *api, "-v", expect=3, environ={**env, "USPTO_API_KEY_FILE": str(wrong)})
        stats = sim.stats()
    # The service demanded the key and got it from the file.
    assert stats["statuses"].get("403", 0) >= 1 and stats["statuses"].get("200", 0) > 50
    assert any("progress" in r.stderr for r in outputs), "no progress output was captured"
    for result in outputs:
        assert KEY not in result.stdout and KEY not in result.stderr, result.args
    assert list((out / "_harvest" / "runs").glob("*.json"))
    assert leaks(out, KEY) == []


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "is empty"),
        ("  \n\n", "is empty"),
        (f"USPTO_API_KEY={KEY}\nOTHER=1\n", "must hold the key alone, on one line"),
        (f"{KEY} {KEY}\n", "must hold the key alone, on one line"),
        (KEY * 300, "is too large to hold only a key"),
    ],
)
def test_a_bad_key_file_is_named_and_its_content_never_shown(
    content: str, problem: str, tmp_path: Path
) -> None:
    path = key_file(tmp_path, content)
    with pytest.raises(ConfigError) as caught:
        resolve({}, None, environ={"USPTO_API_KEY_FILE": str(path)})
    message = str(caught.value)
    assert message == f"the API key file {path} (from $USPTO_API_KEY_FILE) {problem}"
    assert KEY not in message


def test_a_key_file_that_cannot_be_read_is_one_line_naming_the_path(tmp_path: Path) -> None:
    def problem(path: Path) -> str:
        with pytest.raises(ConfigError) as caught:
            read_api_key({"USPTO_API_KEY_FILE": str(path)})
        return str(caught.value)

    where = f"the API key file {tmp_path / 'missing'} (from $USPTO_API_KEY_FILE)"
    assert problem(tmp_path / "missing") == f"{where} does not exist"
    assert problem(tmp_path).endswith(
        f"{tmp_path} (from $USPTO_API_KEY_FILE) is a directory, not a file"
    )
    (tmp_path / "binary").write_bytes(b"\xff\xfe" + KEY.encode())
    assert problem(tmp_path / "binary").endswith("is not text")
    if os.geteuid() != 0:  # root reads any file: the mode cannot refuse it
        unreadable = key_file(tmp_path)
        unreadable.chmod(0)
        assert problem(unreadable).endswith("cannot be read by this user")
    # Through the CLI: exit 2, one line, before anything else happens.
    result = cli("plan", "--out", str(tmp_path / "lake"),
                 env=harvest_env(USPTO_API_KEY_FILE=str(tmp_path / "missing")))  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"harvester: error: {where} does not exist\n"
    assert not (tmp_path / "lake").exists()


def test_the_key_comes_from_one_variable_and_a_file_gives_the_key_alone(
    tmp_path: Path,
) -> None:
    path = key_file(tmp_path, f"\n  {KEY}\r\n")  # surrounding whitespace is not the key
    key, origin = read_api_key({"USPTO_API_KEY_FILE": str(path)})
    assert isinstance(key, Secret) and key.reveal() == KEY
    assert origin == f"$USPTO_API_KEY_FILE ({path})" and KEY not in repr(key)
    direct, origin = read_api_key({"USPTO_API_KEY": f" {KEY} ", "USPTO_API_KEY_FILE": ""})
    assert direct is not None and direct.reveal() == KEY and origin == "$USPTO_API_KEY"
    assert read_api_key({"USPTO_API_KEY": "", "USPTO_API_KEY_FILE": ""}) == (None, "not set")
    # Both set is refused, even with the same key: the key must come from one place.
    with pytest.raises(ConfigError, match=r"^both USPTO_API_KEY and USPTO_API_KEY_FILE are set"):
        read_api_key({"USPTO_API_KEY": KEY, "USPTO_API_KEY_FILE": str(path)})
    resolved = resolve({}, None, environ={"USPTO_API_KEY_FILE": str(path)}).api_key
    assert resolved is not None and resolved.reveal() == KEY


def test_log_lines_scrub_the_key_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The logging filter scrubs the resolved key, whichever variable gave it: passed in
    (as the commands do) or read as ``resolve`` reads it (a caller that passes none)."""
    monkeypatch.setenv("USPTO_API_KEY_FILE", str(key_file(tmp_path)))
    log = logging.getLogger("harvester.test_secrets")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        for log_format in ("text", "json"):
            for given in (resolve({}, None).api_key, None):
                setup_logging(log_format, verbose=True, api_key=given)
                log.info("header X-API-KEY: %s sent", KEY)
                log.warning(f"url ?key={KEY}&x=1")
                err = capsys.readouterr().err
                assert err.count("***") == 2 and KEY not in err, err
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_values_from_the_data_become_paths_only_through_validated_partitions(
    tmp_path: Path,
) -> None:
    hostile = [
        {"id": "a" * 32, "submissionDate": "../../../etc/passwd"},
        {"id": "b" * 32, "submissionDate": "2019-07-01/../../x"},
        {"id": "c" * 32, "submissionDate": "0999-01-01"},
        {"id": "../" * 11, "submissionDate": "2019-07-02T00:00:00", "nationalClass": "../../x"},
    ]
    result = decode_docs(hostile, source="test")
    assert len(result.quarantined) == 3 and result.table.num_rows == 1
    lake = Lake.open(str(tmp_path / "lake"))
    with pytest.raises(ValueError):
        write_shard(lake, "../../evil/..", result.table)  # names come from Shard, checked
    name = DataFileName.of_shard(Shard.parse_key("2019-07-02")).name
    written = write_shard(lake, name, result.table)
    assert [w.path for w in written] == [f"year=2019/month=7/{name}"]
    assert re.fullmatch(
        r"part-[A-Za-z0-9][A-Za-z0-9._-]*\.parquet", written[0].path.rsplit("/", 1)[1]
    )
    assert ".." not in written[0].path
    with pytest.raises(ValueError):
        Partition.of(dt.date(1, 1, 1))
    # And a real harvest of a source with undecodable rows writes only the expected paths.
    out = tmp_path / "harvested"
    with run_simulator_process(
        "--records", "1500", *RANGE, "--max-window", WINDOW, "--bad-rows", "40"
    ) as sim:
        harvested = cli("harvest", "--api-url", sim.url, "--out", str(out), "--rate", "0")
        assert harvested.returncode == 0, harvested.stderr
    allowed = re.compile(
        r"year=(19|2\d)\d\d/month=([1-9]|1[0-2])/part-[A-Za-z0-9][A-Za-z0-9._-]*\.parquet"
        r"|_harvest/(lake|plan|complete|watermark|service|coverage|pending-drops|quota)\.json"
        r"|_harvest/(shards|runs)/[A-Za-z0-9][A-Za-z0-9._-]*\.json"
        r"|_harvest/quarantine/[A-Za-z0-9][A-Za-z0-9._-]*\.jsonl"
    )
    paths = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()]
    assert [p for p in paths if not allowed.fullmatch(p)] == []
    assert any(p.startswith("_harvest/quarantine/") for p in paths)
