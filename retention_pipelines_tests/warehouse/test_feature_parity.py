"""The parity test: the API's Python path (``validate_records`` -> ``customer_features``) and the
nightly path (ingestion -> dbt's ``stg_customers`` and ``customer_features``) accept the same
customers, reject the others for the same reasons, and compute every feature alike.

It runs both paths on the whole real Telco file and on 100,000 generated customers followed by
crafted rows at the edges (amounts that round half away from zero, blank and odd spellings,
rejects). The API side reads each file's records as dicts of strings, as a client could send
them. A feature added to one path and not the other fails the column test.
"""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest

from retention_pipelines.core.features import (
    FEATURE_COLUMNS,
    NUMERIC_FEATURES,
    customer_features,
    feature_frame,
)
from retention_pipelines.core.ingestion import landing_file_name, validate_records
from retention_pipelines.core.schemas import ADD_ON_COLUMNS, TELCO_COLUMNS, TELCO_NAME_OF
from retention_pipelines.core.warehouse.tables import CUSTOMER_FEATURES, RAW_REJECTS
from retention_pipelines.datagen import write_landing_csv
from retention_pipelines_tests.helpers import TELCO_DAY, build_snapshot
from retention_pipelines_tests.landing_files import customer

pytestmark = pytest.mark.slow

GENERATED_DAY = "2026-01-16"
GENERATED_CUSTOMERS = 100_000
GENERATED_SEED = 20260116
# Columns of the table that are not features: the keys and the label.
NOT_FEATURES = {"snapshot_date", "customer_id", "churned"}
ALL_ADD_ONS = {TELCO_NAME_OF[column]: "Yes" for column in ADD_ON_COLUMNS}
NO_INTERNET_ADD_ONS = {TELCO_NAME_OF[column]: "No internet service" for column in ADD_ON_COLUMNS}
EDGE_ROWS = [
    customer(9001, MonthlyCharges="1.005", TotalCharges="0.05", tenure="2"),
    customer(9002, MonthlyCharges="29.855", TotalCharges="100.01", tenure="3"),
    customer(9003, MonthlyCharges="0.125", TotalCharges="2.675", tenure="1"),
    customer(9004, MonthlyCharges="0.005", TotalCharges="0.015", tenure="1"),
    customer(9005, TotalCharges="0.10", tenure="4"),
    customer(9006, tenure="0", TotalCharges="", Churn=""),
    customer(9007, tenure="0", TotalCharges="12.34"),
    customer(9008, MonthlyCharges="1e2", TotalCharges="1.2345e3", tenure="12.0"),
    customer(9009, TotalCharges="-0", tenure="12"),
    customer(9010, MonthlyCharges="99999999.99", TotalCharges="9999999999.99", tenure="120"),
    customer(9011, gender=" female ", Partner="YES", Contract="one year", SeniorCitizen="Yes"),
    customer(9012, PaymentMethod="credit card (automatic)", Churn="n/a"),
    customer(9013, InternetService="Fiber optic", **ALL_ADD_ONS, Contract="Two year"),
    customer(9014, InternetService="No", **NO_INTERNET_ADD_ONS, tenure="49"),
    customer(9015, PhoneService="No", MultipleLines="No phone service", tenure="7"),
    # rejected on both paths
    customer(9016, tenure="5", TotalCharges=" "),
    customer(9017, tenure="abc", MonthlyCharges="12,50"),
    customer(9018, InternetService="Satellite", Churn="Maybe"),
    customer(9019, gender="F\x01"),
    customer(9020, tenure="121", TotalCharges="inf"),
    customer(9021, InternetService="No"),
]


@pytest.fixture(scope="module")
def generated_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100,000 customers as ``retention generate`` writes them, then the edge rows."""
    folder = tmp_path_factory.mktemp("landing")
    path = write_landing_csv(
        folder / landing_file_name(date.fromisoformat(GENERATED_DAY)),
        GENERATED_CUSTOMERS,
        seed=GENERATED_SEED,
    )
    with path.open("a", newline="", encoding="utf-8") as handle:
        csv.DictWriter(handle, fieldnames=TELCO_COLUMNS, lineterminator="\n").writerows(EDGE_ROWS)
    return path


@pytest.fixture(scope="module")
def landing_files(telco_csv: Path, generated_csv: Path) -> dict[str, Path]:
    return {TELCO_DAY: telco_csv, GENERATED_DAY: generated_csv}


@pytest.fixture(scope="module")
def warehouse(
    module_database_url: str,
    landing_files: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """This module's database holding both days, each ingested and built by the real dbt
    project as the nightly job does; one dbt target folder, so the second build reuses the
    first one's parse."""
    target = tmp_path_factory.mktemp("dbt")
    for day, path in landing_files.items():
        build_snapshot(module_database_url, path, day, target)
    return module_database_url


