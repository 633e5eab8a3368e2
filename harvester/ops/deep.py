"""``harvester verify --deep``: fetch whole days from the service and compare every row of
them, field by field, with the lake.

Counts cannot see a row changed without a new ``createDateTime``, nor a day where one row
went and another came with an old stamp: the number of rows stays, and so does the number
changed since the watermark. Only the rows themselves can tell. For each day checked (all
of verify's range, or a seeded random sample of ``--sample N`` of its days that hold rows,
in the lake or at the service: an empty day proves nothing the counts did not):

- the day is fetched whole, as the harvest fetches a shard (``fetch.fetch_shard`` with the
  run's limits; a day larger than the paging window is split by id range by the planner,
  as the pipeline splits a shard), and decoded by ``decode.decode_docs``;
- the lake's rows of that day are read from the committed files of its partition, only the
  row groups whose statistics can hold the day (footers are read once per partition);
- rows are matched by ``id``: rows the lake lacks, rows the service no longer has, ids the
  lake holds more than once, and every field that differs, with both values (shortened).

One day is held at a time (its served rows and the lake's), so memory follows the largest
day, not the lake. Rows the decoder quarantines are in ``_harvest/quarantine/``, not in the
files: they are compared by the count checks, not here. A day that differs goes to
``--repair``'s days, which fetches it again through the refresh machinery.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from harvester.errors import RetriesExhausted, ShardTooLarge, ShardUnstable
from harvester.jobs.planner import Planner
from harvester.service.client import ApiClient
from harvester.service.decode import decode_docs
from harvester.service.fetch import fetch_shard
from harvester.service.profile import Limits
from harvester.storage.info import parallel_map, parquet_file
from harvester.storage.merge import differing_pairs, flat
from harvester.storage.partition import Partition
from harvester.storage.schema import ARROW_SCHEMA
from harvester.storage.shard import Shard
from harvester.storage.store import Lake

log = logging.getLogger("harvester.verify")

NAMED_PER_DAY = 100  # rows named per day (problems and report); the counts cover them all
VALUE_CHARS = 60  # a differing value is shown up to this many characters


@dataclass(frozen=True)
class DeepOptions:
    """What ``--deep`` was asked: every day of the range, or ``sample`` of them."""

    sample: int | None = None
    seed: int | None = None  # of the sample's draw; None: a new one, kept in the report


@dataclass
class DayResult:
    """One day compared: what the service and the lake hold, and how they differ."""

    day: dt.date
    service_rows: int = 0
    lake_rows: int = 0
    missing: list[str] = field(default_factory=list)  # ids the lake lacks (named ones)
    extra: list[str] = field(default_factory=list)  # ids the service no longer has
    differing: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    repeated: dict[str, int] = field(default_factory=dict)  # id -> copies in the lake
    counts: Counter[str] = field(default_factory=Counter)  # missing/extra/differing/repeated
    error: str | None = None  # the day could not be fetched or read

    @property
    def equal(self) -> bool:
        return self.error is None and not sum(self.counts.values())

    def reason(self) -> str:
        if self.error is not None:
            return f"deep check failed: {self.error}"
        parts = [f"{self.counts[k]} {k}" for k in ("missing", "extra", "differing", "repeated")]
        return "deep check: rows " + ", ".join(p for p in parts if not p.startswith("0 "))

    def lines(self) -> list[str]:
        day = self.day.isoformat()
        if self.error is not None:
            return [f"day {day}: could not be compared: {self.error}"]
        out = [f"day {day}: row {i} is missing from the lake" for i in self.missing]
        out += [
            f"day {day}: row {i} is in the lake, the service no longer has it" for i in self.extra
        ]
        out += [
            f"day {day}: id {i} appears {n} times in the lake" for i, n in self.repeated.items()
        ]
        for row_id, fields in self.differing.items():
            what = "; ".join(f"{name}: lake {a}, service {b}" for name, a, b in fields)
            out.append(f"day {day}: row {row_id} differs in {what}")
        named = len(self.missing) + len(self.extra) + len(self.repeated) + len(self.differing)
        if sum(self.counts.values()) > named:
            out.append(f"day {day}: ... and {sum(self.counts.values()) - named} more rows differ")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "service_rows": self.service_rows,
            "lake_rows": self.lake_rows,
            "counts": dict(self.counts),
            "missing": self.missing,
            "extra": self.extra,
            "repeated": self.repeated,
            "differing": {
                i: [{"field": n, "lake": a, "service": b} for n, a, b in fields]
                for i, fields in self.differing.items()
            },
            "error": self.error,
        }


@dataclass
class DeepCheck:
    """The days compared row by row, and those that differ."""

    days: list[dt.date]
    sample: int | None
    seed: int | None
    rows_compared: int = 0
    differing: dict[dt.date, DayResult] = field(default_factory=dict)
    # With --sample: how many days of the range hold rows (what the sample is drawn from).
    population: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "days": [d.isoformat() for d in self.days],
            "sample": self.sample,
            "seed": self.seed,
            "days_holding_rows": self.population,
            "rows_compared": self.rows_compared,
            "days_differing": {
                d.isoformat(): r.to_json() for d, r in sorted(self.differing.items())
            },
        }


def sample_population(
    first: dt.date, last: dt.date, holding: Collection[dt.date] | None = None
) -> list[dt.date]:
    """The days of [first, last] a sample is drawn from (sorted): those ``holding`` rows,
    when given, else every day. A range runs up to today and the service holds nothing of
    its last months yet; an empty day costs a request and can only prove "0 = 0", which the
    count checks already proved, so a sample of them proves next to nothing."""
    days = Shard(first, last).days if first <= last else []
    if holding is None:
        return days
    return [d for d in days if d in holding]


def choose_days(
    first: dt.date,
    last: dt.date,
    options: DeepOptions,
    holding: Collection[dt.date] | None = None,
) -> tuple[list[dt.date], int | None]:
    """The days to compare (sorted) and the seed of the draw (None when none was drawn).

    Without ``--sample``: every day of the range, empty ones included (the promise of
    ``--deep`` alone is every day). With it: ``sample`` days drawn among the days
    ``holding`` rows (``sample_population``), or all of those when there are no more. The
    same seed and the same ``holding`` draw the same days."""
    if options.sample is None:
        return sample_population(first, last), None
    population = sample_population(first, last, holding)
    if options.sample >= len(population):
        return population, None
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**31)
    return sorted(random.Random(seed).sample(population, options.sample)), seed


def _short(value: Any) -> str:
    text = repr(value.isoformat() if isinstance(value, dt.date | dt.datetime) else value)
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 3] + "..."


def _first_copies(ids: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Of a table's ``ids``: the distinct ids (sorted), the position of each one's first
    copy, and how many copies each has."""
    keys = pa.table({"id": ids, "pos": pa.array(range(len(ids)), pa.int64())})
    order = pc.sort_indices(keys, sort_keys=[("id", "ascending"), ("pos", "ascending")])
    ordered = ids.take(order)
    n = len(ordered)
    if n == 0:
        empty = pa.array([], pa.int64())
        return ordered, empty, empty
    later = pc.fill_null(pc.not_equal(ordered.slice(1), ordered.slice(0, n - 1)), True)
    starts = pa.concat_arrays([pa.array([True]), later])
    begins = pc.indices_nonzero(starts).cast(pa.int64())
    ends = pa.concat_arrays([begins.slice(1), pa.array([n], pa.int64())])
    return ordered.filter(starts), order.filter(starts), pc.subtract(ends, begins)


