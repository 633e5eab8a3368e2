"""How a shard is paged: by offset or by key, two strategies behind one ``Paging``
interface, chosen by ``paging_for`` from what the service was found to do
(``Limits.keyset``: the service honours ``sort=id asc``).

- ``OffsetPaging``: ``start`` grows by the docs served, in the index order; never past the
  paging window, so a shard larger than the window cannot be paged (``fits``), and a
  refusal past ``start = 0`` may be the window (``window`` is not None).
- ``KeyPaging``: ``start`` is always 0 and each request asks for the ids after the last
  one seen (``id:{last TO *]``, sorted by id); no window applies, each page's
  ``numFound`` counts only what is left (``total`` adds what came before), and a page
  whose ids do not ascend means the sort is no longer honoured (``in_order``).

The strategies are pure: they form requests and read pages, ``fetch`` sends them. A pass
over a shard uses one strategy from its first page to its last: a switch mid-pass (another
shard finding the sort no longer honoured) takes effect at the next pass, so one pass never
mixes cursors.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Protocol

from harvester.service.profile import KEY_SORT, Limits


@dataclass(frozen=True, slots=True)
class PageRequest:
    """What to send for one page: ``ApiClient.search(criteria, start, rows, sort)``."""

    criteria: str
    start: int
    rows: int
    sort: str | None = None


class Paging(Protocol):
    """One way to page a shard. ``start`` is always the number of docs already held (the
    docs before this page); ``cursor`` is what the next page continues after."""

    name: str  # "by offset" / "by key", as reports and logs say it

    def cursor(self, docs: list[dict[str, Any]]) -> str | None:
        """What a page after ``docs`` continues from (by key: the last id seen)."""
        ...

    def request(self, criteria: str, start: int, cursor: str | None, rows: int) -> PageRequest:
        """The request for the page at ``start``, after ``cursor``."""
        ...

    def total(self, num_found: int, start: int) -> int:
        """The shard's total as a page at ``start`` states it."""
        ...

    def window(self, limits: Limits) -> int | None:
        """The deepest ``start + rows`` this paging may reach; None: no window applies."""
        ...

    def fits(self, num_found: int, limits: Limits) -> bool:
        """Whether a shard of ``num_found`` rows can be paged whole (else it is split)."""
        ...

    def in_order(self, cursor: str | None, docs: list[dict[str, Any]]) -> bool:
        """Whether a page's docs follow ``cursor`` as this paging requires."""
        ...


class OffsetPaging:
    """By ``start`` and ``rows`` in the index order, within the paging window."""

    name = "by offset"

    def cursor(self, docs: list[dict[str, Any]]) -> str | None:
        return None  # the offset is the cursor: ``start`` says it all

    def request(self, criteria: str, start: int, cursor: str | None, rows: int) -> PageRequest:
        return PageRequest(criteria, start, rows)

    def total(self, num_found: int, start: int) -> int:
        return num_found

    def window(self, limits: Limits) -> int | None:
        return limits.window

    def fits(self, num_found: int, limits: Limits) -> bool:
        return num_found <= limits.window

    def in_order(self, cursor: str | None, docs: list[dict[str, Any]]) -> bool:
        return True  # the index order is whatever the service serves


class KeyPaging:
    """By id under ``sort=id asc``: each page the ids after the last one seen."""

    name = "by key"

    def cursor(self, docs: list[dict[str, Any]]) -> str | None:
        for doc in reversed(docs):
            value = doc.get("id")
            if isinstance(value, str) and value:
                return value
        return None

    def request(self, criteria: str, start: int, cursor: str | None, rows: int) -> PageRequest:
        keyed = criteria if cursor is None else f"({criteria}) AND id:{{{cursor} TO *]"
        return PageRequest(keyed, 0, rows, KEY_SORT)

    def total(self, num_found: int, start: int) -> int:
        return num_found + start  # numFound counts what is left after the cursor

    def window(self, limits: Limits) -> int | None:
        return None

    def fits(self, num_found: int, limits: Limits) -> bool:
        return True

    def in_order(self, cursor: str | None, docs: list[dict[str, Any]]) -> bool:
        ids = [str(d.get("id", "")) for d in docs]
        if cursor is not None:
            ids.insert(0, cursor)
        return all(a < b for a, b in itertools.pairwise(ids))


OFFSET = OffsetPaging()
KEY = KeyPaging()


def paging_for(limits: Limits) -> Paging:
    """The paging the service's limits allow now: by key when the sort is honoured."""
    return KEY if limits.keyset else OFFSET
