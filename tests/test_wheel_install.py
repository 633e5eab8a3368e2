"""The wheel as a user gets it: built from the files a clone has, installed into a fresh
virtual environment, and run from outside the repository.

What is real: the wheel is built by setuptools from the tracked (and not ignored) files of
the working tree, copied elsewhere, exactly as ``pipx install .`` or ``uv tool install .``
build it from a clone; it is installed by pip into a new venv (``--no-deps --no-index``);
every command runs the venv's own ``harvester`` entry point with a working directory outside
the repository and no ``PYTHONPATH``, so nothing can come from the source tree.

What is borrowed, because tests have no network: the build runs without build isolation
(with the test venv's setuptools, which the ``test`` extra pins) and the fresh venv sees the
third-party dependencies through one ``.pth`` line naming the test venv's site-packages, the
same locked versions an online install would fetch. A ``.pth`` line only appends a folder
to ``sys.path`` (``.pth`` files inside that folder, such as the editable install's finder,
are not run), and the fresh venv's own site-packages comes first: the test asserts that
``harvester`` is imported from the wheel's copy. An online ``pipx install .`` was checked by
hand (docs/decisions.md, "Install").
"""

from __future__ import annotations

import email.parser
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from harvester import DISTRIBUTION, __version__
from harvester.config import SPECS
from harvester.errors import EXIT_CONFIG
from harvester.sim.testing import SimHandle, run_simulator_process
from harvester.storage.store import Lake
from tests.support.env import scrubbed_environ
from tests.support.lakecheck import assert_lake_equals_truth

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"


@dataclass(frozen=True)
class Install:
    wheel: Path
    venv: Path
    site: Path  # the fresh venv's site-packages, where the wheel's files land
    outside: Path  # a working directory outside the repository

    @property
    def harvester(self) -> str:
        return str(self.venv / "bin" / "harvester")

    def env(self) -> dict[str, str]:
        """The caller's environment less anything that could point back at the repository
        or the test venv, or set a setting behind the test's back."""
        drop = ("PYTHON", "VIRTUAL_ENV", "PIP_")
        env = {k: v for k, v in scrubbed_environ().items() if not k.startswith(drop)}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.harvester, *args], cwd=self.outside, env=self.env(), capture_output=True,
            text=True, timeout=timeout, check=False,
        )  # fmt: skip


def _clone_files(dest: Path) -> None:
    """Copy what a clone of the working tree holds: tracked and untracked-but-not-ignored
    files (so a file the build needs but git would not carry fails here, as in CI)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True, timeout=60,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if not source.is_symlink() and not source.exists():
            continue  # deleted in the working tree, not yet in the index
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():  # harvester/configs -> ../configs stays a link, as git keeps it
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, target)


def _check(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    base = tmp_path_factory.mktemp("wheel-install")
    clone, dist, venv, outside = (base / n for n in ("clone", "dist", "venv", "elsewhere"))
    outside.mkdir()
    _clone_files(clone)
    pip = [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check"]
    _check([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
            "-w", str(dist), str(clone)])  # fmt: skip
    (wheel,) = dist.glob("*.whl")
    _check([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _check([*pip, "--python", str(python), "install", "--no-deps", "--no-index", "-q",
            str(wheel)])  # fmt: skip
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout.strip()
    )  # fmt: skip
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_test_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    return Install(wheel, venv, site, outside)


def test_the_wheel_carries_the_configs_the_licence_and_the_name(install: Install) -> None:
    with zipfile.ZipFile(install.wheel) as wheel:
        names = wheel.namelist()
        for config in CONFIGS.glob("*.toml"):
            assert wheel.read(f"harvester/configs/{config.name}") == config.read_bytes()
        info = f"{DISTRIBUTION.replace('-', '_')}-{__version__}.dist-info"
        assert wheel.read(f"{info}/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()
        meta = email.parser.Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert meta["Name"] == DISTRIBUTION
    assert meta["Version"] == __version__
    assert meta["License-Expression"] == "MIT"
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"] == DISTRIBUTION
    assert "harvester = harvester.cli:run" in entry_points
    # one import package: no tests/, bench/ or a stray top-level configs package
    assert {n.split("/")[0] for n in names} == {"harvester", info}


def test_help_and_version_from_outside_the_repository(install: Install) -> None:
    result = install.run("--help")
    assert result.returncode == 0, result.stderr
    for command in ("harvest", "refresh", "plan", "status", "verify", "config", "simulate"):
        assert f"    {command} " in result.stdout, command
    version = install.run("--version")
    assert version.stdout.strip() == f"harvester {__version__}"
    where = subprocess.run(
        [str(install.venv / "bin" / "python"), "-c", "import harvester; print(harvester.__file__)"],
        cwd=install.outside, env=install.env(), capture_output=True, text=True, timeout=60,
        check=True,
    ).stdout.strip()  # fmt: skip
    assert Path(where) == install.site / "harvester" / "__init__.py"


def test_config_default_reads_the_shipped_file(install: Install) -> None:
    result = install.run("config", "--config", "default", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    data = tomllib.loads((CONFIGS / "default.toml").read_text())
    source = install.site / "harvester" / "configs" / "default.toml"
    compared = 0
    for spec in SPECS:
        section, key = spec.toml
        if key in data.get(section, {}):
            assert shown["settings"][spec.name] == data[section][key], spec.name
            assert (
                shown["origins"][spec.name] == f"[{section}] {key} in default (shipped: {source})"
            )
            compared += 1
    assert compared >= 10
    text = install.run("config", "--config", "default")
    assert text.returncode == 0, text.stderr
    assert 'url = "https://api.uspto.gov"' in text.stdout
    missing = install.run("config", "--config", "configs/default.toml")  # not here: no clone
    assert missing.returncode == EXIT_CONFIG
    names = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.toml")))
    assert missing.stderr == (
        f"harvester: error: config file not found: configs/default.toml (shipped configs: {names})\n"
    )


@contextmanager
def simulator(install: Install, *args: str) -> Iterator[SimHandle]:
    """``harvester simulate`` of the fresh install on a free loopback port, until the block
    ends (the wheel's simulator, not the repository's)."""
    with run_simulator_process(
        *args, env=install.env(), command=[install.harvester, "simulate"], cwd=install.outside
    ) as sim:
        yield sim


def test_a_short_harvest_against_the_installed_simulator(install: Install) -> None:
    """The demo config, pointed at the wheel's own simulator: the lake equals its truth."""
    lake = install.outside / "lake"
    dates = ("2019-01-01", "2019-01-31")
    with simulator(
        install, "--records", "3000", "--start", dates[0], "--end", dates[1], "--admin"
    ) as sim:
        result = install.run(
            "harvest", "--config", "demo", "--api-url", sim.url, "--out", str(lake),
            "--from", dates[0], "--to", dates[1], "--quiet",
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        truth = sim.truth()
    assert len(truth) == 3000
    assert_lake_equals_truth(Lake.open(str(lake)), truth)
