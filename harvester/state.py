"""Everything the harvester remembers, kept under ``<lake>/_harvest/`` next to the data.

Keeping state in the lake (not on the machine that ran) means any machine can resume or
inspect a harvest, on local disk and on S3 alike. Every file here is written whole and
atomically (one object put, or temp + rename locally), and a shard's marker is written only
after its data files are complete, so a marker always tells the truth about the data.

Layout::

    _harvest/lake.json                 format and schema version of the lake
    _harvest/plan.json                 the harvest's range and shards (a resume reuses them)
    _harvest/shards/<slug>.json        one marker per finished shard: done, split or failed
    _harvest/quarantine/<slug>.jsonl   rows that could not be decoded, with the reason
    _harvest/pages/<slug>.log          pages of a shard not yet committed (``checkpoint``;
                                       on S3 one object per page, <slug>/<start>.zst)
    _harvest/runs/<run-id>.json        one report per run
    _harvest/complete.json             written when every shard of the plan is done
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson

from harvester.errors import LakeError
from harvester.lake import Lake
from harvester.plan import Shard
from harvester.schema import SCHEMA_VERSION

ROOT = "_harvest"
LAKE_FORMAT = "harvester-lake"
MarkerStatus = Literal["done", "split", "failed"]


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


@dataclass
class StoredPlan:
    """The shards of one harvest, fixed when it started so a resume uses the same ones."""

    first: dt.date
    last: dt.date
    date_template: str
    shard_size: int
    shards: list[Shard]
    created_at: str = field(default_factory=utc_now)

    def to_json(self) -> dict[str, Any]:
        return {
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
            "date_template": self.date_template,
            "shard_size": self.shard_size,
            "created_at": self.created_at,
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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShardMarker:
        return cls(**data)


def _quarantine_day(line: bytes) -> dt.date | None:
    """The mail date of a quarantined row, when it has a readable one."""
    doc = orjson.loads(line).get("doc") or {}
    try:
        return dt.date.fromisoformat(str(doc.get("submissionDate", ""))[:10])
    except ValueError:
        return None


class HarvestState:
    """Reads and writes ``_harvest/`` through a ``Lake``."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake

    def _read(self, path: str) -> Any:
        if not self.lake.exists(path):
            return None
        return orjson.loads(self.lake.read_bytes(path))

    def _write(self, path: str, data: Any) -> None:
        self.lake.write_bytes(path, orjson.dumps(data, option=orjson.OPT_INDENT_2))

    # -- the lake itself ---------------------------------------------------------------
    def check_compatible(self) -> dict[str, Any] | None:
        """Refuse a lake written by an incompatible schema version; None for a new lake."""
        meta = self._read(f"{ROOT}/lake.json")
        if meta is None:
            return None
        if meta.get("format") != LAKE_FORMAT:
            raise LakeError(f"{self.lake.uri} is not a harvester lake (_harvest/lake.json)")
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise LakeError(
                f"{self.lake.uri} was written with schema version {meta.get('schema_version')},"
                f" this harvester writes version {SCHEMA_VERSION}: harvest into a new lake"
            )
        return dict(meta)

    def write_meta(self) -> None:
        if self._read(f"{ROOT}/lake.json") is None:
            meta = {
                "format": LAKE_FORMAT,
                "schema_version": SCHEMA_VERSION,
                "created_at": utc_now(),
            }
            self._write(f"{ROOT}/lake.json", meta)

    # -- plan and markers --------------------------------------------------------------
    def load_plan(self) -> StoredPlan | None:
        data = self._read(f"{ROOT}/plan.json")
        return None if data is None else StoredPlan.from_json(data)

    def save_plan(self, plan: StoredPlan) -> None:
        self._write(f"{ROOT}/plan.json", plan.to_json())

    def marker_path(self, shard: Shard) -> str:
        return f"{ROOT}/shards/{shard.slug}.json"

    def save_marker(self, shard: Shard, marker: ShardMarker) -> None:
        self._write(self.marker_path(shard), asdict(marker))

    def load_marker(self, shard: Shard) -> ShardMarker | None:
        data = self._read(self.marker_path(shard))
        return None if data is None else ShardMarker.from_json(data)

    def load_markers(self) -> dict[str, ShardMarker]:
        paths = self.lake.list_files(f"{ROOT}/shards", suffix=".json")
        markers = [ShardMarker.from_json(orjson.loads(b)) for b in self.lake.read_many(paths)]
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

    # -- quarantine, reports, completion -----------------------------------------------
    def quarantine_path(self, shard: Shard) -> str:
        return f"{ROOT}/quarantine/{shard.slug}.jsonl"

    def write_quarantine(self, shard: Shard, rows: list[dict[str, Any]]) -> None:
        path = self.quarantine_path(shard)
        if rows:
            self.lake.write_bytes(path, b"".join(orjson.dumps(r) + b"\n" for r in rows))
        else:
            self.lake.delete(path)

    def quarantined_per_day(self) -> dict[dt.date, int]:
        """Distinct quarantined rows per mail date (rows with no readable date are left out)."""
        seen: dict[dt.date, set[bytes]] = {}
        paths = self.lake.list_files(f"{ROOT}/quarantine", suffix=".jsonl")
        for raw in self.lake.read_many(paths):
            for line in raw.splitlines():
                day = _quarantine_day(line)
                if day is not None:
                    doc = orjson.loads(line).get("doc") or {}
                    seen.setdefault(day, set()).add(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS))
        return {day: len(docs) for day, docs in seen.items()}

    def drop_quarantined_days(self, days: set[dt.date], keep_prefix: str) -> None:
        """Forget quarantined rows of days that were just fetched again whole: the new fetch
        quarantined whatever is still bad there (files named ``keep_prefix``...)."""
        if not days:
            return
        for path in self.lake.list_files(f"{ROOT}/quarantine", suffix=".jsonl"):
            if path.rsplit("/", 1)[-1].startswith(keep_prefix):
                continue
            lines = self.lake.read_bytes(path).splitlines()
            kept = [line for line in lines if line and _quarantine_day(line) not in days]
            if len(kept) == len(lines):
                continue
            if kept:
                self.lake.write_bytes(path, b"".join(line + b"\n" for line in kept))
            else:
                self.lake.delete(path)

    def save_report(self, run_id: str, report: dict[str, Any]) -> str:
        path = f"{ROOT}/runs/{run_id}.json"
        self._write(path, report)
        return f"{self.lake.uri.rstrip('/')}/{path}"

    def load_complete(self) -> dict[str, Any] | None:
        data = self._read(f"{ROOT}/complete.json")
        return None if data is None else dict(data)

    def save_complete(self, data: dict[str, Any]) -> None:
        self._write(f"{ROOT}/complete.json", data)