def compare_day(day: dt.date, lake: pa.Table, served: pa.Table) -> DayResult:
    """How the lake's rows of ``day`` differ from the service's (both ``ARROW_SCHEMA``).

    Columnar: rows are matched by ``id`` (a served row with the lake's first copy of its
    id) and compared a column at a time (``merge.differing_pairs``, where two nulls are
    equal and lists compare element by element, as Python compares them); only the rows
    named (``NAMED_PER_DAY``) become Python values. Holding a day of ~32,000 rows as
    Python dicts, twice, made ``verify --deep`` of a million-row month peak at 650 MB.
    Named in this order, as the budget allows: served rows missing or differing, in served
    order; then ids only the lake has, then ids it holds more than once (both sorted)."""
    result = DayResult(day, served.num_rows, lake.num_rows)
    lake_ids = flat(lake.column("id"))
    served_ids = flat(served.column("id"))
    distinct, first_at, copies = _first_copies(lake_ids)
    found = pc.index_in(served_ids, value_set=distinct)
    missing = pc.is_null(found)
    matched = pc.indices_nonzero(pc.invert(missing)).cast(pa.int64())
    lake_at = first_at.take(found.filter(pc.invert(missing)))
    differs = differing_pairs(lake, lake_at, served, matched)
    differing_at = matched.filter(differs)
    extra = distinct.filter(pc.invert(pc.is_in(distinct, value_set=served_ids)))
    repeated = pc.greater(copies, 1)
    counts = {
        "missing": int(pc.sum(missing.cast(pa.int64())).as_py() or 0),
        "extra": len(extra),
        "differing": len(differing_at),
        "repeated": int(pc.sum(repeated.cast(pa.int64())).as_py() or 0),
    }
    result.counts.update({kind: n for kind, n in counts.items() if n})

    budget = NAMED_PER_DAY
    missing_at = pc.indices_nonzero(missing).cast(pa.int64())
    candidates = pc.sort_indices(pa.concat_arrays([missing_at, differing_at]))
    in_order = pa.concat_arrays([missing_at, differing_at]).take(candidates)
    # Lake positions of the differing served rows (a dict of ints, not of rows).
    lake_of = dict(zip(differing_at.to_pylist(), lake_at.filter(differs).to_pylist(), strict=True))
    names = ARROW_SCHEMA.names
    for at in in_order.to_pylist():
        # A served id repeated and differing twice is named once (its later copy's
        # fields): the budget counts names, not served rows.
        if len(result.missing) + len(result.differing) >= budget:
            break
        want = served.slice(at, 1).to_pylist()[0]
        if at not in lake_of:
            result.missing.append(want["id"])
            continue
        have = lake.slice(lake_of[at], 1).to_pylist()[0]
        fields = [(n, _short(have[n]), _short(want[n])) for n in names if have[n] != want[n]]
        result.differing[want["id"]] = fields
    budget -= len(result.missing) + len(result.differing)
    result.extra = extra.slice(0, max(0, budget)).to_pylist()
    budget -= len(result.extra)
    twice = distinct.filter(repeated).slice(0, max(0, budget)).to_pylist()
    result.repeated = dict(
        zip(twice, copies.filter(repeated).slice(0, len(twice)).to_pylist(), strict=True)
    )
    return result


