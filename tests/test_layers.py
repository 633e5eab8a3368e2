"""The package's layers: each module imports only from its own layer or the ones below.

    foundation (errors, config, humanize, fields, signals, progress)
      < storage (the lake: the store and everything kept in it)
      < service (HTTP, the limits learned, paging, decoding)
      < jobs (the run session, planning, the pipeline, harvest, refresh)
      < ops (the commands over the lake: verify, status, show, compact, plan)
      < the CLI and the demo (which also start the simulator)

The simulator stands apart: it is the service's stand-in, and may use only the foundation
(the API's field list), so it never depends on how the harvester reads it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import harvester

ROOT = Path(harvester.__file__).parent
FOUNDATION = {"", "errors", "config", "humanize", "fields", "signals", "progress"}
RANKS = {"storage": 1, "service": 2, "jobs": 3, "ops": 4, "cli": 5, "demo": 5, "__main__": 5}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def rank(module: str) -> int | None:
    """The layer of ``module`` (a name under ``harvester``); None for the simulator."""
    top = module.split(".")[0]
    if top == "sim":
        return None
    if module in FOUNDATION:
        return 0
    return RANKS[top]


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "harvester":
                for alias in node.names:  # a module, or a name of the package (__version__)
                    is_module = (ROOT / alias.name).is_dir() or (ROOT / f"{alias.name}.py").exists()
                    found.add(alias.name if is_module else "")
            elif node.module.startswith("harvester."):
                found.add(node.module.removeprefix("harvester."))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("harvester."):
                    found.add(alias.name.removeprefix("harvester."))
    return found


def upward_imports() -> list[str]:
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        name = module_name(path)
        own = rank(name)
        for target in sorted(imports(path)):
            theirs = rank(target)
            if own is None:  # the simulator: itself and the foundation only
                if theirs is not None and theirs > 0:
                    wrong.append(f"{name} -> {target}")
            elif (theirs is None and own < 5) or (theirs is not None and theirs > own):
                wrong.append(f"{name} -> {target}")
    return wrong


def test_no_module_imports_from_a_higher_layer() -> None:
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The rank table places a lake module below the jobs: so an import of the refresh
    from the lake would be reported (the check is not vacuous)."""
    assert rank("storage.commit") == 1 and rank("jobs.refresh") == 3
    assert rank("sim.server") is None and rank("errors") == 0
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from harvester.jobs.refresh import Refresher\nfrom harvester import errors\n"
    )
    assert imports(sample) == {"jobs.refresh", "errors"}


def test_no_private_s3fs_call() -> None:
    """s3fs's private coroutines (``_call_s3`` and the like) change between releases; the
    harvester uses its public API and botocore's documented conditional writes."""
    offenders = [
        str(p.relative_to(ROOT))
        for p in ROOT.rglob("*.py")
        if "_call_s3" in p.read_text() or "._s3." in p.read_text()
    ]
    assert offenders == []
