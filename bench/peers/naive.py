"""The naive peer: what most public scripts for this API do.

One ``requests`` session, pages fetched one after another with ``start += rows`` over
``*:*``, every row kept in memory as the parsed JSON dict, one Parquet file written with
pyarrow at the end. The only care it takes is what a script needs to finish at all:

- urllib3's ``Retry`` on 429 and 5xx honouring ``Retry-After`` (``allowed_methods=None``,
  because urllib3 does not retry POST by default);
- building columns from the union of keys (``pa.Table.from_pylist`` takes its columns from
  the first row, and the odd row lacks a field) and turning a column whose values mix
  numbers and strings (the source serves a 0/1 flag as ``"0"`` now and then) into strings,
  which is what an author does after the first ``ArrowInvalid``.

Run: ``python -m bench.peers.naive --url URL --out DIR --rows 100 --result result.json``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from bench.peers import CRITERIA, RECORDS_PATH, write_result


def make_session() -> requests.Session:
    retry = Retry(
        total=20,
        backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,  # None = retry every method, POST included
        respect_retry_after_header=True,
    )
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as parsed JSON -> one Arrow table, with pyarrow inferring the types."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    columns: dict[str, pa.Array] = {}
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[name] = pa.array([None if v is None else str(v) for v in values])
    return pa.table(columns)


def harvest(url: str, rows_per_page: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    session = make_session()
    endpoint = url.rstrip("/") + RECORDS_PATH
    rows: list[dict[str, Any]] = []
    requests_made = 0
    retried_429 = 0
    bytes_received = 0
    start = 0
    num_found = None
    while num_found is None or start < num_found:
        response = session.post(
            endpoint,
            data={"criteria": CRITERIA, "start": start, "rows": rows_per_page},
            timeout=60,
        )
        history = response.raw.retries.history if response.raw.retries else ()
        requests_made += 1 + len(history)
        retried_429 += sum(1 for h in history if h.status == 429)
        if response.status_code == 404:  # the API's "no match"
            break
        response.raise_for_status()
        bytes_received += len(response.content)
        body = response.json()["response"]
        num_found = body["numFound"]
        rows.extend(body["docs"])
        start += rows_per_page
    return rows, {
        "requests": requests_made,
        "throttled_429": retried_429,
        "bytes_received": bytes_received,
        "num_found": num_found or 0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.peers.naive", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--out", required=True, help="directory for records.parquet")
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)

    started = time.monotonic()
    rows, stats = harvest(args.url, args.rows)
    fetched = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(to_table(rows), out / "records.parquet")
    finished = time.monotonic()
    write_result(
        args.result,
        {
            "rows": len(rows),
            **stats,
            "fetch_s": round(fetched - started, 3),
            "duration_s": round(finished - started, 3),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
