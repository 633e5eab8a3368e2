"""``DataFileName``: every name the harvester gives a data file, built and parsed here only.

Two shapes, each ending in ``.parquet`` when committed:

- a **shard file**, ``part-<slug>.parquet``: the rows one shard of a harvest (or of a
  staging area) put in one partition. The name depends only on the shard's key, so writing
  the shard again replaces its file instead of adding a second copy.
- a **rewrite file**, ``part-<run-id>-<step>-NNNNN.parquet``: a partition written again by
  a run (``step`` says which part of it: ``changed``, ``days``, ``reload``, ``compact``,
  ...). A new run id per run, so new files never collide with the ones they replace.

A **staged** copy (a refresh's staging areas under ``_harvest/``) carries the same name
with ``.staged`` after it. That suffix is the whole of why staging is invisible: DuckDB's
``**/*.parquet`` glob descends into ``_``- and ``.``-prefixed directories alike, so the only
files a reader may find are committed ones, and only they end in ``.parquet``. (Spark's
partition discovery skips ``_harvest/`` by itself.)

``parse`` reads back exactly the names ``name`` makes and refuses every other, which makes
it the test of "the harvester wrote this" that ``commit.is_own_file`` asks: a file that
does not parse is foreign, and never deleted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from harvester.storage.shard import Shard

PREFIX: Final = "part-"
SUFFIX: Final = ".parquet"
STAGED_SUFFIX: Final = ".parquet.staged"
# ``report.new_run_id``: ``20240102T030405Z-<command>-<hex>``.
_RUN_ID: Final = r"\d{8}T\d{6}Z-[a-z]+-[0-9a-f]+"
_REWRITE: Final = re.compile(rf"({_RUN_ID})-([a-z]+)-(\d{{5}})")
_STEP: Final = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class DataFileName:
    """One data file's name: a shard's (``shard`` set) or a rewrite's (``run_id``, ``step``,
    ``number`` set), committed or ``staged``."""

    shard: Shard | None = None
    run_id: str | None = None
    step: str | None = None
    number: int = 0
    staged: bool = False

    def __post_init__(self) -> None:
        rewrite = self.run_id is not None
        if rewrite == (self.shard is not None):
            raise ValueError("a data file name is a shard's or a rewrite's, not both")
        if rewrite and not (
            re.fullmatch(_RUN_ID, self.run_id or "")
            and _STEP.fullmatch(self.step or "")
            and 0 <= self.number <= 99_999
        ):
            raise ValueError(f"not a rewrite file name: {self.run_id!r} {self.step!r}")

    @classmethod
    def of_shard(cls, shard: Shard, *, staged: bool = False) -> DataFileName:
        return cls(shard=shard, staged=staged)

    @classmethod
    def of_rewrite(
        cls, run_id: str, step: str, number: int, *, staged: bool = False
    ) -> DataFileName:
        return cls(run_id=run_id, step=step, number=number, staged=staged)

    @property
    def stem(self) -> str:
        if self.shard is not None:
            return f"{PREFIX}{self.shard.slug}"
        return f"{PREFIX}{self.run_id}-{self.step}-{self.number:05d}"

    @property
    def name(self) -> str:
        return self.stem + (STAGED_SUFFIX if self.staged else SUFFIX)

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, name: str) -> DataFileName | None:
        """The name ``name`` is, or None for any name this type would not make."""
        staged = name.endswith(STAGED_SUFFIX)
        suffix = STAGED_SUFFIX if staged else SUFFIX
        if not (name.startswith(PREFIX) and name.endswith(suffix)):
            return None
        stem = name[len(PREFIX) : -len(suffix)]
        match = _REWRITE.fullmatch(stem)
        if match is not None:
            return cls.of_rewrite(match[1], match[2], int(match[3]), staged=staged)
        try:
            shard = Shard.parse_slug(stem)
        except ValueError:
            return None
        return cls.of_shard(shard, staged=staged)


def is_data_file_name(name: str) -> bool:
    """True for a name ``DataFileName`` makes, committed or staged."""
    return DataFileName.parse(name) is not None
