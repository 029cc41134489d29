"""The API's path, without a database: customers sent as JSON objects are validated by the
landing file's rules and words, and turn into the feature contract as the dbt models compute it
(the slow parity test holds the features to the warehouse's on whole files)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import pytest

from retention_pipelines.core.features import FEATURE_COLUMNS, customer_features, feature_frame
from retention_pipelines.core.ingestion import (
    ValidatedRecords,
    read_validated_chunks,
    validate_records,
)
from retention_pipelines.core.schemas import ADD_ON_COLUMNS, TELCO_COLUMNS, TELCO_NAME_OF
from retention_pipelines_tests.landing_files import customer, write_rows

NO_INTERNET_ADD_ONS = {TELCO_NAME_OF[column]: "No internet service" for column in ADD_ON_COLUMNS}
ALL_ADD_ONS = {TELCO_NAME_OF[column]: "Yes" for column in ADD_ON_COLUMNS}


def landing_file_result(tmp_path: Path, rows: list[dict[str, str]]) -> ValidatedRecords:
    """What ingestion makes of ``rows`` written as a landing file, keyed by position."""
    path = write_rows(tmp_path / "customers.csv", rows)
    chunks = list(read_validated_chunks(path, chunk_rows=1_000))
    valid = pd.concat([chunk.valid for chunk in chunks])
    valid.index = pd.Index(valid.index - 1, name="position")
    rejects = pd.concat([chunk.rejects for chunk in chunks])
    reasons = {
        int(row) - 1: list(found)
        for row, found in zip(rejects["row_number"], rejects["reasons"], strict=True)
    }
    return ValidatedRecords(valid=valid.sort_index(), reasons=dict(sorted(reasons.items())))


def assert_same_result(ours: ValidatedRecords, landing: ValidatedRecords) -> None:
    assert ours.reasons == landing.reasons
    pd.testing.assert_frame_equal(ours.valid, landing.valid)


CRAFTED_ROWS = [
    customer(1),
    customer(2, tenure="abc", MonthlyCharges="12,50", TotalCharges="inf"),
    customer(3, tenure="7.5", SeniorCitizen="2"),
    customer(4, InternetService="Satellite", Contract="Fortnightly", Churn="Maybe"),
    customer(5, gender="  female ", Partner="YES", Contract="month-to-month", Churn="no"),
    customer(6, PaymentMethod="bank transfer (AUTOMATIC)", SeniorCitizen="yes", Dependents="y"),
    customer(7, tenure="0", TotalCharges=" ", Churn=""),
    customer(8, tenure="5", TotalCharges=""),
    customer(9, gender="Fe\x01male", Contract="x" * 5_000),
    customer(10, customerID="not-an-id", PhoneService="No"),
    customer(11, tenure="121", MonthlyCharges="-1", TotalCharges="NaN"),
    customer(12, InternetService="No"),
    customer(13, MonthlyCharges=" 1e2 ", TotalCharges="1.2345e3", tenure="12.0"),
    customer(14, Churn="N/A", TotalCharges="null"),
]


def test_records_get_the_landing_files_valid_rows_and_reasons(tmp_path: Path) -> None:
    landing = landing_file_result(tmp_path, CRAFTED_ROWS)
    ours = validate_records(CRAFTED_ROWS)
    assert_same_result(ours, landing)
    assert sorted(ours.valid.index) == [0, 4, 5, 6, 12]  # the crafted rows do what they say
    assert ours.reasons[1] == [
        "tenure: 'abc' is not an integer",
        "MonthlyCharges: '12,50' is not a number",
        "TotalCharges: 'inf' is not a finite number",
    ]
    assert ours.reasons[8] == [
        "gender: control character '\\x01' in the field",
        "Contract: the value has 5,000 characters, over 4,096",
    ]


def json_typed(row: Mapping[str, str]) -> dict[str, object]:
    """``row`` as a JSON client sends it: numbers as numbers, a blank as null, Churn left out."""
    typed: dict[str, object] = {key: value or None for key, value in row.items() if key != "Churn"}
    typed["SeniorCitizen"] = int(row["SeniorCitizen"])
    typed["tenure"] = int(row["tenure"])
    typed["MonthlyCharges"] = float(row["MonthlyCharges"])
    if row["TotalCharges"]:
        typed["TotalCharges"] = float(row["TotalCharges"])
    return typed


def test_json_numbers_booleans_and_nulls_read_as_a_files_text_would(tmp_path: Path) -> None:
    as_text = [
        customer(1, MonthlyCharges="29.85", TotalCharges="0.00001", Churn=""),
        customer(2, tenure="0", TotalCharges="", Churn=""),
        customer(3, SeniorCitizen="true", Partner="false", tenure="true", Churn=""),
        customer(4, tenure="5.0", MonthlyCharges="10000000000000000", Churn=""),
    ]
    sent = [
        json_typed(as_text[0]) | {"TotalCharges": 1e-05},
        json_typed(as_text[1]),
        json_typed(customer(3)) | {"SeniorCitizen": True, "Partner": False, "tenure": True},
        json_typed(customer(4)) | {"tenure": 5.0, "MonthlyCharges": 1e16},
    ]
    ours = validate_records(sent)
    assert_same_result(ours, landing_file_result(tmp_path, as_text))
    assert ours.reasons == {
        2: ["tenure: 'true' is not an integer"],
        3: ["MonthlyCharges: 1e+16 is outside the allowed range 0..99999999.99"],
    }
    assert ours.valid.loc[0, "total_charges"] == 1e-05
    assert ours.valid.loc[1, "total_charges"] == 0.0


def test_keys_match_the_header_without_case_and_spacing() -> None:
    exact = customer(1)
    spaced = {f" {key.upper()} ": value for key, value in exact.items()}
    spaced["Customer ID"] = spaced.pop(" CUSTOMERID ")
    pd.testing.assert_frame_equal(validate_records([spaced]).valid, validate_records([exact]).valid)


def test_missing_unknown_and_repeated_keys_are_each_a_reason() -> None:
    without_contract = {key: value for key, value in customer(1).items() if key != "Contract"}
    new_without_total = {
        key: value for key, value in customer(4, tenure="0").items() if key != "TotalCharges"
    }
    result = validate_records(
        [
            without_contract,
            customer(2) | {"Foo": "1"},
            customer(3) | {"Tenure": "abc"},
            new_without_total,
            ["7590-VHVEG", "Female"],  # type: ignore[list-item]
        ]
    )
    assert result.reasons == {
        0: ["Contract: missing value"],
        1: ["unknown column 'Foo'"],
        2: ["tenure: named more than once, as ['tenure', 'Tenure']"],
        4: ["record: list, not an object keyed by the Telco columns"],
    }
    assert list(result.valid.index) == [3]
    assert result.valid.loc[3, "total_charges"] == 0.0


def test_unknown_keys_do_not_hide_the_values_reasons() -> None:
    result = validate_records([customer(1, tenure="-3") | {"Foo": "1"}])
    assert result.reasons == {
        0: ["unknown column 'Foo'", "tenure: -3 is outside the allowed range 0..120"]
    }
    assert result.valid.empty


def test_no_records_give_no_rows_and_no_reasons() -> None:
    result = validate_records([])
    assert result.valid.empty and result.reasons == {}
    assert list(result.valid.columns) == list(validate_records([customer(1)]).valid.columns)


def features_of(*rows: dict[str, str]) -> pd.DataFrame:
    validated = validate_records(list(rows))
    assert validated.reasons == {}
    return customer_features(validated.valid).set_index("customer_id")


def test_amounts_round_half_away_from_zero_from_their_decimal_text_as_postgres_does() -> None:
    features = features_of(
        # 1.005 is 1.00499999999999989... as a float: Postgres rounds the text "1.005".
        customer(1, MonthlyCharges="1.005", TotalCharges="0.05", tenure="2"),
        customer(2, MonthlyCharges="29.855", TotalCharges="100.01", tenure="3"),
        customer(3, MonthlyCharges="0.125", TotalCharges="2.675", tenure="1"),
        customer(4, MonthlyCharges="0.005", TotalCharges="0.10", tenure="4"),
        customer(5, MonthlyCharges="99999999.99", TotalCharges="9999999999.99", tenure="120"),
    )
    amounts = features[["monthly_charges", "total_charges", "avg_monthly_spend"]]
    assert amounts.to_numpy().tolist() == [
        [1.01, 0.05, 0.03],  # 0.05 / 2 = 0.025 -> 0.03
        [29.86, 100.01, 33.34],  # 33.3366...
        [0.13, 2.68, 2.68],
        [0.01, 0.10, 0.03],  # 0.025 -> 0.03
        [99999999.99, 9999999999.99, 83333333.33],
    ]
    assert features["charge_increase"].tolist() == [0.98, -3.48, -2.55, -0.02, 16666666.66]


def test_a_new_customer_spends_their_monthly_charge_and_has_not_increased_it() -> None:
    features = features_of(customer(1, tenure="0", TotalCharges="", MonthlyCharges="70.7"))
    row = features.iloc[0]
    assert (row.tenure_months, row.tenure_band, row.total_charges) == (0, "0-6", 0.0)
    assert (row.avg_monthly_spend, row.charge_increase) == (70.7, 0.0)


def test_flags_bands_counts_and_contract_lengths_follow_the_dbt_model() -> None:
    features = features_of(
        customer(1, InternetService="No", **NO_INTERNET_ADD_ONS, Contract="Two year", tenure="49"),
        customer(2, InternetService="Fiber optic", **ALL_ADD_ONS, Contract="one year"),
        customer(3, PaymentMethod="credit card (automatic)", SeniorCitizen="1", tenure="6"),
        customer(4, PhoneService="No", MultipleLines="No phone service", tenure="7"),
    )
    expected = {
        "has_internet": [False, True, True, True],
        "has_fiber_optic": [False, True, False, False],
        "has_dsl": [False, False, True, True],
        "add_on_service_count": [0, 6, 1, 1],
        "streaming_bundle": [False, True, False, False],
        "protection_bundle": [False, True, False, False],
        "contract_length_months": [24, 12, 1, 1],
        "tenure_band": ["49+", "7-12", "0-6", "7-12"],
        "is_automatic_payment": [False, False, True, False],
        "payment_method": [
            "Electronic check",
            "Electronic check",
            "Credit card (automatic)",
            "Electronic check",
        ],
        "is_senior_citizen": [False, False, True, False],
        "has_phone_service": [True, True, True, False],
        "has_partner": [True] * 4,
        "has_dependents": [False] * 4,
    }
    assert {column: features[column].tolist() for column in expected} == expected


@pytest.mark.parametrize(
    ("tenure", "band"),
    [
        *[(0, "0-6"), (6, "0-6"), (7, "7-12"), (12, "7-12"), (13, "13-24"), (24, "13-24")],
        *[(25, "25-48"), (48, "25-48"), (49, "49+"), (120, "49+")],
    ],
)
def test_tenure_bands_end_where_the_dbt_model_ends_them(tenure: int, band: str) -> None:
    features = features_of(customer(1, tenure=str(tenure)))
    assert features["tenure_band"].tolist() == [band]


def test_the_features_are_the_contracts_columns_typed_as_the_table_reader_types_them() -> None:
    validated = validate_records([customer(1), customer(2, tenure="0", TotalCharges="")])
    features = customer_features(validated.valid)
    assert list(features.columns) == ["customer_id", *FEATURE_COLUMNS]
    assert list(features.index) == list(validated.valid.index)
    typed = feature_frame(features, keep_integers=True)
    pd.testing.assert_series_equal(features.dtypes.iloc[1:], typed.dtypes)
    assert features["customer_id"].tolist() == ["0001-AAAAB", "0002-AAAAC"]


def test_a_record_sent_with_the_telco_columns_in_any_order_is_the_same_customer() -> None:
    row = customer(1)
    reordered = {key: row[key] for key in reversed(TELCO_COLUMNS)}
    pd.testing.assert_frame_equal(
        customer_features(validate_records([reordered]).valid),
        customer_features(validate_records([row]).valid),
    )
