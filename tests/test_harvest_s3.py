"""The same harvest into a lake on S3: moto's real server over HTTP, s3fs unpatched."""

from __future__ import annotations

from typing import Any

from harvester.sim.testing import run_simulator_process
from harvester.storage.store import Lake
from tests.support.harvest import RANGE, WINDOW, harvest_env, run_harvest
from tests.support.lakecheck import assert_lake_equals_truth


def test_hostile_harvest_into_s3_equals_truth(moto_s3: Any, s3_lake_uri: str) -> None:
    env = harvest_env(HARVESTER_S3_ENDPOINT_URL=moto_s3.endpoint_url)
    with run_simulator_process(
        "--records",
        "8000",
        *RANGE,
        "--max-window",
        WINDOW,
        "--seed",
        "5",
        "--faults",
        "hostile",
        "--hang-seconds",
        "3",
        "--admin",
    ) as sim:
        result = run_harvest(
            sim.url, s3_lake_uri, "--from", "2019-01-01", "--to", "2019-02-28", env=env
        )
        assert result.returncode == 0, result.stdout + result.stderr
        truth = sim.truth()
    lake = Lake.open(s3_lake_uri, moto_s3.storage_options())
    assert_lake_equals_truth(lake, truth)
    # State lives with the lake, so any machine can resume: the plan and markers are in S3.
    assert lake.exists("_harvest/plan.json")
    assert lake.exists("_harvest/complete.json")
    assert lake.list_files("_harvest/shards", suffix=".json")
