"""Compare a lake with the simulator's ground truth, row by row and field by field.

The expected value of each field is derived here from the served JSON, independently of
``harvester.service.decode`` (re-using the decoder would make the comparison circular).
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections import Counter
from typing import Any

import pyarrow.parquet as pq

from harvester.fields import BOOL_FIELDS, FIELD_SET, STRING_FIELDS
from harvester.storage.store import Lake

# Field names come from harvester.fields; the expected values below are derived here.
STRINGS = STRING_FIELDS
FLAGS = BOOL_FIELDS
KNOWN = FIELD_SET
TRUE = {"1", "1.0", "true"}
FALSE = {"0", "0.0", "false"}


def _flag(value: Any) -> bool | None:
    if value is None:
        return None
    text = str(value).lower()
    assert text in TRUE | FALSE, f"truth holds an unexpected flag value {value!r}"
    return text in TRUE


def expected_row(doc: dict[str, Any]) -> dict[str, Any]:
    """What the lake must hold for one served row."""
    row: dict[str, Any] = {"id": doc["id"]}
    row["submissionDate"] = dt.date.fromisoformat(doc["submissionDate"][:10])
    created = doc.get("createDateTime")
    row["createDateTime"] = dt.datetime.fromisoformat(created.rstrip("Z")) if created else None
    for name in STRINGS:
        row[name] = doc.get(name)
    for name in FLAGS:
        row[name] = _flag(doc.get(name))
    row["cite103Max"] = None if doc.get("cite103Max") is None else int(doc["cite103Max"])
    claims = doc.get("claimNumberArrayDocument")
    row["claimNumberArrayDocument"] = None if claims is None else list(claims)
    extra = {k: v for k, v in doc.items() if k not in KNOWN}
    row["unknownFields"] = extra or None
    return row


def is_decodable(doc: dict[str, Any]) -> bool:
    """The rows the harvester must quarantine rather than write: no id, or no usable date."""
    if not isinstance(doc.get("id"), str) or not doc["id"]:
        return False
    try:
        dt.date.fromisoformat(str(doc.get("submissionDate", ""))[:10])
    except ValueError:
        return False
    return True


def read_lake(lake: Lake) -> list[dict[str, Any]]:
    """Every row readers see: data files only, skipping `_` and `.` paths like DuckDB/Spark."""
    rows: list[dict[str, Any]] = []
    for path in lake.list_files("", suffix=".parquet"):
        if any(part.startswith(("_", ".")) for part in path.split("/")):
            continue
        table = pq.read_table(io.BytesIO(lake.read_bytes(path)))
        for row in table.to_pylist():
            if row.get("unknownFields") is not None:
                row["unknownFields"] = json.loads(row["unknownFields"])
            rows.append(row)
    return rows


def read_quarantine(lake: Lake) -> list[dict[str, Any]]:
    out = []
    for path in lake.list_files("_harvest/quarantine", suffix=".jsonl"):
        out.extend(json.loads(line) for line in lake.read_bytes(path).splitlines() if line)
    return out


def assert_lake_equals_truth(lake: Lake, truth: list[dict[str, Any]]) -> None:
    """Every decodable truth row exactly once with every field equal; the rest quarantined."""
    rows = read_lake(lake)
    counts = Counter(r["id"] for r in rows)
    duplicated = [i for i, n in counts.items() if n > 1]
    assert not duplicated, f"{len(duplicated)} ids appear more than once, e.g. {duplicated[:3]}"
    by_id = {r["id"]: r for r in rows}
    good = [d for d in truth if is_decodable(d)]
    expected_ids = {d["id"] for d in good}
    missing = expected_ids - by_id.keys()
    extra = by_id.keys() - expected_ids
    assert not missing, (
        f"{len(missing)} truth rows missing from the lake, e.g. {sorted(missing)[:3]}"
    )
    assert not extra, f"{len(extra)} lake rows not in the truth, e.g. {sorted(extra)[:3]}"
    for doc in good:
        want = expected_row(doc)
        got = {k: by_id[doc["id"]].get(k) for k in want}
        assert got == want, f"row {doc['id']} differs: lake {got} != truth {want}"
    bad = [d for d in truth if not is_decodable(d)]
    if bad:
        quarantined = read_quarantine(lake)
        assert len(quarantined) == len(bad), (len(quarantined), len(bad))
        assert all(q.get("reason") for q in quarantined)


def within(truth: list[dict[str, Any]], first: str, last: str) -> list[dict[str, Any]]:
    """The truth rows of a lake whose coverage is ``first``..``last`` (ISO days)."""
    return [d for d in truth if first <= str(d.get("submissionDate", ""))[:10] <= last]
