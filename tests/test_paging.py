"""The paging strategies: the requests they form, a page's cursor and total, the window
and when a shard fits, ids in order; and the choice between them."""

from __future__ import annotations

from typing import Any

import pytest

from harvester.service.paging import (
    KeyPaging,
    OffsetPaging,
    PageRequest,
    Paging,
    paging_for,
)
from harvester.service.profile import KEY_SORT, Limits

A, B, C = "a" * 32, "b" * 32, "c" * 32


def limits(*, keyset: bool, window: int = 100) -> Limits:
    return Limits(page_size=10, window=window, shard_size_setting=1_000, keyset=keyset)


def docs(*ids: str) -> list[dict[str, Any]]:
    return [{"id": i} for i in ids]


def test_the_choice_follows_the_limits_and_a_stopped_sort() -> None:
    keyed = limits(keyset=True)
    assert isinstance(paging_for(keyed), KeyPaging)
    keyed.stop_keyset("a page's ids did not ascend")
    assert isinstance(paging_for(keyed), OffsetPaging)
    assert isinstance(paging_for(limits(keyset=False)), OffsetPaging)


@pytest.mark.parametrize("paging", [OffsetPaging(), KeyPaging()])
def test_both_are_pagings(paging: Paging) -> None:
    assert paging.name in ("by offset", "by key")


def test_offset_requests_start_where_the_docs_end_unsorted() -> None:
    paging = OffsetPaging()
    cursor = paging.cursor(docs(A, B))
    assert cursor is None
    assert paging.request("q", 0, None, 10) == PageRequest("q", 0, 10, None)
    assert paging.request("q", 20, cursor, 7) == PageRequest("q", 20, 7, None)


def test_offset_totals_are_as_served_and_bounded_by_the_window() -> None:
    paging, lim = OffsetPaging(), limits(keyset=False, window=100)
    assert paging.total(57, 40) == 57
    assert paging.window(lim) == 100
    assert paging.fits(100, lim) and not paging.fits(101, lim)
    assert paging.in_order(None, docs(C, A, B))  # the index order is not checked


def test_key_requests_ask_after_the_last_id_from_start_zero_sorted() -> None:
    paging = KeyPaging()
    assert paging.request("q", 0, None, 10) == PageRequest("q", 0, 10, KEY_SORT)
    cursor = paging.cursor(docs(A, B))
    assert cursor == B
    assert paging.request("x:1 OR x:2", 2, cursor, 10) == PageRequest(
        f"(x:1 OR x:2) AND id:{{{B} TO *]", 0, 10, KEY_SORT
    )


def test_key_cursor_skips_docs_without_an_id() -> None:
    paging = KeyPaging()
    assert paging.cursor([{"id": A}, {"id": ""}, {"other": 1}]) == A
    assert paging.cursor([{"id": None}]) is None
    assert paging.cursor([]) is None


def test_key_totals_add_what_came_before_and_no_window_applies() -> None:
    paging, lim = KeyPaging(), limits(keyset=True, window=100)
    assert paging.total(57, 40) == 97  # numFound counts what is left after the cursor
    assert paging.window(lim) is None
    assert paging.fits(10**9, lim)


def test_key_pages_must_ascend_past_the_cursor() -> None:
    paging = KeyPaging()
    assert paging.in_order(None, docs(A, B, C))
    assert paging.in_order(A, docs(B, C))
    assert not paging.in_order(B, docs(A))  # behind the cursor: the sort is not honoured
    assert not paging.in_order(None, docs(B, A))
    assert not paging.in_order(None, docs(A, A))  # served twice
    assert paging.in_order(C, [])