class LakeDays:
    """The lake's rows of one day at a time, from the committed files of its partition."""

    def __init__(self, lake: Lake, committed: dict[str, list[str]], gone: Iterable[str]) -> None:
        self.lake = lake
        self.committed = committed
        self.gone = set(gone)  # committed files that are missing (named by the scan)
        self._partition: str | None = None
        self._groups: dict[str, list[tuple[int, dt.date | None, dt.date | None]]] = {}

    def _index(self, partition: str) -> None:
        """Each file's row groups with their submissionDate bounds (None: unknown)."""
        if partition == self._partition:
            return
        paths = [p for p in self.committed.get(partition, []) if p not in self.gone]
        self._groups = dict(zip(paths, parallel_map(self.lake, self._bounds, paths), strict=True))
        self._partition = partition

    def _bounds(self, path: str) -> list[tuple[int, dt.date | None, dt.date | None]]:
        with parquet_file(self.lake, path) as parquet:
            meta = parquet.metadata
            out: list[tuple[int, dt.date | None, dt.date | None]] = []
            for i in range(meta.num_row_groups):
                group = meta.row_group(i)
                low = high = None
                for j in range(group.num_columns):
                    column = group.column(j)
                    stats = column.statistics
                    if column.path_in_schema != "submissionDate" or stats is None:
                        continue
                    if stats.has_min_max and isinstance(stats.min, dt.date):
                        low, high = stats.min, stats.max
                out.append((i, low, high))
            return out

    def rows(self, day: dt.date) -> pa.Table:
        self._index(Partition.of(day).path)
        wanted = {
            path: [
                i for i, low, high in groups if low is None or high is None or low <= day <= high
            ]
            for path, groups in self._groups.items()
        }
        reads = [(path, groups) for path, groups in wanted.items() if groups]
        tables = parallel_map(self.lake, lambda item: self._read(day, *item), reads)
        return pa.concat_tables(tables) if tables else ARROW_SCHEMA.empty_table()

    def _read(self, day: dt.date, path: str, groups: list[int]) -> pa.Table:
        with parquet_file(self.lake, path) as parquet:
            table = parquet.read_row_groups(groups, columns=ARROW_SCHEMA.names)
        table = table.select(ARROW_SCHEMA.names).cast(ARROW_SCHEMA)
        return table.filter(pc.equal(table.column("submissionDate"), pa.scalar(day, pa.date32())))


