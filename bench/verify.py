"""Correctness and output checks, all in DuckDB: the truth's digest against each output's.

The simulator's ground truth (``--export-truth``: every row as served, one JSON line each)
and every contender's Parquet output are reduced to the same digest:

- ``rows``: how many rows; ``ids``: how many distinct ids;
- ``id_sum``: the sum of ``hash(id)`` (equal sets of ids give equal sums);
- ``row_sum``: the sum of ``hash`` over ``id`` and seven fields joined (strings, the date
  and an integer): a row served with a wrong value changes it.

Contenders name and type columns differently (dlt writes ``patent_application_number``,
the harvester a ``date32`` submissionDate, naive a string), so each field is found by its
name with case and underscores ignored and compared as text. A digest equal to the
truth's means the full, correct row set (up to a 64-bit hash collision). The digest of a
corpus is cached under the work directory: it depends only on the seed and size.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb

from harvester.sim.testing import SIM_MODULE

# The fields the row checksum covers: ones every contender stores as the same text. The
# 0/1 flags are left out on purpose: the source serves the odd one as "0" or 1.0, which
# each contender legitimately stores differently (bool, int, text).
CHECK_FIELDS = (
    "patentApplicationNumber",
    "obsoleteDocumentIdentifier",
    "legacyDocumentCodeIdentifier",
    "groupArtUnitNumber",
    "legalSectionCode",
    "cite103Max",
    "submissionDate",
)
DATE_FIELDS = ("submissionDate",)
INT_FIELDS = ("cite103Max",)
# The aggregate timed over each output (scenario 4): a typical "rejections per month and
# document code" question touching a date, two strings and an integer.
QUERY = """
SELECT substr(sd, 1, 7) AS month, code, count(*) AS n, count(DISTINCT app) AS apps,
       sum(cite) AS cites
FROM src GROUP BY ALL ORDER BY ALL
"""
QUERY_RUNS = 5


def _norm(name: str) -> str:
    return name.replace("_", "").lower()


def connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")  # timestamps as text must not depend on the host
    return con


def _columns(con: duckdb.DuckDBPyConnection, source: str) -> dict[str, tuple[str, str]]:
    """normalized name -> (column name, DuckDB type) of a relation."""
    rows = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    return {_norm(r[0]): (r[0], str(r[1])) for r in rows}


def _text_expr(field: str, columns: dict[str, tuple[str, str]]) -> str:
    """``field`` of a relation as text comparable across contenders (NULL when absent)."""
    found = columns.get(_norm(field))
    if found is None:
        return "NULL"
    name, type_ = found
    col = f'"{name}"'
    if field in DATE_FIELDS:
        if type_.startswith(("DATE", "TIMESTAMP")):
            return f"strftime({col}, '%Y-%m-%d')"
        return f"left(CAST({col} AS VARCHAR), 10)"
    if field in INT_FIELDS:
        return f"CAST(TRY_CAST({col} AS BIGINT) AS VARCHAR)"
    return f"CAST({col} AS VARCHAR)"


def digest_of(con: duckdb.DuckDBPyConnection, source: str) -> dict[str, Any]:
    """The digest (see the module docstring) of a relation such as ``read_parquet(...)``."""
    columns = _columns(con, source)
    id_col = columns.get("id")
    if id_col is None:
        return {"rows": 0, "ids": 0, "id_sum": "", "row_sum": "", "error": "no id column"}
    ident = f'CAST("{id_col[0]}" AS VARCHAR)'
    parts = ", ".join(f"coalesce({_text_expr(f, columns)}, '')" for f in CHECK_FIELDS)
    row = con.execute(
        f"""
        SELECT count(*), count(DISTINCT {ident}),
               CAST(coalesce(sum(hash({ident})), 0) AS VARCHAR),
               CAST(coalesce(sum(hash(concat_ws('|', {ident}, {parts}))), 0) AS VARCHAR)
        FROM {source}
        """
    ).fetchone()
    assert row is not None
    return {"rows": int(row[0]), "ids": int(row[1]), "id_sum": row[2], "row_sum": row[3]}


def parquet_source(glob: str, hive: bool = False) -> str:
    return f"read_parquet('{glob}', hive_partitioning = {str(hive).lower()}, union_by_name = true)"


def compare(truth: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Problems found, in words; empty when the output is the full, correct row set."""
    problems = []
    if got.get("error"):
        problems.append(str(got["error"]))
    if got.get("rows") != truth["rows"]:
        problems.append(f"{got.get('rows')} rows, expected {truth['rows']}")
    if got.get("ids") != truth["ids"]:
        problems.append(f"{got.get('ids')} distinct ids, expected {truth['ids']}")
    if got.get("id_sum") != truth["id_sum"]:
        problems.append("the set of ids differs from the truth")
    elif got.get("row_sum") != truth["row_sum"]:
        problems.append("the same ids, but field values differ from the truth")
    return problems


def truth_digest(sim_args: list[str], work: Path) -> dict[str, Any]:
    """The digest of the corpus the simulator serves with ``sim_args`` (cached on disk).

    The export runs in its own process (the simulator's code, streaming to a file) so the
    truth never sits in this process's memory, even at 5 M rows.
    """
    key = "_".join(a.lstrip("-") for a in sim_args if a not in ("--admin",))
    cache = work / "truth" / f"{key}.json"
    if cache.exists():
        cached: dict[str, Any] = json.loads(cache.read_text())
        return cached
    cache.parent.mkdir(parents=True, exist_ok=True)
    path = cache.with_suffix(".jsonl")
    started = time.monotonic()
    subprocess.run(
        [sys.executable, *SIM_MODULE, *sim_args, "--export-truth", str(path)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    exported = time.monotonic()
    con = connect()
    columns = ", ".join(f"'{f}': 'VARCHAR'" for f in ("id", *CHECK_FIELDS))
    source = (
        f"read_json('{path}', format = 'newline_delimited', columns = {{{columns}}},"
        " maximum_object_size = 1048576)"
    )
    digest = digest_of(con, source)
    digest["json_bytes"] = path.stat().st_size
    digest["export_s"] = round(exported - started, 1)
    digest["digest_s"] = round(time.monotonic() - exported, 1)
    con.close()
    os.unlink(path)  # gigabytes at 5 M rows; the digest is all we keep
    cache.write_text(json.dumps(digest, indent=2))
    return digest


def query_time(
    con: duckdb.DuckDBPyConnection, glob: str, hive: bool = False
) -> tuple[float, float, str]:
    """Median and spread (max - min) of QUERY over one output, and a hash of its answer
    (so the answers of all contenders can be checked equal)."""
    source = parquet_source(glob, hive)
    columns = _columns(con, source)
    view = (
        f"SELECT {_text_expr('submissionDate', columns)} AS sd,"
        f" {_text_expr('legacyDocumentCodeIdentifier', columns)} AS code,"
        f" {_text_expr('patentApplicationNumber', columns)} AS app,"
        f" TRY_CAST({_text_expr('cite103Max', columns)} AS BIGINT) AS cite FROM {source}"
    )
    sql = QUERY.replace("FROM src", f"FROM ({view})")
    answer = con.execute(sql).fetchall()  # warm-up: file metadata and the page cache
    times = []
    for _ in range(QUERY_RUNS):
        started = time.perf_counter()
        con.execute(sql).fetchall()
        times.append(time.perf_counter() - started)
    times.sort()
    median = times[len(times) // 2]
    return median, times[-1] - times[0], hashlib.sha256(repr(answer).encode()).hexdigest()[:16]