def table_feature_columns(url: str) -> set[str]:
    schema, table = CUSTOMER_FEATURES.split(".")
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select column_name from information_schema.columns"
            " where table_schema = %s and table_name = %s",
            (schema, table),
        ).fetchall()
    return {str(row[0]) for row in rows} - NOT_FEATURES


def table_features(url: str, day: str) -> pd.DataFrame:
    with psycopg.connect(url) as conn:
        cursor = conn.execute(f"select * from {CUSTOMER_FEATURES} where snapshot_date = %s", (day,))
        frame = pd.DataFrame(cursor.fetchall(), columns=[c.name for c in cursor.description])
    typed = feature_frame(frame, keep_integers=True)
    typed.insert(0, "customer_id", frame["customer_id"])
    return typed.set_index("customer_id").sort_index()


def table_rejects(url: str, day: str) -> dict[int, list[str]]:
    """The day's rejects by the record's position (row 1 is the first record)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"select row_number, reasons from {RAW_REJECTS} where snapshot_date = %s", (day,)
        ).fetchall()
    return dict(sorted((int(row_number) - 1, list(reasons)) for row_number, reasons in rows))


def api_path(path: Path) -> tuple[pd.DataFrame, dict[int, list[str]]]:
    """The file's records as a client sends them, through the API's validation and features."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        records = list(csv.DictReader(handle))
    validated = validate_records(records)
    features = customer_features(validated.valid)
    return features.set_index("customer_id").sort_index(), validated.reasons


def differences(ours: pd.DataFrame, theirs: pd.DataFrame) -> dict[str, str]:
    """Per feature, how many customers differ and a few examples (id, Python, dbt)."""
    found = {}
    for column in FEATURE_COLUMNS:
        if column in NUMERIC_FEATURES:
            same = np.isclose(ours[column], theirs[column], rtol=0, atol=1e-9)
        else:
            same = (ours[column].astype(object) == theirs[column].astype(object)).to_numpy()
        if not same.all():
            examples = [
                (customer_id, ours.at[customer_id, column], theirs.at[customer_id, column])
                for customer_id in ours.index[~same][:3]
            ]
            found[column] = f"{int((~same).sum()):,} differ, e.g. {examples}"
    return found


def test_python_computes_exactly_the_tables_feature_columns(warehouse: str) -> None:
    python_columns = list(customer_features(validate_records([customer(1)]).valid).columns)
    assert python_columns == ["customer_id", *FEATURE_COLUMNS]
    assert table_feature_columns(warehouse) == set(FEATURE_COLUMNS)


@pytest.mark.parametrize("day", [TELCO_DAY, GENERATED_DAY], ids=["telco", "generated"])
def test_the_api_and_the_nightly_path_agree_on_every_customer_and_feature(
    warehouse: str, landing_files: dict[str, Path], day: str
) -> None:
    ours, our_reasons = api_path(landing_files[day])
    theirs = table_features(warehouse, day)

    assert our_reasons == table_rejects(warehouse, day)
    if day == GENERATED_DAY:  # the crafted rejects, and no generated customer
        assert list(our_reasons) == list(range(GENERATED_CUSTOMERS + 15, GENERATED_CUSTOMERS + 21))
    assert ours.index.is_unique and theirs.index.is_unique
    assert set(ours.index) == set(theirs.index)
    assert len(ours) == (5_634 if day == TELCO_DAY else GENERATED_CUSTOMERS + 15)
    assert ours.notna().all().all() and theirs.notna().all().all()
    pd.testing.assert_series_equal(ours.dtypes, theirs.dtypes)
    assert differences(ours, theirs.loc[ours.index]) == {}
