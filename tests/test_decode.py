"""decode_docs: served forms, nulls, unknown fields and every quarantine rule."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from harvester.fields import FIELDS
from harvester.service.decode import DecodeResult, decode_docs
from harvester.storage.schema import ARROW_SCHEMA

SAMPLES = Path(__file__).parent / "fixtures" / "records-by-application.json"
SAMPLE_TEXT = """{"actionTypeCategory": "", "aliceIndicator": false, "allowedClaimIndicator": false,
 "bilskiIndicator": false, "cite103EQ1": 1, "cite103GT3": 0, "cite103Max": 2,
 "claimNumberArrayDocument": ["1,2,3,4,5"], "closingMissing": 0,
 "createDateTime": "2025-07-15T21:22:06", "createUserIdentifier": "ETL_SYS",
 "formParagraphMissing": 0, "groupArtUnitNumber": "1713", "hasRej101": 0, "hasRej102": 0,
 "hasRej103": 1, "hasRej112": 1, "hasRejDP": 0, "headerMissing": 0,
 "id": "ed812f618d3a72142850669b6b608ac3", "legacyDocumentCodeIdentifier": "CTNF",
 "legalSectionCode": "", "mayoIndicator": false, "myriadIndicator": false,
 "nationalClass": "438", "nationalSubclass": "725000",
 "obsoleteDocumentIdentifier": "GTYKOVWIPPOPPY5", "paragraphNumber": "",
 "patentApplicationNumber": "12190351", "rejectFormMissmatch": 0,
 "submissionDate": "2011-10-19T00:00:00"}"""
FLAGS = (
    "hasRej101",
    "hasRej102",
    "hasRej103",
    "hasRej112",
    "hasRejDP",
    "headerMissing",
    "formParagraphMissing",
    "rejectFormMissmatch",
    "closingMissing",
    "cite103EQ1",
    "cite103GT3",
    "aliceIndicator",
    "bilskiIndicator",
    "mayoIndicator",
    "myriadIndicator",
    "allowedClaimIndicator",
)


def doc(**changes: Any) -> dict[str, Any]:
    """A served row (the second sample), with fields changed; a value of ... removes it."""
    row: dict[str, Any] = json.loads(SAMPLE_TEXT)
    for name, value in changes.items():
        if value is ...:
            del row[name]
        else:
            row[name] = value
    return row


def only_row(result: DecodeResult) -> dict[str, Any]:
    assert result.quarantined == [], result.quarantined
    assert result.table.num_rows == 1
    rows: list[dict[str, Any]] = result.table.to_pylist()
    return rows[0]


def reason_of(**changes: Any) -> str:
    result = decode_docs([doc(**changes)], source="2011-10-19")
    assert result.table.num_rows == 0
    assert len(result.quarantined) == 1
    quarantined = result.quarantined[0]
    assert quarantined.source == "2011-10-19"
    assert quarantined.doc == doc(**changes)  # kept verbatim
    return quarantined.reason


# --- the captured sample rows ------------------------------------------------------------
def test_three_sample_rows_decode_to_expected_values() -> None:
    served = json.loads(SAMPLES.read_text())["response"]["docs"]
    result = decode_docs(served, source="sample")
    assert result.quarantined == []
    assert not result.unknown_fields
    assert result.table.schema == ARROW_SCHEMA
    rows = result.table.to_pylist()
    assert [r["id"] for r in rows] == [
        "14642e2cc522ac577468fb6fc026d135",
        "ed812f618d3a72142850669b6b608ac3",
        "2eb04a3de9ee5c910a2644dc0a02d5e3",
    ]
    assert [r["claimNumberArrayDocument"] for r in rows] == [["1"], ["1,2,3,4,5"], ["1,2,3,4,5"]]
    assert [r["legalSectionCode"] for r in rows] == ["112", "", "103"]
    assert [r["actionTypeCategory"] for r in rows] == ["", "", "rejected"]
    assert [r["paragraphNumber"] for r in rows] == ["", "", "a"]
    for row in rows:
        assert row["patentApplicationNumber"] == "12190351"
        assert row["obsoleteDocumentIdentifier"] == "GTYKOVWIPPOPPY5"
        assert row["legacyDocumentCodeIdentifier"] == "CTNF"
        assert row["submissionDate"] == dt.date(2011, 10, 19)
        assert row["createDateTime"] == dt.datetime(2025, 7, 15, 21, 22, 6)
        assert row["createUserIdentifier"] == "ETL_SYS"
        assert row["groupArtUnitNumber"] == "1713"
        assert row["nationalClass"] == "438"
        assert row["nationalSubclass"] == "725000"
        assert row["hasRej101"] is False
        assert row["hasRej102"] is False
        assert row["hasRej103"] is True
        assert row["hasRej112"] is True
        assert row["hasRejDP"] is False
        assert row["headerMissing"] is False
        assert row["formParagraphMissing"] is False
        assert row["rejectFormMissmatch"] is False
        assert row["closingMissing"] is False
        assert row["cite103EQ1"] is True
        assert row["cite103GT3"] is False
        assert row["cite103Max"] == 2
        assert row["aliceIndicator"] is False
        assert row["bilskiIndicator"] is False
        assert row["mayoIndicator"] is False
        assert row["myriadIndicator"] is False
        assert row["allowedClaimIndicator"] is False
        assert row["unknownFields"] is None
    assert list(rows[0]) == [*FIELDS, "unknownFields"]


def test_empty_input_gives_empty_table_with_schema() -> None:
    result = decode_docs([], source="empty")
    assert result.table.num_rows == 0
    assert result.table.schema == ARROW_SCHEMA


# --- flags -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("served", "expected"),
    [
        (0, False),
        (1, True),
        (0.0, False),
        (1.0, True),
        (True, True),
        (False, False),
        ("0", False),
        ("1", True),
        ("true", True),
        ("false", False),
        ("TRUE", True),
        ("False", False),
        ("fAlSe", False),
    ],
)
@pytest.mark.parametrize("name", ["hasRej101", "cite103GT3", "aliceIndicator"])
def test_every_flag_form(name: str, served: Any, expected: bool) -> None:
    assert only_row(decode_docs([doc(**{name: served})], "s"))[name] is expected


def test_all_flag_columns_mixed_forms_in_one_batch() -> None:
    forms = [0, 1, 0.0, 1.0, True, False, "0", "1", "true", "false"]
    truth = [False, True, False, True, True, False, False, True, True, False]
    docs = [doc(id=f"{i:032x}", **dict.fromkeys(FLAGS, form)) for i, form in enumerate(forms)]
    table = decode_docs(docs, "s").table
    for name in FLAGS:
        assert table.column(name).to_pylist() == truth, name


@pytest.mark.parametrize("bad", [2, -1, 0.5, "yes", "", "2", [1], {"a": 1}, float("nan")])
def test_bad_flag_value_is_quarantined_naming_field_and_value(bad: Any) -> None:
    reason = reason_of(hasRejDP=bad)
    assert reason.startswith("bad hasRejDP: ")
    assert repr(bad)[:20] in reason


def test_long_bad_value_is_truncated_in_reason() -> None:
    reason = reason_of(mayoIndicator="x" * 500)
    assert reason.startswith("bad mayoIndicator: 'xxx")
    assert len(reason) < 120


# --- missing values, "" and drift ---------------------------------------------------------
def test_missing_non_key_fields_are_null() -> None:
    optional = [f for f in FIELDS if f not in ("id", "submissionDate")]
    row = only_row(decode_docs([doc(**dict.fromkeys(optional, ...))], "s"))
    assert row["id"] == "ed812f618d3a72142850669b6b608ac3"
    assert row["submissionDate"] == dt.date(2011, 10, 19)
    assert all(row[f] is None for f in optional)
    assert row["unknownFields"] is None


def test_explicit_null_is_null_and_empty_string_stays_empty() -> None:
    rows = decode_docs(
        [
            doc(id="a" * 32, paragraphNumber=None, hasRej101=None, cite103Max=None),
            doc(id="b" * 32, paragraphNumber="", claimNumberArrayDocument=None),
        ],
        "s",
    ).table.to_pylist()
    assert rows[0]["paragraphNumber"] is None
    assert rows[0]["hasRej101"] is None
    assert rows[0]["cite103Max"] is None
    assert rows[1]["paragraphNumber"] == ""
    assert rows[1]["claimNumberArrayDocument"] is None


def test_lossless_drift_forms_are_accepted() -> None:
    row = only_row(
        decode_docs(
            [doc(cite103Max=3.0, patentApplicationNumber=12190351, claimNumberArrayDocument="7")],
            "s",
        )
    )
    assert row["cite103Max"] == 3
    assert row["patentApplicationNumber"] == "12190351"
    assert row["claimNumberArrayDocument"] == ["7"]
    assert only_row(decode_docs([doc(cite103Max="4")], "s"))["cite103Max"] == 4
    row = only_row(decode_docs([doc(claimNumberArrayDocument=[1, 2])], "s"))
    assert row["claimNumberArrayDocument"] == ["1", "2"]
    row = only_row(decode_docs([doc(claimNumberArrayDocument=[None, "3"])], "s"))
    assert row["claimNumberArrayDocument"] == [None, "3"]
    row = only_row(decode_docs([doc(claimNumberArrayDocument=[])], "s"))
    assert row["claimNumberArrayDocument"] == []


@pytest.mark.parametrize(
    ("served", "submission", "created"),
    [
        ("2011-10-19T00:00:00", dt.date(2011, 10, 19), dt.datetime(2011, 10, 19)),
        ("2011-10-19T00:00:00Z", dt.date(2011, 10, 19), dt.datetime(2011, 10, 19)),
        ("2011-10-19", dt.date(2011, 10, 19), dt.datetime(2011, 10, 19)),
        (
            "2011-10-19T21:22:06.123Z",
            dt.date(2011, 10, 19),
            dt.datetime(2011, 10, 19, 21, 22, 6, 123000),
        ),
        (
            "2011-10-19T21:22:06.1234567",
            dt.date(2011, 10, 19),
            dt.datetime(2011, 10, 19, 21, 22, 6, 123456),
        ),
        # An offset: the timestamp becomes UTC; the mail date stays the calendar day written.
        ("2011-10-19T01:00:00+02:00", dt.date(2011, 10, 19), dt.datetime(2011, 10, 18, 23)),
    ],
)
def test_date_forms(served: str, submission: dt.date, created: dt.datetime) -> None:
    row = only_row(decode_docs([doc(submissionDate=served, createDateTime=served)], "s"))
    assert row["submissionDate"] == submission
    assert row["createDateTime"] == created


def test_timestamps_are_naive_microseconds() -> None:
    table = decode_docs([doc()], "s").table
    assert table.schema.field("createDateTime").type == pa.timestamp("us")
    assert table.schema.field("submissionDate").type == pa.date32()


# --- unknown fields ----------------------------------------------------------------------
def test_unknown_fields_are_kept_as_json_and_counted() -> None:
    docs = [
        doc(id="a" * 32, newScore=0.5, zNote={"k": [1, 2]}),
        doc(id="b" * 32),
        doc(id="c" * 32, newScore=None, paragraphNumber=...),  # missing + unknown, len 31
    ]
    result = decode_docs(docs, "s")
    assert result.quarantined == []
    rows = result.table.to_pylist()
    assert json.loads(rows[0]["unknownFields"]) == {"newScore": 0.5, "zNote": {"k": [1, 2]}}
    assert rows[1]["unknownFields"] is None
    assert json.loads(rows[2]["unknownFields"]) == {"newScore": None}
    assert rows[2]["paragraphNumber"] is None
    assert result.unknown_fields == {"newScore": 2, "zNote": 1}


# --- quarantine --------------------------------------------------------------------------
@pytest.mark.parametrize("bad_id", [..., None, ""])
def test_missing_id(bad_id: Any) -> None:
    assert reason_of(id=bad_id) == "missing id"


@pytest.mark.parametrize("bad_id", [123, ["a"]])
def test_id_not_a_string(bad_id: Any) -> None:
    assert reason_of(id=bad_id).startswith("missing id (not a string: ")


@pytest.mark.parametrize("missing", [..., None])
def test_missing_submission_date(missing: Any) -> None:
    assert reason_of(submissionDate=missing) == "missing submissionDate"


@pytest.mark.parametrize(
    "bad", ["garbage", "2019-13-01T00:00:00", "2019-02-30", "19/07/2019", 20190715, "0001-01-01"]
)
def test_bad_submission_date(bad: Any) -> None:
    assert reason_of(submissionDate=bad).startswith(f"bad submissionDate: {bad!r}")


def test_submission_year_outside_partition_range() -> None:
    assert "year outside 1900..2999" in reason_of(submissionDate="3000-01-01T00:00:00")


@pytest.mark.parametrize("bad", ["yesterday", "2025-07-15T25:00:00", 5, ["2025-07-15"]])
def test_bad_create_date_time(bad: Any) -> None:
    assert reason_of(createDateTime=bad).startswith(f"bad createDateTime: {bad!r}")


def test_missing_create_date_time_is_only_null() -> None:
    assert only_row(decode_docs([doc(createDateTime=...)], "s"))["createDateTime"] is None


@pytest.mark.parametrize("bad", [2.5, True, "two", 2**40, [2]])
def test_bad_int(bad: Any) -> None:
    assert reason_of(cite103Max=bad).startswith(f"bad cite103Max: {bad!r}")


@pytest.mark.parametrize("bad", [5, {"a": "1"}, [1.5], [True], ["1", ["2"]]])
def test_bad_list(bad: Any) -> None:
    assert reason_of(claimNumberArrayDocument=bad).startswith("bad claimNumberArrayDocument: ")


@pytest.mark.parametrize("bad", [1.5, True, ["438"], {"a": 1}])
def test_bad_string(bad: Any) -> None:
    assert reason_of(nationalClass=bad) == f"bad nationalClass: {bad!r}"


def test_key_problems_are_reported_first() -> None:
    assert reason_of(id=..., hasRej101="x") == "missing id"
    assert reason_of(submissionDate=..., hasRej101="x") == "missing submissionDate"


def test_non_object_row_is_quarantined() -> None:
    result = decode_docs([doc(), "oops", None], "s")  # type: ignore[list-item]
    assert result.table.num_rows == 1
    assert [q.reason for q in result.quarantined] == ["row is not an object"] * 2
    assert [q.doc for q in result.quarantined] == [{"value": "oops"}, {"value": None}]


def test_good_rows_survive_in_order_around_bad_ones() -> None:
    docs = [
        doc(id="1" * 32),
        doc(id="2" * 32, hasRej101=7),
        doc(id="3" * 32, cite103Max=9),
        doc(id=...),
        doc(id="5" * 32, submissionDate="2011-10-20T00:00:00"),
    ]
    result = decode_docs(docs, "shard-x")
    assert result.table.schema == ARROW_SCHEMA
    assert result.table.column("id").to_pylist() == ["1" * 32, "3" * 32, "5" * 32]
    assert result.table.column("cite103Max").to_pylist() == [2, 9, 2]
    assert result.table.column("submissionDate").to_pylist() == [
        dt.date(2011, 10, 19),
        dt.date(2011, 10, 19),
        dt.date(2011, 10, 20),
    ]
    assert [q.reason for q in result.quarantined] == ["bad hasRej101: 7", "missing id"]
    assert all(q.source == "shard-x" for q in result.quarantined)
    assert result.quarantined[0].to_json() == {
        "reason": "bad hasRej101: 7",
        "source": "shard-x",
        "doc": docs[1],
    }
