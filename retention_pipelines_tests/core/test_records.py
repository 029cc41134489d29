"""The quick path of one record (the API's) is a shortcut of the ingestion's rules, never a
second set: what it accepts, the full path accepts with the same typed values, and whatever
the full path refuses, it leaves to the full path."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retention_pipelines.core.ingestion import validate_records
from retention_pipelines.core.records import quick_valid_row
from retention_pipelines.core.schemas import CATEGORIES, RAW_COLUMN_NAMES, TELCO_NAME_OF
from retention_pipelines_tests.landing_files import customer

LIMIT = 4096


def full_path_rows(records: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """Each record's typed row by the full path, None where it is rejected."""
    validated = validate_records(records, max_field_chars=LIMIT)
    valid = validated.valid.astype(object).where(validated.valid.notna(), None)
    rows: list[dict[str, Any] | None] = [None] * len(records)
    for position, row in zip(valid.index, valid.to_dict("records"), strict=True):
        rows[int(position)] = row
    return rows


def assert_quick_agrees(records: list[dict[str, Any]]) -> int:
    """The quick path agrees with the full one on every record; return how many it took."""
    full = full_path_rows(records)
    taken = 0
    for record, expected in zip(records, full, strict=True):
        quick = quick_valid_row(record, LIMIT)
        if quick is None:
            continue
        taken += 1
        assert expected is not None, f"the quick path accepted a record the rules refuse: {record}"
        assert quick == expected, record
        assert all(type(quick[k]) is type(expected[k]) for k in quick), record
    return taken


def telco_records(telco_csv: Path, *, numbers: bool) -> list[dict[str, Any]]:
    with telco_csv.open(newline="", encoding="utf-8") as handle:
        records: list[dict[str, Any]] = list(csv.DictReader(handle))
    for record in records:
        del record["Churn"]
        if numbers:
            for column in ("SeniorCitizen", "tenure", "MonthlyCharges"):
                text = record[column]
                record[column] = float(text) if "." in text else int(text)
    return records


def test_the_quick_path_takes_almost_every_real_customer_with_the_full_paths_values(
    telco_csv: Path,
) -> None:
    for numbers in (False, True):
        records = telco_records(telco_csv, numbers=numbers)
        taken = assert_quick_agrees(records)
        # Every Telco customer is valid, the 11 new ones with a blank TotalCharges included,
        # and the quick path takes them all.
        assert taken == len(records)


def test_what_the_quick_path_cannot_vouch_for_goes_the_full_way() -> None:
    unusual = [
        customer(1, tenure="1e1"),  # an exponent: the full path reads it
        customer(2, MonthlyCharges="+29.85"),
        customer(3, gender="female "),
        customer(4, Contract="two YEAR"),
        customer(5, TotalCharges="", tenure="0"),
        customer(6, TotalCharges="", tenure="5"),
        customer(7, PhoneService="No", MultipleLines="No"),
        customer(8, gender="X" * (LIMIT + 1)),
        customer(9, gender="Fe\x00male"),
        {**customer(10), "Extra": "1"},
        {key: value for key, value in customer(11).items() if key != "Contract"},
    ]
    full = full_path_rows(unusual)
    quick = [quick_valid_row(record, LIMIT) for record in unusual]
    assert [row is not None for row in quick] == [
        False, False, True, True, True, False, False, False, False, False, False,
    ]  # fmt: skip
    assert all(q == f for q, f in zip(quick, full, strict=True) if q is not None)
    assert full[0] is not None and full[0]["tenure"] == 10  # the full path took it


_CATEGORY_TEXT = {
    TELCO_NAME_OF[column]: st.sampled_from(
        [*allowed, *(value.lower() for value in allowed), *(f" {v} " for v in allowed), "Maybe"]
    )
    for column, allowed in CATEGORIES.items()
    if column != "churn"
}
_NUMBER = st.one_of(
    st.integers(-5, 200),
    st.floats(-10, 1e13),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(0, 10_000, places=2).map(float),
    st.sampled_from(["", " 12 ", "1e3", "12.5", "abc", "NaN", "inf", "007", "3.000", "1_000"]),
    st.none(),
    st.booleans(),
)


_RECORD = st.fixed_dictionaries(
    {
        "customerID": st.sampled_from(["7590-VHVEG", "7590-vhveg", "", " 1234-ABCDE", "x"]),
        **_CATEGORY_TEXT,
        "SeniorCitizen": st.one_of(_NUMBER, st.sampled_from(["Yes", "no", "1", "0"])),
        "tenure": _NUMBER,
        "MonthlyCharges": _NUMBER,
        "TotalCharges": _NUMBER,
    }
)


# Records are judged a hundred at a time: the full path's cost is per call, not per record.
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_RECORD, min_size=100, max_size=100))
def test_the_quick_path_never_disagrees_with_the_ingestion_rules(
    records: list[dict[str, Any]],
) -> None:
    assert all(set(record) == set(RAW_COLUMN_NAMES) - {"Churn"} for record in records)
    assert_quick_agrees(records)


def test_a_batch_of_quick_rows_equals_the_full_paths_frame(telco_csv: Path) -> None:
    records = telco_records(telco_csv, numbers=True)[:50]
    quick = pd.DataFrame([quick_valid_row(record, LIMIT) for record in records])
    full = pd.DataFrame(full_path_rows(records))
    pd.testing.assert_frame_equal(quick, full, check_dtype=False)
