"""A real PySpark read of a harvested (and refreshed) lake: the types of docs/schema.md,
``year``/``month`` discovered as int partition columns, exact counts per month, pruning,
and values equal to the source's. One local SparkSession for the module."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from harvester.sim.testing import run_simulator_process
from tests.support.cli import ok, refresh_all_days
from tests.support.harvest import RANGE, WINDOW, run_harvest
from tests.support.lakecheck import expected_row, is_decodable

pytestmark = [
    pytest.mark.spark,
    # CI sets CI_REQUIRE_SPARK: there a missing Java fails these tests instead of skipping.
    pytest.mark.skipif(
        shutil.which("java") is None and not os.environ.get("CI_REQUIRE_SPARK"),
        reason="PySpark needs a Java runtime and `java` is not on PATH (CI installs one)",
    ),
]

SCHEMA_DOC = Path(__file__).resolve().parent.parent / "docs" / "schema.md"


def documented_spark_types() -> dict[str, str]:
    """Column -> Spark type from the column table of docs/schema.md (its 3rd column)."""
    types: dict[str, str] = {}
    for line in SCHEMA_DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        for name in re.findall(r"`([A-Za-z0-9]+)`", cells[0]):
            types[name] = cells[2].replace("\\", "")  # markdown escapes: array\\<string\\>
    return types


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    out = tmp_path_factory.mktemp("spark") / "lake"
    with run_simulator_process(
        "--records", "3000", *RANGE, "--max-window", WINDOW, "--seed", "111", "--admin"
    ) as sim:
        ok(run_harvest(sim.url, str(out)))
        # Some partitions rewritten by refresh, some as harvested: Spark must read both.
        sim.mutate(add=60, late=40, modify=40, delete=20, seed=1)
        refresh_all_days(sim.url, str(out))
        yield out, sim.truth()


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from pyspark.sql import SparkSession

    previous = os.environ.get("SPARK_LOCAL_IP")
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # loopback only: no network but 127.0.0.1
    session = (
        SparkSession.builder.master("local[1]")
        .appName("harvester-test")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.memory", "512m")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
        if previous is None:
            os.environ.pop("SPARK_LOCAL_IP", None)
        else:
            os.environ["SPARK_LOCAL_IP"] = previous


def test_spark_reads_the_documented_types_and_discovers_integer_partitions(
    spark: Any, lake: tuple[Path, list[dict[str, Any]]]
) -> None:
    from pyspark.sql.types import IntegerType

    out, _ = lake
    assert len({p.parent for p in out.glob("year=*/month=*/*.parquet")}) >= 2
    df = spark.read.parquet(str(out))
    got = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    documented = documented_spark_types()
    assert got == documented, {
        k: (got.get(k), documented.get(k))
        for k in got.keys() | documented.keys()
        if got.get(k) != documented.get(k)
    }
    assert (
        df.schema["year"].dataType == IntegerType() and df.schema["month"].dataType == IntegerType()
    )
    # Discovered from the paths: no file holds them.
    any_file = next(out.glob("year=*/month=*/*.parquet"))
    assert not {"year", "month"} & set(pq.read_schema(any_file).names)


def test_spark_counts_per_month_are_exact_and_filters_prune_partitions(
    spark: Any, lake: tuple[Path, list[dict[str, Any]]]
) -> None:
    out, truth = lake
    want = Counter(
        (int(d["submissionDate"][:4]), int(d["submissionDate"][5:7]))
        for d in truth
        if is_decodable(d)
    )
    df = spark.read.parquet(str(out))
    got = {
        (r["year"], r["month"]): r["count"] for r in df.groupBy("year", "month").count().collect()
    }
    assert got == dict(want)
    february = df.where("year = 2019 AND month = 2")
    assert february.count() == want[(2019, 2)]
    plan = february._jdf.queryExecution().executedPlan().toString()
    assert re.search(r"PartitionFilters: \[[^\]]*\(year#\d+ = 2019\)", plan), plan


def test_spark_values_equal_the_source(spark: Any, lake: tuple[Path, list[dict[str, Any]]]) -> None:
    out, truth = lake
    docs = {d["id"]: d for d in truth if is_decodable(d)}
    rows = spark.read.parquet(str(out)).drop("year", "month").collect()
    assert len(rows) == len(docs)
    for row in rows:
        got = row.asDict()
        if got["unknownFields"] is not None:
            got["unknownFields"] = json.loads(got["unknownFields"])
        assert got == expected_row(docs[got["id"]]), got["id"]
