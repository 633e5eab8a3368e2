"""The simulator's Lucene subset: parse trees, refused forms, and evaluation on served rows."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from harvester.sim.lucene import (
    FIELDS,
    And,
    MatchAll,
    Not,
    Or,
    QuerySyntaxError,
    Range,
    Term,
    date_bounds,
    parse,
    parse_date_value,
)
from harvester.sim.predicate import compile_predicate, matches

SAMPLES = Path(__file__).parent / "fixtures"
PREFIX = "org.apache.solr.search.SyntaxError: Cannot parse '"


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    """The three real docs captured for ``patentApplicationNumber:12190351``."""
    body = json.loads((SAMPLES / "records-by-application.json").read_text())
    rows: list[dict[str, Any]] = body["response"]["docs"]
    assert len(rows) == 3
    return rows


def t(field: str, value: str) -> Term:
    return Term(field, value)


# -- fields ------------------------------------------------------------------------------


def test_fields_are_the_31_served_fields_in_reference_table_order() -> None:
    served = json.loads((SAMPLES / "fields.json").read_text())["fields"]
    assert len(FIELDS) == 31
    assert set(FIELDS) == set(served)
    # The reference table starts with the identifiers and ends with the indicators.
    assert FIELDS[:4] == (
        "id",
        "patentApplicationNumber",
        "obsoleteDocumentIdentifier",
        "legacyDocumentCodeIdentifier",
    )
    assert FIELDS[-1] == "allowedClaimIndicator"


def test_every_known_field_is_accepted() -> None:
    for field in FIELDS:
        assert parse(f"{field}:*") == Range(field, None, None)


# -- supported forms ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "tree"),
    [
        ("*:*", MatchAll()),
        ("id:abc", t("id", "abc")),
        ('legalSectionCode:"103"', t("legalSectionCode", "103")),
        ('nationalClass:"a phrase with spaces"', t("nationalClass", "a phrase with spaces")),
        ('actionTypeCategory:""', t("actionTypeCategory", "")),
        ("id:*", Range("id", None, None)),
        ("id:[0 TO 8]", Range("id", "0", "8", True, True)),
        ("id:{0 TO 8}", Range("id", "0", "8", False, False)),
        ("id:[0 TO 8}", Range("id", "0", "8", True, False)),
        ("id:{0 TO 8]", Range("id", "0", "8", False, True)),
        ("id:[a8 TO *]", Range("id", "a8", None, True, True)),
        ("id:[* TO 8}", Range("id", None, "8", True, False)),
        ("id:[* TO *]", Range("id", None, None)),
        ('id:["a" TO "b c"]', Range("id", "a", "b c")),
        ("cite103Max:[2 TO 5]", Range("cite103Max", "2", "5")),
        ("hasRej101:1", t("hasRej101", "1")),
        ("hasRej101:1.0", t("hasRej101", "1.0")),
        ("aliceIndicator:true", t("aliceIndicator", "true")),
        ("claimNumberArrayDocument:1", t("claimNumberArrayDocument", "1")),
        ("  id:abc\t", t("id", "abc")),
    ],
)
def test_supported_forms_parse_to_the_expected_tree(query: str, tree: object) -> None:
    assert parse(query) == tree


@pytest.mark.parametrize(
    ("query", "low", "high"),
    [
        (
            "submissionDate:[2019-01-01T00:00:00Z TO 2019-01-31T23:59:59Z]",
            "2019-01-01T00:00:00Z",
            "2019-01-31T23:59:59Z",
        ),
        ("submissionDate:[2019-01-01 TO 2019-01-31]", "2019-01-01", "2019-01-31"),
        ("createDateTime:[2025-07-15T21:22:06.123Z TO *]", "2025-07-15T21:22:06.123Z", None),
    ],
)
def test_date_ranges_in_both_forms_keep_the_bounds_as_written(
    query: str, low: str, high: str | None
) -> None:
    field = query.split(":", 1)[0]
    assert parse(query) == Range(field, low, high)


def test_quoted_or_escaped_full_timestamp_as_a_term() -> None:
    expected = t("submissionDate", "2019-01-01T00:00:00Z")
    assert parse('submissionDate:"2019-01-01T00:00:00Z"') == expected
    assert parse(r"submissionDate:2019-01-01T00\:00\:00Z") == expected


def test_juxtaposed_clauses_are_joined_with_or() -> None:
    assert parse("id:a id:b id:c") == Or((t("id", "a"), t("id", "b"), t("id", "c")))


def test_and_binds_tighter_than_or() -> None:
    a, b, c = t("id", "a"), t("id", "b"), t("id", "c")
    assert parse("id:a OR id:b AND id:c") == Or((a, And((b, c))))
    assert parse("id:a AND id:b OR id:c") == Or((And((a, b)), c))
    assert parse("id:a AND id:b id:c") == Or((And((a, b)), c))


def test_not_binds_tighter_than_and() -> None:
    a, b = t("id", "a"), t("id", "b")
    assert parse("NOT id:a AND id:b") == And((Not(a), b))
    assert parse("id:a AND NOT id:b") == And((a, Not(b)))


def test_chains_are_flat_and_parentheses_keep_their_node() -> None:
    a, b, c = t("id", "a"), t("id", "b"), t("id", "c")
    assert parse("id:a AND id:b AND id:c") == And((a, b, c))
    assert parse("id:a OR id:b OR id:c") == Or((a, b, c))
    assert parse("id:a AND (id:b OR id:c)") == And((a, Or((b, c))))
    assert parse("(id:a AND id:b) AND id:c") == And((And((a, b)), c))
    assert parse("((id:a))") == a


def test_symbolic_operators_mean_the_same_as_the_words() -> None:
    assert parse("id:a && id:b || !id:c") == parse("id:a AND id:b OR NOT id:c")


def test_field_group_gives_its_field_to_bare_values() -> None:
    assert parse("legalSectionCode:(101 OR 103)") == Or(
        (t("legalSectionCode", "101"), t("legalSectionCode", "103"))
    )
    assert parse("legalSectionCode:(101 103 AND id:x)") == Or(
        (t("legalSectionCode", "101"), And((t("legalSectionCode", "103"), t("id", "x"))))
    )
    assert parse("id:([0 TO 8} OR *)") == Or(
        (Range("id", "0", "8", True, False), Range("id", None, None))
    )


def test_pure_negative_gets_match_all() -> None:
    a, b = t("id", "a"), t("id", "b")
    assert parse("NOT id:a") == And((MatchAll(), Not(a)))
    assert parse("!id:a") == And((MatchAll(), Not(a)))
    assert parse("NOT id:a AND NOT id:b") == And((MatchAll(), Not(a), Not(b)))
    assert parse("(NOT id:a)") == And((MatchAll(), Not(a)))
    # Not pure negative: a positive clause is there.
    assert parse("id:a AND NOT id:b") == And((a, Not(b)))


def test_a_lone_not_in_an_or_chain_prohibits_the_whole_chain() -> None:
    # Lucene's MUST_NOT: "a NOT b" and "a OR NOT b" both mean "a AND NOT b", never "a OR
    # everything-but-b" (which would match nearly every row).
    a, b, c = t("id", "a"), t("id", "b"), t("id", "c")
    assert parse("id:a NOT id:b") == And((a, Not(b)))
    assert parse("id:a OR NOT id:b") == And((a, Not(b)))
    assert parse("id:a OR id:c NOT id:b") == And((Or((a, c)), Not(b)))
    everything_dated = Range("submissionDate", None, None)
    assert parse("*:* NOT submissionDate:[* TO *]") == And((MatchAll(), Not(everything_dated)))


@pytest.mark.parametrize(
    ("query", "value"),
    [
        (r"id:a\:b", "a:b"),
        (r"id:a\ b", "a b"),
        (r"id:\+1", "+1"),
        (r"id:\-1", "-1"),
        (r"id:a\&\&b", "a&&b"),
        (r"id:a\|\|b", "a||b"),
        (r"id:\!x", "!x"),
        (r"id:\(x\)", "(x)"),
        (r"id:\{x\}", "{x}"),
        (r"id:\[x\]", "[x]"),
        (r"id:x\^2", "x^2"),
        (r"id:\"x\"", '"x"'),
        (r"id:x\~", "x~"),
        (r"id:ab\*c", "ab*c"),
        (r"id:ab\?c", "ab?c"),
        (r"id:a\\b", "a\\b"),
        (r"id:a\/b", "a/b"),
        (r"id:\AND", "AND"),
        (r'id:"say \"hi\""', 'say "hi"'),
    ],
)
def test_backslash_escapes_give_the_literal_character(query: str, value: str) -> None:
    assert parse(query) == t("id", value)


def test_escaped_star_in_a_range_is_a_literal_not_an_open_end() -> None:
    assert parse(r"id:[\* TO b]") == Range("id", "*", "b")


def test_hyphens_inside_a_term_do_not_split_it() -> None:
    assert parse("submissionDate:2019-01-01") == t("submissionDate", "2019-01-01")


# -- refused forms -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("", 'Encountered "<EOF>" at line 1, column 0.'),
        ("   ", 'Encountered "<EOF>"'),
        ("abc:[1 TO", 'Encountered "<EOF>" at line 1, column 9.'),
        ("id:[a TO b", 'Encountered "<EOF>"'),
        ("id:[a b]", 'Encountered "b"'),
        ("id:[a TO b TO c]", 'Encountered "TO"'),
        ("(id:a", 'Encountered "<EOF>" at line 1, column 5.'),
        ("id:a)", 'Encountered ")" at line 1, column 5.'),
        ("id:a]", 'Encountered "]"'),
        ("()", 'Encountered ")"'),
        ("id:a AND", 'Encountered "<EOF>" at line 1, column 8.'),
        ("id:a OR", 'Encountered "<EOF>"'),
        ("AND id:a", 'Encountered "AND" at line 1, column 1.'),
        ("id:a AND OR id:b", 'Encountered "OR"'),
        ("NOT", 'Encountered "<EOF>"'),
        ("NOT NOT id:a", 'Encountered "NOT" at line 1, column 5.'),
        ("id:", 'Encountered "<EOF>"'),
        ("id:a\nAND )", 'Encountered ")" at line 2, column 5.'),
        ("id:ab*c", "wildcard"),
        ("id:ab?c", "wildcard"),
        ("id:abc*", "wildcard"),
        ("id:abc~", "fuzzy"),
        ('id:"a b"~2', "fuzzy"),
        ("id:abc^2", "boosts"),
        ("(id:a)^2", "boosts"),
        ("+id:a", "'+' prefix"),
        ("-id:a", "'-' prefix"),
        ("id:a -id:b", "'-' prefix"),
        ("id:TO", 'Encountered "TO"'),
        ("id:a TO id:b", 'Encountered "TO"'),
        ("abc", "no field name specified"),
        ('"abc"', "no field name specified"),
        ("*:abc", "only *:*"),
        ("xyz:1", "undefined field xyz"),
        ("xyz:*", "undefined field xyz"),
        ("xyz:(a OR b)", "undefined field xyz"),
        ("hasRej*:1", "undefined field hasRej*"),
        ("SubmissionDate:[2019-01-01 TO *]", "undefined field SubmissionDate"),
        ('id:"abc', "Lexical error"),
        ("id:abc\\", "Term can not end with escape character."),
        ("submissionDate:2019-01-01T00:00:00Z", 'Encountered ":"'),
    ],
)
def test_refused_forms_raise_with_the_solr_prefix(query: str, detail: str) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        parse(query)
    message = str(info.value)
    assert message.startswith(f"{PREFIX}{query}': ")
    assert detail in message


def test_parse_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="undefined field nope"):
        parse("nope:1")


def test_syntax_errors_are_reported_before_unknown_fields() -> None:
    # Solr checks the field once the clause has parsed, so the EOF wins here.
    with pytest.raises(QuerySyntaxError, match='Encountered "<EOF>"'):
        parse("abc:[1 TO")


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("submissionDate:[2019-13-01 TO *]", "Invalid Date String:'2019-13-01'"),
        ("submissionDate:[* TO 2019-02-30]", "Invalid Date String:'2019-02-30'"),
        ("submissionDate:2019-1-1", "Invalid Date String:'2019-1-1'"),
        ("submissionDate:[2019-01-01T00:00:00 TO *]", "Invalid Date String:'2019-01-01T00:00:00'"),
        ("submissionDate:[NOW-1DAY TO *]", "Invalid Date String:'NOW-1DAY'"),
        ('createDateTime:"2019-01-01T25:00:00Z"', "Invalid Date String:'2019-01-01T25:00:00Z'"),
        ("hasRej101:true", "Invalid Number: true"),
        ("hasRej101:[0 TO x]", "Invalid Number: x"),
        ("cite103Max:1_000", "Invalid Number: 1_000"),
        ("cite103Max:inf", "Invalid Number: inf"),
        ("aliceIndicator:yes", "Invalid boolean value: 'yes' (expected true or false)"),
    ],
)
def test_bad_typed_values_are_refused_at_parse_time(query: str, detail: str) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        parse(query)
    assert str(info.value) == f"{PREFIX}{query}': {detail}"


# -- date helpers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2019-01-01", dt.datetime(2019, 1, 1)),
        ("2019-01-01T00:00:00Z", dt.datetime(2019, 1, 1)),
        ("2019-01-31T23:59:59Z", dt.datetime(2019, 1, 31, 23, 59, 59)),
        ("2019-01-31T23:59:59.5Z", dt.datetime(2019, 1, 31, 23, 59, 59, 500000)),
        ("2019-01-31T23:59:59.999999999Z", dt.datetime(2019, 1, 31, 23, 59, 59, 999999)),
    ],
)
def test_parse_date_value_gives_naive_utc(text: str, expected: dt.datetime) -> None:
    value = parse_date_value(text)
    assert value == expected
    assert value.tzinfo is None


@pytest.mark.parametrize(
    "text", ["", "2019-13-01", "2019-01-01T00:00Z", "20190101", "2019-01-01Z", "2019-01-01 "]
)
def test_parse_date_value_refuses_other_forms(text: str) -> None:
    with pytest.raises(ValueError, match="Invalid Date String"):
        parse_date_value(text)


def test_date_bounds_decodes_a_date_range() -> None:
    node = parse("submissionDate:{2019-01-01 TO 2019-01-31T23:59:59Z]")
    assert isinstance(node, Range)
    assert date_bounds(node) == (
        dt.datetime(2019, 1, 1),
        dt.datetime(2019, 1, 31, 23, 59, 59),
        False,
        True,
    )
    assert date_bounds(Range("submissionDate", None, None)) == (None, None, True, True)
    with pytest.raises(ValueError, match="not a date field"):
        date_bounds(Range("id", "0", "8"))


# -- evaluation on served rows -----------------------------------------------------------


def hits(query: str, rows: list[dict[str, Any]]) -> list[int]:
    """Indexes of the rows matching ``query``, checked through both entry points."""
    node = parse(query)
    predicate = compile_predicate(node)
    found = [i for i, row in enumerate(rows) if predicate(row)]
    assert found == [i for i, row in enumerate(rows) if matches(node, row)]
    return found


def test_rows_without_a_field_are_found_by_match_all_not_range(docs: list[dict[str, Any]]) -> None:
    undated = {k: v for k, v in docs[0].items() if k != "submissionDate"}
    assert hits("*:* NOT submissionDate:[* TO *]", [*docs, undated]) == [3]


def test_match_all_and_the_captured_query(docs: list[dict[str, Any]]) -> None:
    assert hits("*:*", docs) == [0, 1, 2]
    assert hits("patentApplicationNumber:12190351", docs) == [0, 1, 2]
    assert hits("patentApplicationNumber:1219035", docs) == []


def test_string_terms_are_exact_and_case_sensitive(docs: list[dict[str, Any]]) -> None:
    assert hits("legalSectionCode:103", docs) == [2]
    assert hits('legalSectionCode:""', docs) == [1]
    assert hits("actionTypeCategory:rejected", docs) == [2]
    assert hits("actionTypeCategory:Rejected", docs) == []
    assert hits("legacyDocumentCodeIdentifier:CTNF", docs) == [0, 1, 2]


def test_id_ranges_are_lexicographic_with_exclusive_ends(docs: list[dict[str, Any]]) -> None:
    # ids: 0 = 14642e..., 1 = ed812f..., 2 = 2eb04a...
    assert hits("id:[0 TO 8}", docs) == [0, 2]
    assert hits("id:[8 TO *]", docs) == [1]
    assert hits("id:[a8 TO *]", docs) == [1]
    assert hits("id:[0 TO 2eb04a3de9ee5c910a2644dc0a02d5e3]", docs) == [0, 2]
    assert hits("id:[0 TO 2eb04a3de9ee5c910a2644dc0a02d5e3}", docs) == [0]
    assert hits("id:{14642e2cc522ac577468fb6fc026d135 TO 3}", docs) == [2]
    assert hits("id:[14642e2cc522ac577468fb6fc026d135 TO 3}", docs) == [0, 2]
    # "2eb0..." sorts after "2": a short prefix bound is below every id that extends it.
    assert hits("id:[2 TO 2]", docs) == []
    assert hits("id:[2 TO 3}", docs) == [2]


def test_date_ranges_in_both_forms(docs: list[dict[str, Any]]) -> None:
    assert hits("submissionDate:[2011-10-19T00:00:00Z TO 2011-10-19T23:59:59Z]", docs) == [0, 1, 2]
    assert hits("submissionDate:[2011-10-19 TO 2011-10-19]", docs) == [0, 1, 2]
    assert hits("submissionDate:{2011-10-19 TO *]", docs) == []
    assert hits("submissionDate:[* TO 2011-10-19}", docs) == []
    assert hits("submissionDate:{2011-10-18T23:59:59.999Z TO 2011-10-19T00:00:00.001Z}", docs) == [
        0,
        1,
        2,
    ]
    assert hits("submissionDate:[2011-10-19T00:00:00.001Z TO *]", docs) == []
    assert hits("createDateTime:[2025-07-15T21:22:06Z TO 2025-07-15T21:22:06Z]", docs) == [0, 1, 2]
    assert hits("submissionDate:2011-10-19", docs) == [0, 1, 2]
    assert hits('submissionDate:"2011-10-19T00:00:00Z"', docs) == [0, 1, 2]
    assert hits("submissionDate:2011-10-20", docs) == []


@pytest.mark.parametrize(
    "served",
    ["2011-10-19T00:00:00", "2011-10-19T00:00:00Z", "2011-10-19T02:00:00+02:00", "2011-10-19"],
)
def test_served_dates_in_other_iso_forms_are_decoded(served: str) -> None:
    row = {"submissionDate": served}
    assert matches(parse("submissionDate:[2011-10-19 TO 2011-10-19]"), row)
    assert matches(parse("submissionDate:2011-10-19"), row)
    assert not matches(parse("submissionDate:{2011-10-19 TO *]"), row)


def test_undecodable_served_date_matches_nothing() -> None:
    assert not matches(parse("submissionDate:*"), {"submissionDate": "not a date"})
    assert not matches(parse("submissionDate:*"), {"submissionDate": 20111019})


@pytest.mark.parametrize("served", [1, 1.0, "1", "1.0", True, "true"])
def test_flag_one_in_every_served_form(served: object) -> None:
    row = {"hasRej103": served}
    assert matches(parse("hasRej103:1"), row)
    assert matches(parse("hasRej103:1.0"), row)
    assert not matches(parse("hasRej103:0"), row)
    assert matches(parse("hasRej103:[1 TO *]"), row)
    assert not matches(parse("hasRej103:{1 TO *]"), row)


@pytest.mark.parametrize("served", [0, 0.0, "0", False, "false"])
def test_flag_zero_in_every_served_form(served: object) -> None:
    row = {"hasRej101": served}
    assert matches(parse("hasRej101:0"), row)
    assert not matches(parse("hasRej101:1"), row)


def test_undecodable_flag_matches_nothing() -> None:
    assert not matches(parse("hasRej101:*"), {"hasRej101": "maybe"})
    assert not matches(parse("hasRej101:0"), {"hasRej101": None})


def test_numeric_fields_on_the_sample_docs(docs: list[dict[str, Any]]) -> None:
    assert hits("hasRej103:1 AND hasRej112:1", docs) == [0, 1, 2]
    assert hits("hasRej101:1", docs) == []
    assert hits("cite103Max:2", docs) == [0, 1, 2]
    assert hits("cite103Max:[3 TO *]", docs) == []
    assert hits("cite103Max:[1 TO 10]", docs) == [0, 1, 2]
    # Numeric, not lexicographic: "10" would sort before "2" as a string.
    assert hits("cite103Max:{1.5 TO 10}", docs) == [0, 1, 2]


@pytest.mark.parametrize("served", [True, 1, 1.0, "true", "1"])
def test_indicators_true_in_every_served_form(served: object) -> None:
    row = {"aliceIndicator": served}
    assert matches(parse("aliceIndicator:true"), row)
    assert matches(parse("aliceIndicator:TRUE"), row)
    assert not matches(parse("aliceIndicator:false"), row)


def test_indicators_on_the_sample_docs(docs: list[dict[str, Any]]) -> None:
    assert hits("aliceIndicator:false", docs) == [0, 1, 2]
    assert hits("allowedClaimIndicator:true", docs) == []


def test_claim_list_matches_any_whole_element(docs: list[dict[str, Any]]) -> None:
    assert hits("claimNumberArrayDocument:1", docs) == [0]
    assert hits('claimNumberArrayDocument:"1,2,3,4,5"', docs) == [1, 2]
    assert hits(r"claimNumberArrayDocument:1\,2\,3\,4\,5", docs) == [1, 2]
    assert hits("claimNumberArrayDocument:2", docs) == []
    row = {"claimNumberArrayDocument": ["7", "1,2", "9"]}
    assert matches(parse("claimNumberArrayDocument:9"), row)
    assert matches(parse("claimNumberArrayDocument:[1 TO 2]"), row)
    assert not matches(parse("claimNumberArrayDocument:[8 TO 8]"), row)
    assert not matches(parse("claimNumberArrayDocument:*"), {"claimNumberArrayDocument": []})
    assert matches(parse("claimNumberArrayDocument:7"), {"claimNumberArrayDocument": "7"})


def test_missing_field_makes_terms_and_ranges_false(docs: list[dict[str, Any]]) -> None:
    row = dict(docs[2])
    for field in ("legalSectionCode", "submissionDate", "hasRej103", "aliceIndicator", "id"):
        del row[field]
    assert not matches(parse("legalSectionCode:103"), row)
    assert not matches(parse("legalSectionCode:*"), row)
    assert not matches(parse("submissionDate:[* TO *]"), row)
    assert not matches(parse("hasRej103:1"), row)
    assert not matches(parse("aliceIndicator:false"), row)
    assert not matches(parse("id:[0 TO *]"), row)
    assert matches(parse("NOT legalSectionCode:103"), row)
    assert matches(parse("NOT hasRej103:*"), row)
    assert not matches(parse("legalSectionCode:103"), {**row, "legalSectionCode": None})


def test_boolean_operators_evaluate_as_logic(docs: list[dict[str, Any]]) -> None:
    assert hits("legalSectionCode:103 OR legalSectionCode:112", docs) == [0, 2]
    assert hits("legalSectionCode:103 legalSectionCode:112", docs) == [0, 2]
    assert hits("legalSectionCode:(103 112)", docs) == [0, 2]
    assert hits("legalSectionCode:103 AND paragraphNumber:a", docs) == [2]
    assert hits("legalSectionCode:103 AND paragraphNumber:b", docs) == []
    assert hits("NOT legalSectionCode:103", docs) == [0, 1]
    assert hits("NOT legalSectionCode:103 AND NOT legalSectionCode:112", docs) == [1]
    assert hits("id:[0 TO 8} AND NOT legalSectionCode:112", docs) == [2]
    assert hits(
        "submissionDate:[2011-10-01 TO 2011-10-31] AND id:[0 TO 8} AND hasRej103:1", docs
    ) == [0, 2]
    assert hits("legalSectionCode:103 OR legalSectionCode:112 OR legalSectionCode:101", docs) == [
        0,
        2,
    ]
    assert hits("*:* AND NOT id:*", docs) == []


def test_compile_predicate_is_memoised_per_tree() -> None:
    node = parse("id:[0 TO 8}")
    assert compile_predicate(node) is compile_predicate(parse("id:[0 TO 8}"))
