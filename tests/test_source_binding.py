"""A lake is bound to its source (issue 21, item 1): the service and dataset it was
harvested from, recorded in ``_harvest/lake.json`` when the lake is first written.

``harvest``, ``refresh``, ``verify`` and ``plan`` against another source stop with one line
and exit 10 before any request: the other simulator's own request counter proves it, and
the lake is byte for byte what it was. ``--rebind-source`` binds the lake to the new source
on purpose; a lake written before sources were recorded adopts one (its ``service.json``'s
URL, else the run's) and says so. A loopback URL matches any loopback URL of the same path
(the simulator's port changes every run), so the demo lake and a real-service lake never
mix by accident (docs/decisions.md, "A lake is bound to its source").

Every run is the real command in a subprocess against real simulators over loopback.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harvester.errors import EXIT_SOURCE
from harvester.sim.testing import SimHandle, run_simulator_process
from harvester.storage.source import DATASET, Source
from harvester.storage.state import HarvestState, SourceRecord
from harvester.storage.store import Lake
from tests.support.cli import cli, ok, snapshot
from tests.support.harvest import DATES, run_harvest
from tests.support.sharedsim import SHARED_SIM_ARGS, ReadOnlySim

REAL = "https://api.uspto.gov"


# Both simulators serve the same corpus: a lake rebound from one to the other is equal to it.
@pytest.fixture(scope="module")
def first(shared_sim: ReadOnlySim) -> SimHandle:
    """The lakes' first source: only read from (``second`` serves the same corpus)."""
    return shared_sim


@pytest.fixture(scope="module")
def second() -> Iterator[SimHandle]:
    # Another process on another port; with --gateway-errors it answers (and counts) any
    # /api/... route, so a request to another path under it would show in its stats too.
    with run_simulator_process(*SHARED_SIM_ARGS, "--gateway-errors") as handle:
        yield handle


