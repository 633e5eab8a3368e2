"""plan, status, verify and compact against a lake on S3: moto's real server over HTTP, s3fs unpatched."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq
import pytest

from harvester.sim.testing import SimHandle, run_simulator_process
from harvester.storage.store import Lake
from tests.support.cli import cli, ok
from tests.support.harvest import RANGE, WINDOW, harvest_env, run_harvest
from tests.support.lakecheck import assert_lake_equals_truth


@pytest.fixture(scope="module")
def s3_harvest(moto_s3: Any) -> Iterator[tuple[SimHandle, str, dict[str, str], Lake]]:
    uri = f"s3://{moto_s3.bucket}/ops-lake"
    env = harvest_env(HARVESTER_S3_ENDPOINT_URL=moto_s3.endpoint_url, HARVESTER_SHARD_SIZE="100")
    with run_simulator_process(
        "--records", "2000", *RANGE, "--max-window", WINDOW, "--seed", "71", "--admin"
    ) as sim:
        ok(run_harvest(sim.url, uri, "--from", "2019-01-01", "--to", "2019-02-28", env=env))
        yield sim, uri, env, Lake.open(uri, moto_s3.storage_options())


def _files(lake: Lake) -> Counter[str]:
    return Counter(
        p.rsplit("/", 1)[0] for p in lake.list_files("", suffix=".parquet") if not p.startswith("_")
    )


def test_status_on_s3(s3_harvest: tuple[SimHandle, str, dict[str, str], Lake]) -> None:
    sim, uri, env, _ = s3_harvest
    before = sim.stats()["requests"]
    data = json.loads(
        ok(cli("status", "--out", uri, "--json", env={**env, "HARVESTER_API_URL": sim.url}))
    )
    assert sim.stats()["requests"] == before
    assert data["uri"] == uri and data["harvest"] == "complete"
    assert data["rows"] == len(sim.truth()) and data["shards_pending"] == 0


def test_plan_on_s3_writes_nothing(
    moto_s3: Any, s3_harvest: tuple[SimHandle, str, dict[str, str], Lake]
) -> None:
    sim, uri, env, lake = s3_harvest
    before = {p: lake.read_bytes(p) for p in lake.list_files("")}
    plan = json.loads(
        ok(cli("plan", "--api-url", sim.url, "--out", uri, "--rate", "0", "--json", env=env))
    )
    assert plan["job"] == "refresh" and plan["requests"] > 0
    fresh = f"{uri}-never-written"
    new = json.loads(
        ok(cli("plan", "--api-url", sim.url, "--out", fresh, "--rate", "0", "--json", env=env))
    )
    assert new["job"] == "harvest" and new["rows"] == len(sim.truth())
    assert {p: lake.read_bytes(p) for p in lake.list_files("")} == before
    assert not Lake.open(fresh, moto_s3.storage_options()).list_files("")


def test_verify_on_s3_names_a_stray_object_and_repairs(
    s3_harvest: tuple[SimHandle, str, dict[str, str], Lake],
) -> None:
    sim, uri, env, lake = s3_harvest
    args = ("verify", "--api-url", sim.url, "--out", uri, "--rate", "0")
    assert "verify: ok" in ok(cli(*args, env=env))
    first = next(p for p in lake.list_files("year=2019/month=1", suffix=".parquet"))
    lake.write_bytes(
        "year=2019/month=1/part-20260101T000000Z-compact-abcdef-compact-00000.parquet",
        lake.read_bytes(first),
    )
    result = cli(*args, env=env)
    assert result.returncode == 6
    assert (
        "file not part of the committed lake (readers see it): year=2019/month=1/part-20260101T000000Z-compact-abcdef-compact-00000.parquet"
        in result.stdout
    )
    rows = pq.read_metadata(lake.fs.open(lake.full_path(first))).num_rows
    assert f"{rows} ids appear more than once" in result.stdout
    assert "after repair: ok" in ok(cli(*args, "--repair", env=env))
    assert not lake.exists(
        "year=2019/month=1/part-20260101T000000Z-compact-abcdef-compact-00000.parquet"
    )
    assert_lake_equals_truth(lake, sim.truth())


def test_compact_on_s3(s3_harvest: tuple[SimHandle, str, dict[str, str], Lake]) -> None:
    sim, uri, env, lake = s3_harvest
    before = _files(lake)
    assert max(before.values()) > 5, before
    ok(cli("compact", "--out", uri, env=env))
    after = _files(lake)
    assert set(after) == set(before) and max(after.values()) == 1, after
    assert_lake_equals_truth(lake, sim.truth())
    assert "verify: ok" in ok(
        cli("verify", "--api-url", sim.url, "--out", uri, "--rate", "0", env=env)
    )
