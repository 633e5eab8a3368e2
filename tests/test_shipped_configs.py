"""``--config NAME``: the shipped configs, as the installed package (here the editable install
``make test`` uses) finds them, and how a name and a path are told apart.

The shipped configs must be the repository's ``configs/`` itself, not copies that can drift:
the editable install reads them through the ``harvester/configs`` symlink. The wheel's copies
are checked in tests/test_wheel_install.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from harvester.config import SPECS, find_config, resolve, shipped_configs
from harvester.errors import EXIT_CONFIG, ConfigError
from tests.support.env import scrubbed_environ

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"


def run_config(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m harvester config *args`` run from ``cwd`` (outside the repository), with
    no ``HARVESTER_*`` variable that could hide what the file says."""
    return subprocess.run(
        [sys.executable, "-m", "harvester", "config", *args],
        cwd=cwd, env=scrubbed_environ(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def expected_from_file(path: Path) -> dict[str, Any]:
    """Setting name -> value for every setting the TOML file sets (as SPECS maps them)."""
    data = tomllib.loads(path.read_text())
    return {
        spec.name: data[spec.toml[0]][spec.toml[1]]
        for spec in SPECS
        if spec.toml[1] in data.get(spec.toml[0], {})
    }


def test_the_shipped_configs_are_the_repository_configs() -> None:
    shipped = shipped_configs()
    assert list(shipped) == sorted(p.stem for p in CONFIGS.glob("*.toml"))
    assert {"default", "demo"} <= shipped.keys()
    for name, source in shipped.items():
        assert source.read_bytes() == (CONFIGS / f"{name}.toml").read_bytes(), name


@pytest.mark.parametrize("name", ["default", "demo"])
def test_a_name_resolves_from_outside_the_repository(name: str, tmp_path: Path) -> None:
    result = run_config(tmp_path, "--config", name, "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    expected = expected_from_file(CONFIGS / f"{name}.toml")
    assert expected, f"configs/{name}.toml sets nothing"
    source = shipped_configs()[name]
    for spec in SPECS:
        if spec.name in expected:
            assert shown["settings"][spec.name] == expected[spec.name], spec.name
            section, key = spec.toml
            want = f"[{section}] {key} in {name} (shipped: {source})"
            assert shown["origins"][spec.name] == want


def test_resolve_takes_a_name_in_process() -> None:
    settings = resolve({}, "demo", environ={})
    assert settings.api_url == expected_from_file(CONFIGS / "demo.toml")["api_url"]
    assert settings.api_url.startswith("http://127.0.0.1:")


def test_a_path_wins_over_a_name(tmp_path: Path) -> None:
    (tmp_path / "demo").write_text("[api]\nrate = 7.5\n")
    for value in ("demo", "./demo", str(tmp_path / "demo")):
        result = run_config(tmp_path, "--config", value, "--json")
        assert result.returncode == 0, result.stderr
        shown = json.loads(result.stdout)
        assert shown["settings"]["rate"] == 7.5, value
        assert shown["origins"]["rate"] == f"[api] rate in {value}"
        # nothing else came from the shipped demo.toml
        assert shown["settings"]["api_url"] == "https://api.uspto.gov"


def test_neither_a_path_nor_a_name_is_one_line_listing_the_names(tmp_path: Path) -> None:
    result = run_config(tmp_path, "--config", "default.toml")
    assert result.returncode == EXIT_CONFIG
    names = ", ".join(shipped_configs())
    assert result.stderr == (
        f"harvester: error: config file not found: default.toml (shipped configs: {names})\n"
    )
    assert result.stdout == ""
    with pytest.raises(ConfigError, match=r"^config file not found: nope \(shipped configs: "):
        find_config("nope")


def test_an_existing_path_that_is_no_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "default").mkdir()  # a directory named like a shipped config: still the path
    result = run_config(tmp_path, "--config", "default")
    assert result.returncode == EXIT_CONFIG
    assert result.stderr == "harvester: error: config file default cannot be read: Is a directory\n"
