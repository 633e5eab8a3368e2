"""``harvester show`` on a harvested lake, local and on S3 (moto's server): its rows per
month are the simulator's truth, its sizes are the bytes on disk, its newest row is the
truth's; it spends no request; `make demo` prints the same lines."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harvester.ops.show import summarise
from harvester.sim.testing import run_simulator_process
from harvester.storage.store import Lake
from tests.support.cli import cli, ok
from tests.support.harvest import RANGE, WINDOW, harvest_env, run_harvest
from tests.support.lakecheck import is_decodable
from tests.support.s3server import MotoS3
from tests.support.sharedsim import ReadOnlySim

DATES = ("--from", "2019-01-01", "--to", "2019-02-28")


def truth_summary(truth: list[dict[str, Any]]) -> dict[str, Any]:
    """What show must print, from the simulator's truth: the rows the lake keeps (the
    undecodable are quarantined), per month, and the newest of them."""
    kept = [d for d in truth if is_decodable(d)]
    months = Counter((int(d["submissionDate"][:4]), int(d["submissionDate"][5:7])) for d in kept)
    stamps = []
    for d in kept:
        try:
            stamps.append(dt.datetime.fromisoformat(str(d.get("createDateTime"))))
        except ValueError:
            continue  # stored as null: never the newest
    return {
        "months": {f"{y}-{m}": n for (y, m), n in sorted(months.items())},
        "newest_mail_date": max(d["submissionDate"][:10] for d in kept),
        "newest_created": max(stamps).isoformat(),
    }


def shown(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "months": {f"{m['year']}-{m['month']}": m["rows"] for m in data["months"]},
        "newest_mail_date": data["newest_mail_date"],
        "newest_created": data["newest_created"],
    }


def test_show_a_local_lake(shared_sim: ReadOnlySim, tmp_path: Path) -> None:
    out, sim = tmp_path / "lake", shared_sim
    ok(run_harvest(sim.url, str(out), *DATES))
    truth = sim.truth()
    # A stray visible file outside the partitions: on disk, never a month's rows.
    (out / "notes.txt").write_text("someone's notes\n")
    before = sim.stats()["requests"]
    data = json.loads(ok(cli("show", "--out", str(out), "--json")))
    text = ok(cli("show", "--out", str(out)))
    assert sim.stats()["requests"] == before
    assert shown(data) == truth_summary(truth)
    assert data["rows"] == sum(truth_summary(truth)["months"].values())
    # Sizes are the bytes on disk: each partition's Parquet files, _harvest/, the rest.
    files = [p for p in out.rglob("*") if p.is_file()]
    parquet = [p for p in files if p.suffix == ".parquet" and "_harvest" not in p.parts]
    assert data["partitions"] == len({p.parent for p in parquet}) == 2
    assert data["data_files"] == len(parquet)
    assert data["data_bytes"] == sum(p.stat().st_size for p in parquet)
    assert data["size_on_disk"] == sum(p.stat().st_size for p in files)
    assert data["other_files"] == 1 and data["other_bytes"] == len("someone's notes\n")
    for month in data["months"]:
        part = out / f"year={month['year']}" / f"month={month['month']}"
        assert month["bytes"] == sum(p.stat().st_size for p in part.glob("*.parquet"))
    lines = text.splitlines()
    assert lines[0] == f"lake: {out} (read by DuckDB {data['duckdb_version']})"
    assert lines[-1] == (
        f"newest row: mail date {data['newest_mail_date']}, createDateTime {data['newest_created']}"
    )
    assert f"total: {data['rows']:,} rows in 2 partitions" in text
    # `make demo` prints show's lines (one implementation).
    assert summarise(Lake.open(str(out))).lines() == lines


def test_show_a_lake_on_s3(moto_s3: MotoS3, s3_lake_uri: str) -> None:
    import boto3

    env = harvest_env(HARVESTER_S3_ENDPOINT_URL=moto_s3.endpoint_url)
    with run_simulator_process(
        "--records", "1200", *RANGE, "--max-window", WINDOW, "--seed", "29", "--admin"
    ) as sim:
        ok(run_harvest(sim.url, s3_lake_uri, *DATES, env=env))
        truth = sim.truth()
    # The credentials and endpoint come from where the harvester takes them: the AWS
    # variables and HARVESTER_S3_ENDPOINT_URL.
    data = json.loads(ok(cli("show", "--out", s3_lake_uri, "--json", env=env)))
    assert shown(data) == truth_summary(truth)
    assert data["uri"] == s3_lake_uri and data["duckdb_version"]
    prefix = s3_lake_uri.split("/", 3)[3]
    client = boto3.client("s3", endpoint_url=moto_s3.endpoint_url)
    objects = client.list_objects_v2(Bucket=moto_s3.bucket, Prefix=f"{prefix}/")["Contents"]
    data_objects = [
        o for o in objects if o["Key"].endswith(".parquet") and "/_harvest/" not in o["Key"]
    ]
    assert data["data_files"] == len(data_objects)
    assert data["data_bytes"] == sum(o["Size"] for o in data_objects)
    assert data["size_on_disk"] == sum(o["Size"] for o in objects)


def test_show_refuses_what_is_not_a_lake(tmp_path: Path) -> None:
    result = cli("show", "--out", str(tmp_path))
    assert result.returncode == 4
    assert result.stderr.strip() == (
        f"harvester: error: {tmp_path} is not a harvester lake (no _harvest/lake.json)"
    )


def test_show_on_a_lake_without_data_yet(tmp_path: Path) -> None:
    lake = Lake.open(str(tmp_path / "lake"))
    lake.write_bytes(
        "_harvest/lake.json", json.dumps({"format": "harvester-lake", "schema_version": 0}).encode()
    )
    summary = summarise(lake)
    assert summary.months == [] and summary.rows == 0 and summary.newest_mail_date is None
    assert summary.lines()[1] == "no data files yet (no Parquet file in a year=/month= partition)"


@pytest.mark.parametrize("size,text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                       (5 * 1024**3, "5.0 GiB")])  # fmt: skip
def test_size_text(size: int, text: str) -> None:
    from harvester.humanize import size_text

    assert size_text(size) == text


def test_show_without_duckdb_says_how_to_install_it(tmp_path: Path) -> None:
    # An environment without DuckDB (the harvester's jobs never need it): `import duckdb`
    # fails there as here once the module is blocked.
    code = (
        "import sys; sys.modules['duckdb'] = None; from harvester.cli import main; sys.exit(main())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "show", "--out", str(tmp_path)],
        env=harvest_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 11  # EXIT_MISSING_EXTRA: expected, not "unexpected" (1)
    assert result.stderr.strip() == (
        "harvester: error: harvester show reads the lake through DuckDB, which is not"
        " installed: pipx inject uspto-oa-harvester duckdb (a pipx install), or pip install"
        " 'uspto-oa-harvester[show]'"
    )
