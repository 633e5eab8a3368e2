"""The 31 fields the service serves, by name, and how their values are typed.

Pure names, no dependencies: the lake's Arrow schema (``harvester.storage.schema``) and the
simulator's query parser (``harvester.sim.lucene``) both build on these lists, so the field
set is written down once.
"""

from __future__ import annotations

from typing import Final

# The served field names, in the order of the field table in docs/api.md ("Fields"),
# which groups related fields together (the captured field list: tests/fixtures/fields.json).
FIELDS: Final[tuple[str, ...]] = (
    "id",
    "patentApplicationNumber",
    "obsoleteDocumentIdentifier",
    "legacyDocumentCodeIdentifier",
    "submissionDate",
    "createDateTime",
    "createUserIdentifier",
    "groupArtUnitNumber",
    "nationalClass",
    "nationalSubclass",
    "actionTypeCategory",
    "legalSectionCode",
    "paragraphNumber",
    "claimNumberArrayDocument",
    "hasRej101",
    "hasRej102",
    "hasRej103",
    "hasRej112",
    "hasRejDP",
    "headerMissing",
    "formParagraphMissing",
    "rejectFormMissmatch",  # sic: the source's spelling
    "closingMissing",
    "cite103EQ1",
    "cite103GT3",
    "cite103Max",
    "aliceIndicator",
    "bilskiIndicator",
    "mayoIndicator",
    "myriadIndicator",
    "allowedClaimIndicator",
)
FIELD_SET: Final[frozenset[str]] = frozenset(FIELDS)

# Column groups by how a served value is decoded (harvester.service.decode relies on these).
STRING_FIELDS: Final[tuple[str, ...]] = (
    "patentApplicationNumber",
    "obsoleteDocumentIdentifier",
    "legacyDocumentCodeIdentifier",
    "createUserIdentifier",
    "groupArtUnitNumber",
    "nationalClass",
    "nationalSubclass",
    "actionTypeCategory",
    "legalSectionCode",
    "paragraphNumber",
)
# 0/1 flags (served as numbers) and true/false indicators (served as booleans) decode the
# same way; the split is only kept for documentation.
FLAG_FIELDS: Final[tuple[str, ...]] = (
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
)
INDICATOR_FIELDS: Final[tuple[str, ...]] = (
    "aliceIndicator",
    "bilskiIndicator",
    "mayoIndicator",
    "myriadIndicator",
    "allowedClaimIndicator",
)
BOOL_FIELDS: Final[tuple[str, ...]] = FLAG_FIELDS + INDICATOR_FIELDS
INT_FIELDS: Final[tuple[str, ...]] = ("cite103Max",)
LIST_FIELDS: Final[tuple[str, ...]] = ("claimNumberArrayDocument",)
DATE_FIELDS: Final[tuple[str, ...]] = ("submissionDate", "createDateTime")

assert len(FIELDS) == 31 and len(FIELD_SET) == 31
assert (
    set(STRING_FIELDS + BOOL_FIELDS + INT_FIELDS + LIST_FIELDS + DATE_FIELDS) | {"id"} == FIELD_SET
)
