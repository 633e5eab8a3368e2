"""Everything the harvester remembers, kept under ``<lake>/_harvest/`` next to the data.

This module is the one owner of that layout: every path under ``_harvest/`` is named here
once, every state file has a typed record here, and each is read by one method of
``HarvestState``. Other modules ask for a record or a path; none spells one.

Keeping state in the lake (not on the machine that ran) means any machine can resume or
inspect a harvest, on local disk and on S3 alike. Every file here is written whole and
atomically (one object put, or temp + rename locally), and a shard's marker is written only
after its data files are complete, so a marker always tells the truth about the data.

Layout::

    _harvest/lake.json                   LakeMeta: format and schema version of the lake,
                                         and its source (SourceRecord, ``source``)
    _harvest/plan.json                   StoredPlan: the harvest's range and shards
    _harvest/shards/<slug>.json          ShardMarker: one per finished shard (done/split/failed)
    _harvest/quarantine/<name>.jsonl     rows that could not be decoded (``quarantine``)
    _harvest/pages/<slug>.log            pages of a shard not yet committed (``checkpoint``;
                                         on S3 one object per page, <slug>/<start>.zst)
    _harvest/partitions/<y>_<m>.json     PartitionManifest: a rewritten partition's files
    _harvest/complete.json               CompleteRecord: every shard of the plan is done
    _harvest/watermark.json              WatermarkRecord: the last refresh's watermark
    _harvest/lock.json                   LockRecord: the one writer (``lock``)
    _harvest/service.json                ServiceProfile: what the service was found to do
    _harvest/coverage.json               Coverage: the mail-date range the lake keeps equal
    _harvest/pending-drops.json          PendingDrops: days whose rows would go, awaiting
                                         a second, later count
    _harvest/refresh/run.json            RefreshRun: an unfinished refresh or repair
    _harvest/refresh/<stage>/...         a refresh's staging areas (lakes of their own)
    _harvest/runs/<run-id>.json          one report per run (``report.RunReport``)
    _harvest/changes/<run-id>/<p>-<step>.pq  the ids a run added, updated, deleted in one
                                         partition (``changes``: Parquet, not ``.parquet``)
    _harvest/quota.json                  QuotaLedger: requests this week, per key (``quota``)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal, TypeVar

import orjson

from harvester.errors import LakeError
from harvester.storage.partition import Partition
from harvester.storage.schema import SCHEMA_VERSION
from harvester.storage.shard import EARLIEST_PROBE, Shard, month_spans
from harvester.storage.store import Lake

ROOT: Final = "_harvest"
LAKE_META: Final = f"{ROOT}/lake.json"
PLAN: Final = f"{ROOT}/plan.json"
SHARDS: Final = f"{ROOT}/shards"
QUARANTINE: Final = f"{ROOT}/quarantine"
PAGES: Final = f"{ROOT}/pages"
PARTITIONS: Final = f"{ROOT}/partitions"
COMPLETE: Final = f"{ROOT}/complete.json"
WATERMARK: Final = f"{ROOT}/watermark.json"
LOCK: Final = f"{ROOT}/lock.json"
SERVICE: Final = f"{ROOT}/service.json"
COVERAGE: Final = f"{ROOT}/coverage.json"
PENDING_DROPS: Final = f"{ROOT}/pending-drops.json"
REFRESH: Final = f"{ROOT}/refresh"
REFRESH_RUN: Final = f"{REFRESH}/run.json"
RUNS: Final = f"{ROOT}/runs"
CHANGES: Final = f"{ROOT}/changes"
# Not ``.parquet``: a reader's ``**/*.parquet`` glob must find data files only (``datafile``).
CHANGES_SUFFIX: Final = ".pq"
QUOTA: Final = f"{ROOT}/quota.json"
QUARANTINE_SUFFIX: Final = ".jsonl"

LAKE_FORMAT: Final = "harvester-lake"
MarkerStatus = Literal["done", "split", "failed"]
RefreshPhase = Literal[
    "fetch-changed",
    "reconcile",
    "confirm-drops",
    "merge",
    "reload",
    "finish",
    # Written by versions that merged the changed rows before reconciling; read only.
    "merge-changed",
    "merge-days",
]
RefreshKind = Literal["refresh", "repair"]
StageName = Literal["changed", "days", "reload"]  # "reload": one month at a time
SortSupport = Literal["honoured", "ignored", "refused"]
SourceHow = Literal["harvest", "adopted", "rebound"]

R = TypeVar("R")


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def utc_instant() -> str:
    """Now to the microsecond, for what is ordered by time: two runs of a fast refresh can
    start and finish within one second, and ``status``'s last run is the latest finish."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def _record(cls: type[R], data: Any) -> R:
    """A record from its JSON object, ignoring keys a newer version may have added."""
    if not isinstance(data, dict):
        raise LakeError(f"damaged state file: expected an object for {cls.__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})


# -- records ------------------------------------------------------------------------------
@dataclass
class SourceRecord:
    """The service and dataset a lake's rows come from (``source`` compares them): the API
    URL normalised (scheme, host, port, path: never a user, password, query or the key)
    and the dataset (``oa_rejections/v2``). ``how``: recorded by the lake's first harvest,
    ``adopted`` by a run on a lake written before sources were kept, or ``rebound`` by
    ``--rebind-source`` (``previous``: the URL it replaced)."""

    url: str
    dataset: str
    how: SourceHow = "harvest"
    bound_at: str = field(default_factory=utc_now)
    previous: str | None = None


@dataclass
class LakeMeta:
    """What declares a lake: its format and schema version, and the source it is bound to
    (None: written before sources were recorded, or a new lake not yet bound)."""

    format: str
    schema_version: int
    created_at: str = field(default_factory=utc_now)
    source: SourceRecord | None = None

    @classmethod
    def from_json(cls, data: Any) -> LakeMeta:
        meta = _record(cls, data)
        if meta.source is not None:
            meta.source = _record(SourceRecord, meta.source)
        return meta


@dataclass
class StoredPlan:
    """The shards of one harvest, fixed when it started so a resume uses the same ones."""

    first: dt.date
    last: dt.date
    date_template: str
    shard_size: int
    shards: list[Shard]
    created_at: str = field(default_factory=utc_now)
    # The newest createDateTime the service held when the harvest started (``stamps``):
    # the lake's watermark once it completes. None in lakes planned before it was kept.
    watermark: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
            "date_template": self.date_template,
            "shard_size": self.shard_size,
            "created_at": self.created_at,
            "watermark": self.watermark,
            "shards": [s.to_json() for s in self.shards],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredPlan:
        return cls(
            dt.date.fromisoformat(data["first"]),
            dt.date.fromisoformat(data["last"]),
            data["date_template"],
            int(data["shard_size"]),
            [Shard.from_json(s) for s in data["shards"]],
            data.get("created_at", ""),
            data.get("watermark"),
        )


@dataclass
class ShardMarker:
    """What happened to one shard. ``num_found`` is what the service reported when fetched."""

    key: str
    status: MarkerStatus
    rows: int = 0
    num_found: int = 0
    quarantined: int = 0
    files: list[str] = field(default_factory=list)
    attempts: int = 0
    cause: str | None = None
    children: list[dict[str, Any]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    max_create: str | None = None
    finished_at: str = field(default_factory=utc_now)

    @property
    def done(self) -> bool:
        return self.status == "done"


@dataclass
class CompleteRecord:
    """Written once, when every shard of the harvest's plan is done."""

    completed_at: str
    rows: int
    shards: int
    watermark: str | None


@dataclass
class WatermarkRecord:
    """The newest ``createDateTime`` a refresh has brought into the lake."""

    watermark: str
    updated_at: str
    run_id: str


@dataclass
class LockRecord:
    """Who writes the lake now, with a heartbeat (see ``lock``). ``token`` is random and
    known only to the holder; ``boot_id`` and ``pid_ns`` say where its ``pid`` means
    something (a container has a PID namespace of its own, even under a shared host name).
    """

    host: str
    pid: int
    command: str
    started_at: str = ""
    heartbeat: str = ""
    token: str = ""
    boot_id: str = ""
    pid_ns: str = ""

    def to_bytes(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def parse(cls, raw: bytes) -> LockRecord | None:
        """The record in ``raw``; None when it cannot be read (torn or foreign)."""
        try:
            data = orjson.loads(raw)
            return _record(cls, data) if isinstance(data, dict) else None
        except (orjson.JSONDecodeError, TypeError, LakeError):
            return None


@dataclass
class PartitionManifest:
    """The files of a partition that refresh or compact rewrote; wins over shard markers."""

    partition: str
    files: list[str]
    written_at: str = field(default_factory=utc_now)


@dataclass
class RefreshRun:
    """The checkpoint of one refresh (or repair): survives a crash, deleted when it ends."""

    run_id: str
    since: str
    phase: RefreshPhase = "fetch-changed"
    repair_days: dict[str, str] | None = None
    # ``requests``: sent by this run's processes so far, saved with every phase, so a
    # resumed run's report counts those of the killed or interrupted ones too.
    stats: dict[str, int] = field(default_factory=dict)
    partitions_rewritten: list[str] = field(default_factory=list)
    kind: RefreshKind = "refresh"  # "repair": verify --repair, given days only
    # The newest createDateTime the service held when this run started: the watermark it
    # leaves (a resumed run keeps it; None for a repair, which moves no watermark).
    watermark: str | None = None
    # A reload (``refresh``: the changed rows were most of the lake): the coverage's days
    # ([first, last], fixed when the run began) are fetched again one month at a time, each
    # month replacing its partition. None for an ordinary refresh (and in older run.json).
    reload_span: list[str] | None = None
    months_done: list[str] = field(default_factory=list)  # "YYYY-MM", committed
    # An open start's stretch before the first month harvested (``Coverage.open_start``):
    # counted by halving once ("before" joins ``months_done``), and the months of it the
    # service holds rows in, which the reload then fetches as any other month.
    months_before: list[str] = field(default_factory=list)
    # What the reload was decided on: changed rows, the lake's rows, the estimate.
    reload_counts: dict[str, int] = field(default_factory=dict)
    # Per month ("YYYY-MM"): the lake's rows when the reload began (a month with no changed
    # rows and as many rows at the service is current, not fetched). Older run.json files
    # hold a second number per month, no longer read.
    lake_months: dict[str, list[int]] = field(default_factory=dict)
    # Load stamps left out of the changed rows (``decision.ChangedScope``): their rows are
    # in the lake already. A reload's months are counted in the same scope.
    excluded: list[str] = field(default_factory=list)
    # Days of the reconciliation that would lose most of their rows: ISO day -> [lake,
    # service], counted again in phase "confirm-drops" (None: not reconciled yet).
    suspects: dict[str, list[int]] | None = None
    held: dict[str, str] = field(default_factory=dict)  # ISO day -> why its rows stay
    # The service's count of each repair day (reconciliation's, or a suspect's settled
    # count): the day's shard is planned with it, not counted once more.
    day_counts: dict[str, int] = field(default_factory=dict)
    # Repair days narrowed by id-range counts (issue 20): the key of each piece that
    # differs (``Shard.key``, ``2019-07-15/id[a-b)``) -> its service count. Only these
    # pieces of their days are fetched and replaced; a day without pieces goes whole.
    repair_pieces: dict[str, int] = field(default_factory=dict)


@dataclass
class Coverage:
    """The mail-date range the lake keeps equal to the service: from ``first`` to ``last``,
    or, with ``last`` None (a harvest without ``--to``), to the newest day the service
    holds. Refresh never writes a row outside it.

    ``open_start`` (a harvest without ``--from``): the lake keeps every mail date up to
    ``last``, and ``first`` is only the first day the harvest found rows on. A real source
    gains rows on old mail dates (late loads), so a day before ``first`` may hold rows
    later; refresh and verify count that stretch too (one count while it stays empty). A
    coverage written before ``open_start`` existed reads as a fixed start."""

    first: str
    last: str | None = None
    updated_at: str = field(default_factory=utc_now)
    open_start: bool = False

    @property
    def first_day(self) -> dt.date:
        """The first day harvested (``--from``, or the probed first day of an open start)."""
        return dt.date.fromisoformat(self.first)

    @property
    def first_covered(self) -> dt.date:
        """The first day kept equal: the earliest a query can name for an open start."""
        return EARLIEST_PROBE if self.open_start else self.first_day

    def last_day(self, today: dt.date) -> dt.date:
        """The last day covered now (an open end reaches ``today``)."""
        return dt.date.fromisoformat(self.last) if self.last else today

    def span(self, today: dt.date) -> tuple[dt.date, dt.date]:
        """The days kept equal now: ``first_covered`` .. ``last_day(today)``."""
        return self.first_covered, self.last_day(today)

    def months(self, today: dt.date) -> int:
        """The months a reload counts: those from ``first`` on, plus one count for the
        stretch before it when the start is open (empty months are counted a run at a
        time, ``reconcile.count_months``)."""
        return len(month_spans(self.first_day, self.last_day(today))) + int(self.open_start)

    def covers(self, day: dt.date, today: dt.date) -> bool:
        return self.first_covered <= day <= self.last_day(today)


@dataclass
class PendingDrop:
    """A day whose service count fell to 0, or by more than the allowed share: its lake rows
    are kept until a later refresh counts the same again."""

    lake: int
    service: int
    seen_at: str
    run_id: str


@dataclass
class ServiceProfile:
    """What the service was found to do (``service``): probed once, proven against its own
    answers, lowered whenever it contradicts them, reused by every later run."""

    api_url: str
    page_size: int  # the ``rows`` runs ask for: chosen by rows per second, <= ``ceiling``
    window: int | None  # the deepest start+rows it answers; None: none met
    date_template: str  # the mail-date form proven on a real row
    configured_template: str  # the configured form the proof started from
    stamp_form: str  # how a createDateTime bound is written ("{stamp}Z" or "{stamp}")
    sort: SortSupport  # whether "sort=id asc" is honoured (then shards page by key)
    probed_at: str
    updated_at: str = ""
    evidence: list[str] = field(default_factory=list)
    # The page-size choice (issue 20, "page size"); absent from profiles written before it:
    # the largest ``rows`` honoured (None: ``page_size`` is that), seconds a page of each
    # size took at the probe (rows as text -> s), how ``page_size`` was picked ("rows per
    # second"; "rows setting": probed under fixed_rows; "": before the choice), and the
    # ``rows`` setting the climb stopped at (a later run allowing more probes again).
    ceiling: int | None = None
    latencies: dict[str, float] = field(default_factory=dict)
    chosen_by: str = ""
    probed_rows: int | None = None


@dataclass
class QuotaLedger:
    """Requests sent this quota week by runs on this lake, per key (``quota.key_id``, a
    digest, never the key), and when a key last met its spent quota. A new week starts
    the ledger again."""

    week_start: str  # ISO date-time of the week's Sunday 00:00 UTC
    requests: dict[str, int] = field(default_factory=dict)
    spent_at: dict[str, str] = field(default_factory=dict)  # key id -> when the quota ran out


# -- the store ----------------------------------------------------------------------------
class HarvestState:
    """Reads and writes ``_harvest/`` through a ``Lake``: one method per state file."""

    def __init__(self, lake: Lake, *, staged: bool = False) -> None:
        self.lake = lake
        # A staging area (``stage``): its data files are named ``.parquet.staged``
        # (``datafile``), so no reader's ``**/*.parquet`` glob finds them.
        self.staged = staged

    @property
    def fence(self) -> Callable[[], None] | None:
        """The lake handle's fence (``Lake.fence``, set by ``lock.holding``): every write
        through the lake checks it, a state file's as every other; the staging areas'
        lakes are children of this one and share it."""
        return self.lake.fence

    @fence.setter
    def fence(self, check: Callable[[], None] | None) -> None:
        self.lake.fence = check

    def check_fence(self) -> None:
        """Raise (``errors.LockLost``) if this run no longer holds the lake's lock: for a
        caller about to do slow work (encoding a shard) that a lost lock would waste; the
        writes themselves are fenced by the lake."""
        self.lake.check_fence()

    def _read(self, path: str) -> Any:
        if not self.lake.exists(path):
            return None
        return orjson.loads(self.lake.read_bytes(path))

    def _write(self, path: str, data: Any) -> None:
        self.lake.write_bytes(path, orjson.dumps(data, option=orjson.OPT_INDENT_2))

    # -- the lake itself ---------------------------------------------------------------
    def check_compatible(self) -> LakeMeta | None:
        """Refuse a lake written by an incompatible schema version; None for a new lake."""
        data = self._read(LAKE_META)
        if data is None:
            return None
        if not isinstance(data, dict) or data.get("format") != LAKE_FORMAT:
            raise LakeError(f"{self.lake.uri} is not a harvester lake ({LAKE_META})")
        meta = LakeMeta.from_json(data)
        if meta.schema_version != SCHEMA_VERSION:
            raise LakeError(
                f"{self.lake.uri} was written with schema version {meta.schema_version},"
                f" this harvester writes version {SCHEMA_VERSION}: harvest into a new lake"
            )
        return meta

    def require_lake(self) -> LakeMeta:
        """The lake's meta; LakeError when ``_harvest/lake.json`` is not there."""
        meta = self.check_compatible()
        if meta is None:
            raise LakeError(f"{self.lake.uri} is not a harvester lake (no {LAKE_META})")
        return meta

    def write_meta(self) -> None:
        if self._read(LAKE_META) is None:
            self._write(LAKE_META, asdict(LakeMeta(LAKE_FORMAT, SCHEMA_VERSION)))

    def save_source(self, record: SourceRecord) -> None:
        """Bind the lake to ``record``'s source: ``lake.json`` rewritten whole, with all it
        held, or written anew for a lake that had none yet (one planned before it was kept)."""
        meta = self.check_compatible() or LakeMeta(LAKE_FORMAT, SCHEMA_VERSION)
        meta.source = record
        self._write(LAKE_META, asdict(meta))

    # -- plan and markers --------------------------------------------------------------
    def load_plan(self) -> StoredPlan | None:
        data = self._read(PLAN)
        return None if data is None else StoredPlan.from_json(data)

    def save_plan(self, plan: StoredPlan) -> None:
        self._write(PLAN, plan.to_json())

    def marker_path(self, shard: Shard) -> str:
        return f"{SHARDS}/{shard.slug}.json"

    def save_marker(self, shard: Shard, marker: ShardMarker) -> None:
        self._write(self.marker_path(shard), asdict(marker))

    def load_marker(self, shard: Shard) -> ShardMarker | None:
        data = self._read(self.marker_path(shard))
        return None if data is None else _record(ShardMarker, data)

    def load_markers(self) -> dict[str, ShardMarker]:
        paths = self.lake.list_files(SHARDS, suffix=".json")
        markers = [_record(ShardMarker, orjson.loads(b)) for b in self.lake.read_many(paths)]
        return {m.key: m for m in markers}

    def leaves(self, plan: StoredPlan, markers: dict[str, ShardMarker]) -> list[Shard]:
        """The plan's shards with every split replaced by its children, recursively."""
        out: list[Shard] = []
        stack = list(reversed(plan.shards))
        while stack:
            shard = stack.pop()
            marker = markers.get(shard.key)
            if marker is not None and marker.status == "split":
                stack.extend(reversed([Shard.from_json(c) for c in marker.children]))
            else:
                out.append(shard)
        return out

    # -- completion and watermark ------------------------------------------------------
    def load_complete(self) -> CompleteRecord | None:
        data = self._read(COMPLETE)
        return None if data is None else _record(CompleteRecord, data)

    def save_complete(self, record: CompleteRecord) -> None:
        self._write(COMPLETE, asdict(record))

    def load_watermark(self) -> WatermarkRecord | None:
        """The last refresh's watermark record (None before the first refresh)."""
        data = self._read(WATERMARK)
        return None if data is None else _record(WatermarkRecord, data)

    def watermark(self) -> str | None:
        """The newest ``createDateTime`` the lake is known to hold everything up to: the last
        refresh's, else the completed harvest's. Every command asks this."""
        record = self.load_watermark()
        if record is not None:
            return record.watermark
        complete = self.load_complete()
        return None if complete is None else complete.watermark

    def save_watermark(self, record: WatermarkRecord) -> None:
        self._write(WATERMARK, asdict(record))

    # -- partition manifests -----------------------------------------------------------
    def manifest_path(self, partition: str) -> str:
        return f"{PARTITIONS}/{Partition.parse(partition).path.replace('/', '_')}.json"

    def load_manifests(self) -> dict[str, list[str]]:
        """Partition -> its files, for every partition refresh or compact rewrote."""
        paths = self.lake.list_files(PARTITIONS, suffix=".json")
        manifests = [
            _record(PartitionManifest, orjson.loads(b)) for b in self.lake.read_many(paths)
        ]
        return {m.partition: list(m.files) for m in manifests}

    def save_manifest(self, manifest: PartitionManifest) -> None:
        self._write(self.manifest_path(manifest.partition), asdict(manifest))

    # -- what the service was found to do ------------------------------------------------
    def load_service(self) -> ServiceProfile | None:
        data = self._read(SERVICE)
        return None if data is None else _record(ServiceProfile, data)

    def save_service(self, profile: ServiceProfile) -> None:
        self._write(SERVICE, asdict(profile))

    # -- coverage and pending drops ----------------------------------------------------------
    def load_coverage(self) -> Coverage | None:
        data = self._read(COVERAGE)
        return None if data is None else _record(Coverage, data)

    def coverage(self) -> Coverage:
        """The lake's coverage; a lake harvested before it was kept covers its plan's range
        with an open end (what refresh did then)."""
        stored = self.load_coverage()
        if stored is not None:
            return stored
        plan = self.load_plan()
        if plan is None:
            raise LakeError(f"{self.lake.uri} holds no harvest plan: run `harvester harvest`")
        return Coverage(plan.first.isoformat(), None)

    def save_coverage(self, coverage: Coverage) -> None:
        self._write(COVERAGE, asdict(coverage))

    def load_pending_drops(self) -> dict[str, PendingDrop]:
        data = self._read(PENDING_DROPS)
        if not isinstance(data, dict):
            return {}
        return {day: _record(PendingDrop, entry) for day, entry in data.items()}

    def save_pending_drops(self, drops: dict[str, PendingDrop]) -> None:
        if drops:
            self._write(PENDING_DROPS, {day: asdict(d) for day, d in sorted(drops.items())})
        else:
            self.lake.delete(PENDING_DROPS)

    # -- refresh: its checkpoint and staging areas ----------------------------------------
    def load_refresh_run(self) -> RefreshRun | None:
        data = self._read(REFRESH_RUN)
        return None if data is None else _record(RefreshRun, data)

    def save_refresh_run(self, run: RefreshRun) -> None:
        self._write(REFRESH_RUN, asdict(run))

    def refresh_interrupted(self) -> bool:
        return self.lake.exists(REFRESH_RUN)

    def stage(self, name: StageName) -> HarvestState:
        """A refresh staging area: a small lake of its own under ``_harvest/refresh/``."""
        # A child lake: the same writer, so the same fence.
        return HarvestState(self.lake.child(f"{REFRESH}/{name}"), staged=True)

    def clear_stage(self, name: StageName) -> None:
        """Empty one staging area (a reload's month, once committed)."""
        area = f"{REFRESH}/{name}"
        for path in self.lake.list_files(area):
            self.lake.delete(path)
        self.lake.remove_empty_dirs(area)

    def clear_refresh(self) -> None:
        """Drop the staging areas, then the checkpoint (last: the refresh is over)."""
        for path in self.lake.list_files(REFRESH):
            if path != REFRESH_RUN:
                self.lake.delete(path)
        self.lake.delete(REFRESH_RUN)
        self.lake.remove_empty_dirs(REFRESH)

    # -- quarantine files (their content is ``quarantine``'s) -------------------------------
    def quarantine_path(self, shard: Shard) -> str:
        return f"{QUARANTINE}/{shard.slug}{QUARANTINE_SUFFIX}"

    def promoted_quarantine_path(self, run_id: str, stage: StageName, staged_path: str) -> str:
        """Where a refresh keeps a staging area's quarantine file in the lake."""
        return f"{QUARANTINE}/refresh-{run_id}-{stage}-{staged_path.rsplit('/', 1)[-1]}"

    def promoted_prefix(self, run_id: str) -> str:
        """The file-name prefix of everything ``promoted_quarantine_path`` makes for a run."""
        return f"refresh-{run_id}-"

    def quarantine_files(self) -> list[str]:
        return self.lake.list_files(QUARANTINE, suffix=QUARANTINE_SUFFIX)

    # -- reports -------------------------------------------------------------------------
    # -- the change feed (its content is ``changes``') --------------------------------------
    def change_path(self, run_id: str, partition: str, step: str) -> str:
        """Where a run keeps the changes it made to one partition in one step."""
        part = Partition.parse(partition)
        return f"{CHANGES}/{run_id}/{part.year:04d}-{part.month:02d}-{step}{CHANGES_SUFFIX}"

    def change_files(self, run_id: str | None = None) -> list[str]:
        """The change feed's files (of one run, or of all), sorted: by run, then partition."""
        prefix = CHANGES if run_id is None else f"{CHANGES}/{run_id}"
        return sorted(self.lake.list_files(prefix, suffix=CHANGES_SUFFIX))

    def save_report(self, run_id: str, report: dict[str, Any]) -> str:
        path = f"{RUNS}/{run_id}.json"
        self._write(path, report)
        return f"{self.lake.uri.rstrip('/')}/{path}"

    # -- the quota ledger ----------------------------------------------------------------
    def load_quota(self) -> QuotaLedger | None:
        data = self._read(QUOTA)
        return None if data is None else _record(QuotaLedger, data)

    def save_quota(self, ledger: QuotaLedger) -> None:
        self._write(QUOTA, asdict(ledger))

    def load_reports(self) -> list[dict[str, Any]]:
        paths = self.lake.list_files(RUNS, suffix=".json")
        return [dict(orjson.loads(raw)) for raw in self.lake.read_many(paths)]

    def is_lake(self) -> bool:
        """Whether a harvest has begun here (``_harvest/lake.json`` exists)."""
        return self.lake.exists(LAKE_META)

    def has_plan(self) -> bool:
        return self.lake.exists(PLAN)
