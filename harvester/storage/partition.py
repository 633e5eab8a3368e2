"""``Partition``: one ``year=YYYY/month=M`` directory of the lake, printed and parsed here only.

Values from the data reach a path only through ``Partition.of(day)``, which accepts nothing
but a date whose year lies in ``MIN_YEAR..MAX_YEAR``; every path read back (a manifest, a
marker's file list, a listing) goes through ``Partition.parse`` or ``Partition.of_file``,
which refuse anything else. Months are unpadded (``month=7``) so DuckDB and Spark infer an
integer partition column; years are four digits.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Final

MIN_YEAR: Final = 1900
MAX_YEAR: Final = 2999

_PATH: Final = re.compile(r"year=(\d{4})/month=([1-9]|1[0-2])")
# A data file's name is ``datafile.DataFileName``'s to judge; here only its place.
_FILE: Final = re.compile(r"(year=\d{4}/month=(?:[1-9]|1[0-2]))/[^/]+\.parquet(?:\.staged)?")


@dataclass(frozen=True, order=True)
class Partition:
    """A calendar month of mail dates; orders by time. Build with ``of``, ``parse``, ``of_file``."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not (MIN_YEAR <= self.year <= MAX_YEAR and 1 <= self.month <= 12):
            raise ValueError(f"no partition for year {self.year} month {self.month}")

    @classmethod
    def of(cls, day: dt.date) -> Partition:
        """The partition of a mail date."""
        if not isinstance(day, dt.date):
            raise TypeError(f"a partition is made from a date, not {type(day).__name__}")
        return cls(day.year, day.month)

    @classmethod
    def parse(cls, path: str) -> Partition:
        """``year=2019/month=7`` -> Partition(2019, 7); anything else is refused."""
        match = _PATH.fullmatch(path)
        if match is None:
            raise ValueError(f"not a partition path: {path!r}")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def of_file(cls, path: str) -> Partition:
        """The partition of a data file path ``year=2019/month=7/<name>.parquet`` (or
        ``.parquet.staged``, a staging area's copy)."""
        match = _FILE.fullmatch(path)
        if match is None:
            raise ValueError(f"not a data file path: {path!r}")
        return cls.parse(match[1])

    @property
    def path(self) -> str:
        return f"year={self.year:04d}/month={self.month}"

    @property
    def first_day(self) -> dt.date:
        return dt.date(self.year, self.month, 1)

    def contains(self, day: dt.date) -> bool:
        return (day.year, day.month) == (self.year, self.month)

    def __str__(self) -> str:
        return self.path
