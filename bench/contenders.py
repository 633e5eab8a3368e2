"""The contenders: how each is started, where its output lands, what it says it did.

A contender is a command line plus two readers: where its Parquet output is (for the
correctness check, the size and the DuckDB query) and its own account of the run (rows,
duration). Request and 429 counts are taken from the simulator, the same way for all.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "configs" / "default.toml"
# The simulator's default corpus spans these mail dates (harvester.sim.config.SimConfig).
SIM_FIRST = "2018-06-01"
SIM_LAST = "2019-05-31"


@dataclass(frozen=True)
class Contender:
    """One way of downloading the corpus.

    ``kind`` is ``harvester``, ``naive`` or ``dlt``. For the harvester, ``concurrency``,
    ``rows`` and ``rate`` override ``configs/default.toml`` (None = the file's value);
    for peers, ``rows`` is the page size and ``options`` their extra flags.
    """

    name: str
    kind: str
    rows: int | None = None
    concurrency: int | None = None
    rate: float | None = None
    options: tuple[str, ...] = ()
    label: str = ""
    notes: list[str] = field(default_factory=list, compare=False)

    def command(self, url: str, out: Path, result: Path) -> list[str]:
        if self.kind == "harvester":
            cmd = [
                sys.executable, "-m", "harvester", "harvest",
                "--config", str(DEFAULT_CONFIG),
                "--api-url", url, "--out", str(out),
                "--from", SIM_FIRST, "--to", SIM_LAST, "--quiet",
            ]  # fmt: skip
            if self.concurrency is not None:
                cmd += ["--concurrency", str(self.concurrency)]
            if self.rows is not None:
                cmd += ["--rows", str(self.rows)]
            if self.rate is not None:
                cmd += ["--rate", _number(self.rate)]
            return cmd
        module = {"naive": "bench.peers.naive", "dlt": "bench.peers.dlt_peer"}[self.kind]
        return [
            sys.executable, "-m", module, "--url", url, "--out", str(out),
            "--rows", str(self.rows or 100), "--result", str(result), *self.options,
        ]  # fmt: skip

    def shown_command(self) -> str:
        """The command with placeholders for the run-specific URL and paths (for the docs)."""
        cmd = self.command("$SIM_URL", Path("$OUT"), Path("$OUT.result.json"))
        cmd[0] = "python"
        return " ".join(_quote(part) for part in cmd).replace(str(REPO) + "/", "")

    # ---- output --------------------------------------------------------------------------

    def parquet_glob(self, out: Path) -> str:
        """The contender's data files, as a DuckDB ``read_parquet`` glob."""
        if self.kind == "harvester":
            return str(out / "year=*" / "month=*" / "*.parquet")
        if self.kind == "naive":
            return str(out / "records.parquet")
        return str(out / "oa" / "records" / "*.parquet")

    def data_files(self, out: Path) -> list[Path]:
        """Every Parquet file holding the rows' data (dlt's nested claims table included,
        its ``_dlt_*`` bookkeeping and the harvester's ``_harvest/`` state excluded)."""
        if self.kind == "harvester":
            return sorted(out.glob("year=*/month=*/*.parquet"))
        if self.kind == "naive":
            return [out / "records.parquet"]
        return sorted(
            p for p in (out / "oa").glob("*/*.parquet") if not p.parent.name.startswith("_")
        )

    def own_account(self, out: Path, result: Path) -> dict[str, Any]:
        """What the contender says it did: rows, duration (s), requests, bytes received
        (and for the harvester, what it learned of the service: ``service.page_size``, ...).

        The harvester writes one report per run under ``_harvest/runs/``; a resumed harvest
        has several, which are summed (the last one's duration is the resumed run's).
        """
        if self.kind != "harvester":
            data: dict[str, Any] = json.loads(result.read_text()) if result.exists() else {}
            return data
        reports = sorted((out / "_harvest" / "runs").glob("*.json"))
        if not reports:
            return {}
        runs = [json.loads(p.read_text()) for p in reports]
        last = runs[-1]
        return {
            "rows": sum(r.get("rows_written", 0) for r in runs),
            "rows_in_lake": last.get("rows_in_lake"),
            "duration_s": last.get("duration_s"),
            "requests": sum(r.get("requests", 0) for r in runs),
            "throttled_429": sum(r.get("throttled_429", 0) for r in runs),
            "bytes_received": sum(r.get("bytes_received", 0) for r in runs),
            "status": last.get("status"),
            "reports": len(runs),
            # What the harvester found the service to do (page size, window, sort): the
            # last report's, which holds whatever the runs before it learned as well.
            "service": (last.get("extra") or {}).get("service"),
        }


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _quote(part: str) -> str:
    return f"'{part}'" if any(c in part for c in " *$") and not part.startswith("$") else part
