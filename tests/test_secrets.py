"""Security and hygiene: the API key appears nowhere it could leak, and values from the data
never become paths except through the validated partitioning."""

from __future__ import annotations

import datetime as dt
import io
import re
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harvester.decode import decode_docs
from harvester.lake import Lake
from harvester.partition import Partition
from harvester.schema import ARROW_SCHEMA
from harvester.shard import Shard
from harvester.sim.testing import run_simulator_process
from harvester.writer import write_shard
from tests.support.cli import cli
from tests.support.harvest import RANGE, WINDOW, harvest_env

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
    name = Shard.parse_key("2019-07-02").file_name
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
        r"|_harvest/(lake|plan|complete|watermark|service|coverage|pending-drops)\.json"
        r"|_harvest/(shards|runs)/[A-Za-z0-9][A-Za-z0-9._-]*\.json"
        r"|_harvest/quarantine/[A-Za-z0-9][A-Za-z0-9._-]*\.jsonl"
    )
    paths = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()]
    assert [p for p in paths if not allowed.fullmatch(p)] == []
    assert any(p.startswith("_harvest/quarantine/") for p in paths)
