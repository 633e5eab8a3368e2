"""The dlt peer: a dlt pipeline paging the records endpoint, loaded as Parquet files.

Written the way dlt's documentation recommends for a custom paged POST API: the REST
client (``dlt.sources.helpers.rest_client.RESTClient``, whose session is dlt's retrying
``requests`` helper: 429 and 5xx retried, ``Retry-After`` honoured) with a custom
paginator (the docs' "implement ``update_state`` and ``update_request``" recipe), because
the API takes ``start``/``rows`` in a form body, which none of the stock paginators writes.
Pages advance by ``start += rows`` over ``*:*``.

dlt's parallelism, where it offers it:

- extract: ``--slices N`` splits ``[0, numFound)`` into N offset ranges, each its own
  resource marked ``parallelized=True`` (dlt runs them in its extract thread pool) writing
  to the same ``records`` table; ``--slices 1`` is the plain single paginated resource.
- normalize: ``--normalize-workers`` processes (``pipeline.normalize(workers=...)``), fed
  by rotating the extracted files every ``--file-max-items`` rows (dlt's performance guide).
- load: the filesystem destination's loader workers (dlt's default).

The destination is ``filesystem`` with ``loader_file_format="parquet"``: files land under
``<out>/<dataset>/records/`` (plus dlt's nested table for the claims list and its own
``_dlt_*`` tables).

Run: ``python -m bench.peers.dlt_peer --url URL --out DIR --rows 100 --result result.json``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.peers import CRITERIA, RECORDS_PATH, write_result

DATASET = "oa"
TABLE = "records"


def _configure_dlt(work: Path, file_max_items: int) -> None:
    """dlt reads its settings from the environment; set them before importing it."""
    # dlt normalizes one extracted file per worker: without rotation a single resource
    # yields one file and ``normalize(workers=N)`` has nothing to share out.
    os.environ["DATA_WRITER__FILE_MAX_ITEMS"] = str(file_max_items)
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")  # no phoning home
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    # dlt keeps its working state under ~/.dlt by default; keep each run's to itself.
    os.environ["DLT_DATA_DIR"] = str(work / "dlt_data")
    os.environ["DLT_PROJECT_DIR"] = str(work)


def _form(request: Any) -> dict[str, Any]:
    """The request's form fields so far (``paginate(data=...)`` passes a dict)."""
    return dict(request.data or {})


def run(
    url: str,
    out: Path,
    rows: int,
    slices: int,
    normalize_workers: int,
    file_max_items: int,
) -> dict[str, Any]:
    work = out.parent / f"{out.name}.dlt-work"
    work.mkdir(parents=True, exist_ok=True)
    _configure_dlt(work, file_max_items)

    import dlt
    from dlt.sources.helpers.rest_client.client import RESTClient
    from dlt.sources.helpers.rest_client.paginators import BasePaginator
    from requests import Request, Response

    counters = {"requests": 0, "bytes_received": 0}

    class FormOffsetPaginator(BasePaginator):
        """``start``/``rows`` in the form body; stops at ``stop`` or at numFound."""

        def __init__(self, first: int, stop: int | None) -> None:
            super().__init__()
            self.start = first
            self.stop = stop

        def init_request(self, request: Request) -> None:
            request.data = {**_form(request), "start": self.start, "rows": rows}

        def update_state(self, response: Response, data: list[Any] | None = None) -> None:
            counters["requests"] += 1
            counters["bytes_received"] += len(response.content)
            if self.stop is None:  # one resource over everything: numFound from page one
                self.stop = int(response.json()["response"]["numFound"])
            self.start += rows
            self._has_next_page = bool(data) and self.start < self.stop

        def update_request(self, request: Request) -> None:
            request.data = {**_form(request), "start": self.start}

    def client() -> RESTClient:
        # One client per resource: the parallelized resources run in threads.
        return RESTClient(base_url=url.rstrip("/"))

    def count() -> int:
        response = client().session.post(
            url.rstrip("/") + RECORDS_PATH, data={"criteria": CRITERIA, "start": 0, "rows": 1}
        )
        response.raise_for_status()
        counters["requests"] += 1
        return int(response.json()["response"]["numFound"])

    def pages(first: int, stop: int | None) -> Iterator[Any]:
        yield from client().paginate(
            RECORDS_PATH,
            method="POST",
            data={"criteria": CRITERIA},
            paginator=FormOffsetPaginator(first, stop),
            data_selector="response.docs",
        )

    if slices == 1:
        bounds: list[tuple[int, int | None]] = [(0, None)]
    else:
        total = count()
        step = -(-total // slices // rows) * rows  # whole pages per slice
        bounds = [(lo, min(lo + step, total)) for lo in range(0, total, step)]
    resources = [
        dlt.resource(
            pages(lo, hi),
            name=f"{TABLE}_{i}",
            table_name=TABLE,
            write_disposition="append",
            parallelized=slices > 1,
        )
        for i, (lo, hi) in enumerate(bounds)
    ]

    pipeline = dlt.pipeline(
        pipeline_name="oa_bench",
        destination=dlt.destinations.filesystem(bucket_url=out.resolve().as_uri()),
        dataset_name=DATASET,
        pipelines_dir=str(work / "pipelines"),
    )
    started = time.monotonic()
    pipeline.extract(resources, loader_file_format="parquet")
    extracted = time.monotonic()
    pipeline.normalize(workers=normalize_workers)
    normalized = time.monotonic()
    pipeline.load()
    loaded = time.monotonic()
    trace = pipeline.last_trace
    rows_loaded = 0
    if trace is not None and trace.last_normalize_info is not None:
        rows_loaded = int(trace.last_normalize_info.row_counts.get(TABLE, 0))
    return {
        "rows": rows_loaded,
        **counters,
        "throttled_429": None,  # dlt retries inside its session; the simulator counts them
        "extract_s": round(extracted - started, 3),
        "normalize_s": round(normalized - extracted, 3),
        "load_s": round(loaded - normalized, 3),
        "fetch_s": round(extracted - started, 3),
        "duration_s": round(loaded - started, 3),
        "slices": len(bounds),
        "normalize_workers": normalize_workers,
        "file_max_items": file_max_items,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.peers.dlt_peer", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--out", required=True, help="the filesystem destination's root")
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--slices", type=int, default=1, help="parallel offset ranges")
    parser.add_argument("--normalize-workers", type=int, default=1)
    parser.add_argument("--file-max-items", type=int, default=100_000)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    result = run(
        args.url, Path(args.out), args.rows, args.slices, args.normalize_workers,
        args.file_max_items,
    )  # fmt: skip
    write_result(args.result, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