@pytest.fixture(scope="module")
def harvested(first: SimHandle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed lake harvested from ``first``; each test works on a copy."""
    out = tmp_path_factory.mktemp("bound") / "lake"
    ok(run_harvest(first.url, str(out), *DATES))
    return out


@pytest.fixture
def lake(harvested: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "lake"
    shutil.copytree(harvested, copy)
    return copy


def meta(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "_harvest" / "lake.json").read_text())
    return data


def bind(out: Path, url: str) -> None:
    """Make ``out`` a lake of ``url``'s source, as its first harvest would have recorded it."""
    HarvestState(Lake.open(str(out))).save_source(SourceRecord(Source.of(url).url, DATASET))


def forget_source(out: Path) -> None:
    """``out`` as an older harvester left it: lake.json without a source."""
    path = out / "_harvest" / "lake.json"
    data = json.loads(path.read_text())
    del data["source"]
    path.write_text(json.dumps(data))


def run(command: str, url: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    dated = DATES if command in ("harvest", "plan", "verify") else ()
    return cli(command, "--api-url", url, "--out", str(out), "--rate", "0", *dated, *extra)


def refused_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line of a run refused for its source (exit 10, nothing on stdout)."""
    assert result.returncode == EXIT_SOURCE, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harvester: error: "), result.stderr
    assert result.stdout == ""
    assert "--rebind-source" in lines[0] and "a new --out" in lines[0], lines[0]
    return lines[0]


# -- what is recorded ----------------------------------------------------------------------


def test_a_new_lake_records_its_source_and_never_a_secret(
    first: SimHandle, harvested: Path
) -> None:
    source = meta(harvested)["source"]
    assert source["url"] == first.url and source["dataset"] == DATASET == "oa_rejections/v2"
    assert source["how"] == "harvest" and source["previous"] is None


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("https://api.uspto.gov", "https://api.uspto.gov"),
        ("HTTPS://API.USPTO.GOV:443/", "https://api.uspto.gov"),
        ("https://user:s3cret@api.uspto.gov./odp//?api_key=s3cret#x", "https://api.uspto.gov/odp"),
        ("http://127.0.0.1:8765/", "http://127.0.0.1:8765"),
        ("http://[::1]:80", "http://[::1]"),
        ("https://proxy.example:8443/uspto", "https://proxy.example:8443/uspto"),
    ],
)
def test_a_source_is_the_url_normalised_without_anything_secret(url: str, normalised: str) -> None:
    assert Source.of(url).url == normalised
    assert "s3cret" not in repr(Source.of(url))


@pytest.mark.parametrize(
    ("one", "other", "same"),
    [
        ("http://127.0.0.1:8765", "http://localhost:40111/", True),  # the simulator, any port
        ("http://127.0.0.1:8765", "https://[::1]:9", True),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765/mirror", False),  # another path
        ("http://127.0.0.1:8765", REAL, False),  # the demo lake and the real service
        (REAL, "https://api.uspto.gov:443/", True),
        (REAL, "http://api.uspto.gov", False),
        (REAL, "https://api.uspto.gov:8443", False),
        (REAL, "https://developer.uspto.gov", False),
    ],
)
def test_which_sources_are_the_same(one: str, other: str, same: bool) -> None:
    assert Source.of(one).same_as(Source.of(other)) is same
    assert Source.of(other).same_as(Source.of(one)) is same
    assert not Source.of(one).same_as(Source(Source.of(one).url, "oa_rejections/v3"))


# -- another source: one line, exit 10, no request, the lake untouched --------------------


@pytest.mark.parametrize("other", ["real-service lake", "other path"])
def test_another_source_is_refused_before_any_request(
    second: SimHandle, lake: Path, other: str
) -> None:
    if other == "real-service lake":
        bind(lake, REAL)  # harvested from the real service; the run points at a simulator
        url, bound = second.url, REAL
    else:
        url, bound = f"{second.url}/api/mirror", meta(lake)["source"]["url"]
    before = snapshot(lake)
    requests = second.stats()["requests"]
    for command in ("harvest", "refresh", "verify", "plan"):
        line = refused_line(run(command, url, lake))
        assert f"was harvested from {bound} " in line and Source.of(url).url in line, line
        assert second.stats()["requests"] == requests, f"{command} sent a request"
        assert snapshot(lake) == before, f"{command} changed the lake"
    # The counter counts what reaches this URL: plan with the flag asks (and is refused 403).
    result = run("plan", url, lake, "--rebind-source")
    assert result.returncode != EXIT_SOURCE and "Traceback" not in result.stderr
    assert second.stats()["requests"] > requests
    assert snapshot(lake) == before  # plan writes nothing, even when told to rebind


def test_the_demo_lake_and_the_real_service_do_not_mix(lake: Path) -> None:
    """A simulator's lake (loopback) against the real URL: exit 10, not the 3 that trying
    to reach a service from this offline machine would give."""
    before = snapshot(lake)
    for command in ("harvest", "refresh", "verify", "plan"):
        line = refused_line(run(command, REAL, lake))
        assert "on loopback" in line and f"this run's {REAL} ({DATASET})" in line, line
    assert snapshot(lake) == before


def test_a_loopback_source_matches_any_port(second: SimHandle, lake: Path) -> None:
    """The demo lake keeps working with the next simulator, which listens on a new port."""
    port = second.url.rsplit(":", 1)[1]
    result = run("verify", f"http://localhost:{port}", lake)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    ok(run("harvest", second.url, lake))  # already complete: nothing to do, no refusal


# -- on purpose: --rebind-source ------------------------------------------------------------


def test_rebind_source_binds_the_lake_to_the_new_source(second: SimHandle, lake: Path) -> None:
    bind(lake, REAL)
    service = json.loads((lake / "_harvest" / "service.json").read_text())
    before = snapshot(lake)
    planned = ok(run("plan", second.url, lake, "--rebind-source"))
    assert f"--rebind-source: the lake, harvested from {REAL} ({DATASET})" in planned
    assert snapshot(lake) == before

    result = run("verify", second.url, lake, "--rebind-source")
    assert result.returncode == 0, result.stdout + result.stderr
    (warning,) = result.stderr.strip().splitlines()
    assert "WARNING" in warning and f"--rebind-source: the lake, harvested from {REAL}" in warning
    source = meta(lake)["source"]
    assert (source["url"], source["dataset"]) == (second.url, DATASET)
    assert (source["how"], source["previous"]) == ("rebound", REAL)
    # What the old source was found to do says nothing of the new one: probed again.
    probed = json.loads((lake / "_harvest" / "service.json").read_text())
    assert service["api_url"] != second.url and probed["api_url"] == second.url

    # Bound now: the new source needs no flag, the old one is refused.
    again = run("verify", second.url, lake)
    assert again.returncode == 0 and again.stderr == "", again.stdout + again.stderr
    refused_line(run("refresh", REAL, lake))


# -- older lakes: adopted ------------------------------------------------------------------


def test_an_older_lake_adopts_the_url_its_service_json_kept(
    first: SimHandle, second: SimHandle, lake: Path
) -> None:
    forget_source(lake)
    result = run("verify", second.url, lake)  # another port: the same loopback source
    assert result.returncode == 0, result.stdout + result.stderr
    (warning,) = result.stderr.strip().splitlines()
    assert "the lake recorded no source (written by an older harvester)" in warning
    assert f"bound to {first.url} ({DATASET}; on loopback, any port)" in warning
    assert "taken from its service.json" in warning
    source = meta(lake)["source"]
    assert (source["url"], source["how"]) == (first.url, "adopted")
    again = run("verify", second.url, lake)
    assert again.returncode == 0 and again.stderr == "", again.stderr  # said once


def test_an_older_lake_without_a_service_json_adopts_the_runs_source(
    second: SimHandle, lake: Path
) -> None:
    forget_source(lake)
    (lake / "_harvest" / "service.json").unlink()
    result = run("verify", second.url, lake)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "taken from this run" in result.stderr
    assert meta(lake)["source"]["url"] == second.url


def test_an_older_lake_of_another_source_is_refused(second: SimHandle, lake: Path) -> None:
    forget_source(lake)
    path = lake / "_harvest" / "service.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "api_url": f"{REAL}/"}))
    before = snapshot(lake)
    requests = second.stats()["requests"]
    for command in ("harvest", "refresh", "verify"):
        line = refused_line(run(command, second.url, lake))
        assert f"was harvested from {REAL} ({DATASET}), as its service.json says" in line
    assert second.stats()["requests"] == requests
    assert snapshot(lake) == before
