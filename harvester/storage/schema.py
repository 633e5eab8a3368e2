"""The 31 served fields and the Arrow schema of the lake's Parquet files.

``docs/schema.md`` is the human-readable contract (types per engine, null rules, partitioning).
Change ``ARROW_SCHEMA`` only together with ``SCHEMA_VERSION``: a lake records the version it was
written with (``_harvest/lake.json`` and each file's key-value metadata) and a harvester refuses
to append to a lake of another version, so files of two layouts never mix in one lake.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

from harvester.fields import BOOL_FIELDS, FIELDS, INT_FIELDS, LIST_FIELDS, STRING_FIELDS

SCHEMA_VERSION: Final = 1
UNKNOWN_FIELDS_COLUMN: Final = "unknownFields"
# Hive partition columns: only in the directory names, never inside the files.
PARTITION_COLUMNS: Final[tuple[str, ...]] = ("year", "month")


def _type_of(name: str) -> pa.DataType:
    if name in ("id", *STRING_FIELDS):
        return pa.string()
    if name == "submissionDate":
        return pa.date32()
    if name == "createDateTime":
        # Naive: the service serves no zone. Values are UTC by convention (docs/schema.md).
        return pa.timestamp("us")
    if name in BOOL_FIELDS:
        return pa.bool_()
    if name in INT_FIELDS:
        return pa.int32()
    if name in LIST_FIELDS:
        return pa.list_(pa.string())
    raise AssertionError(f"no type for field {name}")  # pragma: no cover - caught at import


_NOT_NULL: Final = frozenset({"id", "submissionDate"})

ARROW_SCHEMA: Final[pa.Schema] = pa.schema(
    [pa.field(name, _type_of(name), nullable=name not in _NOT_NULL) for name in FIELDS]
    + [pa.field(UNKNOWN_FIELDS_COLUMN, pa.string())],
    metadata={"harvester.schema_version": str(SCHEMA_VERSION)},
)

COLUMNS: Final[tuple[str, ...]] = (*FIELDS, UNKNOWN_FIELDS_COLUMN)