async def fetch_day(
    client: ApiClient, planner: Planner, template: str, limits: Limits, attempts: int, day: dt.date
) -> pa.Table:
    """Every served row of one mail day, decoded (rows the decoder quarantines left out);
    a day beyond the paging window is fetched in the planner's id-range pieces, as the
    pipeline would, and each piece is decoded as it arrives: a day's served docs are
    never all held as Python dicts at once."""
    tables: list[pa.Table] = []
    pending = [Shard(day, day)]
    while pending:
        shard = pending.pop()
        try:
            fetched = await fetch_shard(
                client, shard.criteria(template), limits=limits, attempts=attempts
            )
        except ShardTooLarge as exc:
            pieces = await planner.refine(shard.with_expected(exc.num_found))
            if pieces == [shard]:
                raise ShardUnstable(
                    f"{shard.key}: {exc.num_found} rows exceed the paging window and cannot be"
                    " split further"
                ) from None
            pending.extend(pieces)
            continue
        tables.append(decode_docs(fetched.docs, source=f"verify {day.isoformat()}").table)
        del fetched
    return pa.concat_tables(tables) if tables else ARROW_SCHEMA.empty_table()


async def deep_check(
    client: ApiClient,
    planner: Planner,
    template: str,
    limits: Limits,
    attempts: int,
    lake_days: LakeDays,
    days: list[dt.date],
    sample: int | None,
    seed: int | None,
    population: int | None = None,
) -> DeepCheck:
    """Compare ``days`` one at a time (see the module docstring); ``population``: the days
    holding rows a sample was drawn from, for the summary."""
    check = DeepCheck(days, sample, seed, population=population)
    for n, day in enumerate(days, 1):
        try:
            served = await fetch_day(client, planner, template, limits, attempts, day)
            lake = await asyncio.to_thread(lake_days.rows, day)
        except (RetriesExhausted, ShardUnstable, OSError, pa.ArrowException, ValueError) as exc:
            check.differing[day] = DayResult(day, error=f"{type(exc).__name__}: {exc}"[:300])
            continue
        result = compare_day(day, lake, served)
        check.rows_compared += served.num_rows
        if not result.equal:
            check.differing[day] = result
        if n % 50 == 0:
            log.info("verify --deep: %d of %d days compared", n, len(days))
    return check
