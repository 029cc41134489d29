"""The quick path of one customer sent as a record (the API's input) through the ingestion's
rules, in plain Python: a few microseconds where a frame through pandas and Pandera takes tens
of milliseconds.

It is a shortcut, not a second set of rules. The values are normalized by the ingestion's own
functions, checked against the checks read from :class:`CustomerSnapshotSchema` itself (its
``isin``, ``str_matches`` and range checks, and its rules across columns, the same functions),
and a record it does not accept in full is handed to the full path
(:func:`~retention_pipelines.core.ingestion.validate_records`), which says why in the
ingestion's words. Numbers are taken only in plain decimal spelling here; anything else
(exponents, signs, spaces inside) goes the full way. A property test holds the two paths to the
same typed values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from retention_pipelines.core.ingestion import (
    CONTROL_CHARACTERS,
    category_spellings,
    csv_text,
    normalize_value,
)
from retention_pipelines.core.schemas import (
    CATEGORIES,
    RAW_COLUMN_NAMES,
    ROW_RULES,
    YES_NO,
    CustomerSnapshotSchema,
)

_TELCO_KEYS: Final = frozenset(RAW_COLUMN_NAMES)
_INTEGER_TEXT: Final = re.compile(r"\d{1,9}")
_DECIMAL_TEXT: Final = re.compile(r"\d{1,12}(\.\d{1,12})?")
_INTEGERS: Final = frozenset({"senior_citizen", "tenure"})
_DECIMALS: Final = frozenset({"monthly_charges", "total_charges"})
_SENIOR_WORDS: Final = {
    spelling: {"Yes": "1", "No": "0"}[answer]
    for spelling, answer in category_spellings(YES_NO).items()
}
_SPELLINGS: Final = {column: category_spellings(allowed) for column, allowed in CATEGORIES.items()}


def _compile_check(name: str, statistics: dict[str, Any]) -> Callable[[Any], bool]:
    """A check of the schema as a test of one value. A kind of check this does not know
    stops the import: the quick path must learn it before it can vouch for a record."""
    if name == "isin":
        allowed = frozenset(statistics["allowed_values"])
        return lambda value: value in allowed
    if name == "str_matches":
        pattern = re.compile(statistics["pattern"])
        return lambda value: pattern.match(value) is not None
    if name == "greater_than_or_equal_to":
        low = statistics["min_value"]
        return lambda value: value >= low
    if name == "less_than_or_equal_to":
        high = statistics["max_value"]
        return lambda value: value <= high
    raise NotImplementedError(f"core.records cannot apply the schema's {name!r} check")


_SCHEMA = CustomerSnapshotSchema.to_schema()
_CHECKS: Final[dict[str, tuple[bool, tuple[Callable[[Any], bool], ...]]]] = {
    column: (
        bool(spec.nullable),
        tuple(_compile_check(check.name, dict(check.statistics)) for check in spec.checks),
    )
    for column, spec in _SCHEMA.columns.items()
}


def quick_valid_row(record: Mapping[str, object], max_field_chars: int) -> dict[str, Any] | None:
    """The record typed as ingestion types a valid row (the raw table's columns), or None when
    the full path must decide: anything unusual, and every invalid record."""
    row = _read(record, max_field_chars)
    return row if row is not None and _passes(row) else None


def _read(record: Mapping[str, object], max_field_chars: int) -> dict[str, Any] | None:
    """Every value normalized and converted, or None at the first one left to the full path."""
    if not record.keys() <= _TELCO_KEYS:
        return None  # an unknown key, or a header spelling only the full path matches
    row: dict[str, Any] = {}
    for telco, column in RAW_COLUMN_NAMES.items():
        if telco not in record and telco != "Churn":
            return None  # a column left out
        typed = _typed(column, csv_text(record.get(telco)), max_field_chars)
        if typed is False:
            return None
        row[column] = typed
    if row["total_charges"] is None and row["tenure"] == 0:
        row["total_charges"] = 0.0  # a new customer's blank TotalCharges: no bill yet
    return row


def _passes(row: dict[str, Any]) -> bool:
    """The schema's checks of every column, and its rules across columns."""
    for column, (nullable, checks) in _CHECKS.items():
        value = row[column]
        if value is None:
            if nullable:
                continue
            return False
        if not all(check(value) for check in checks):
            return False
    return all(rule(row) for rule in ROW_RULES)


def _typed(column: str, value: str | None, max_field_chars: int) -> Any:
    """One value normalized and converted as ingestion does, or False to leave the record to
    the full path."""
    if value is None:
        return None
    if len(value) > max_field_chars or CONTROL_CHARACTERS.search(value):
        return False
    cleaned = normalize_value(value)
    if cleaned is None:
        return None
    if column in _INTEGERS:
        if column == "senior_citizen":
            cleaned = _SENIOR_WORDS.get(cleaned.lower(), cleaned)
        return int(cleaned) if _INTEGER_TEXT.fullmatch(cleaned) else False
    if column in _DECIMALS:
        return float(cleaned) if _DECIMAL_TEXT.fullmatch(cleaned) else False
    spellings = _SPELLINGS.get(column)
    return spellings.get(cleaned.lower(), cleaned) if spellings else cleaned
