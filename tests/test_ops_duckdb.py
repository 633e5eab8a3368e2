"""DuckDB reads the lake as docs/querying.md says: its local examples run as written, months
are integers with exact counts, filters on year/month prune files, and an S3 lake reads
through s3fs (moto's server)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import s3fs

from harvester.sim.testing import run_simulator_process
from tests.support.cli import cli, ok
from tests.support.harvest import RANGE, WINDOW, harvest_env, run_harvest
from tests.support.lakecheck import is_decodable

QUERYING = Path(__file__).resolve().parent.parent / "docs" / "querying.md"


def month_counts(truth: list[dict[str, Any]]) -> Counter[tuple[int, int]]:
    return Counter(
        (int(d["submissionDate"][:4]), int(d["submissionDate"][5:7]))
        for d in truth
        if is_decodable(d)
    )


@pytest.fixture(scope="module")
def local_lake(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    out = tmp_path_factory.mktemp("duckdb") / "lake"
    with run_simulator_process(
        "--records", "3000", *RANGE, "--max-window", WINDOW, "--seed", "101", "--admin"
    ) as sim:
        ok(run_harvest(sim.url, str(out), "--from", "2019-01-01", "--to", "2019-03-31"))
        # A refresh of some changes: the change feed the docs also query has rows.
        sim.mutate(add=30, modify=20, delete=10, seed=3)
        ok(cli("refresh", "--api-url", sim.url, "--out", str(out), "--rate", "0"))
        yield out, sim.truth()


def test_the_documented_local_queries_run_as_written(
    local_lake: tuple[Path, list[dict[str, Any]]],
) -> None:
    out, truth = local_lake
    blocks = re.findall(r"```sql\n(.*?)```", QUERYING.read_text(), re.S)
    # Every block but the S3 ones (httpfs is downloaded by INSTALL: no network here).
    local = [b for b in blocks if not any(w in b for w in ("s3://", "SECRET", "httpfs"))]
    assert len(local) >= 5 and "'lake/" in local[0], "docs/querying.md lost its DuckDB examples"
    con = duckdb.connect()
    results = [con.execute(b.replace("'lake/", f"'{out.as_posix()}/")).fetchall() for b in local]
    per_month = {(y, m): n for y, m, n in results[0]}
    assert per_month == dict(month_counts(truth))
    assert con.execute("SELECT typeof(year), typeof(month) FROM rejections LIMIT 1").fetchone() == (
        "INTEGER",
        "INTEGER",
    )
    assert con.execute("SELECT count(*) FROM rejections").fetchone() == (sum(per_month.values()),)
    # The change feed's queries (the last two blocks): every change of the refresh, and the
    # rows to read again (added or updated, so still in the lake).
    feed, again = results[-2], results[-1]
    assert {row[1] for row in feed} == {"added", "updated", "deleted"}
    assert len(again) == sum(1 for row in feed if row[1] != "deleted") > 0


def test_a_filter_on_year_and_month_reads_only_that_partition(
    local_lake: tuple[Path, list[dict[str, Any]]],
) -> None:
    out, truth = local_lake
    con = duckdb.connect()
    glob = f"{out.as_posix()}/**/*.parquet"
    query = "SELECT count(*) FROM read_parquet(?, hive_partitioning = true) WHERE year = 2019 AND month = 2"
    assert con.execute(query, [glob]).fetchone() == (month_counts(truth)[(2019, 2)],)
    plan = "\n".join(row[1] for row in con.execute("EXPLAIN ANALYZE " + query, [glob]).fetchall())
    february = len(list((out / "year=2019" / "month=2").glob("*.parquet")))
    everything = len(list(out.glob("year=*/month=*/*.parquet")))
    assert february < everything
    assert f"Total Files Read: {february}" in plan, plan


def test_duckdb_reads_a_lake_on_s3_through_s3fs(moto_s3: Any, s3_lake_uri: str) -> None:
    env = harvest_env(HARVESTER_S3_ENDPOINT_URL=moto_s3.endpoint_url)
    with run_simulator_process(
        "--records", "1500", *RANGE, "--max-window", WINDOW, "--seed", "102", "--admin"
    ) as sim:
        ok(run_harvest(sim.url, s3_lake_uri, "--from", "2019-01-01", "--to", "2019-02-28", env=env))
        truth = sim.truth()
    con = duckdb.connect()
    con.register_filesystem(s3fs.S3FileSystem(**moto_s3.storage_options()))
    rows = con.sql(
        f"SELECT year, month, count(*) FROM read_parquet('{s3_lake_uri}/**/*.parquet',"
        " hive_partitioning = true) GROUP BY ALL"
    ).fetchall()
    assert {(y, m): n for y, m, n in rows} == dict(month_counts(truth))
