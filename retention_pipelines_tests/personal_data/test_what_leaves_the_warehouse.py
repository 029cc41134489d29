"""Each way customer data could leave the warehouse, closed one by one: Great Expectations
results and Data Docs keep counts but no values, a headerless landing file is refused without
quoting its first row, the API's access log names customers by pseudonym, the MLflow input
example is made up (and the model still loads and answers it), the ingestion's metadata is a
profile of values rather than rows, and a training split handed between steps is a reference
to warehouse rows that resolves to the same split, or fails when the rows changed."""

import html
import json
import logging
import re
from datetime import date
from pathlib import Path

import mlflow
import pandas as pd
import psycopg
import pytest

from retention_pipelines.churn_model import pyfunc
from retention_pipelines.core.features import FEATURE_COLUMNS, INTEGER_FEATURES
from retention_pipelines.core.ingestion import LandingFileError, check_landing_file
from retention_pipelines.core.pseudonyms import display
from retention_pipelines.core.quality import run_suite
from retention_pipelines.core.tracking import example_features
from retention_pipelines.core.training import split_training_set
from retention_pipelines.core.training_reference import (
    SplitReference,
    StaleTrainingDataError,
    reference_to,
    resolve,
)
from retention_pipelines.core.warehouse.features import read_labelled
from retention_pipelines.core.warehouse.raw import PROFILE_COLUMNS, partition_profile
from retention_pipelines.serving import access_log
from retention_pipelines.serving.app import create_app
from retention_pipelines.settings import RetentionSettings
from retention_pipelines_tests.churn_models import constant_churn_model
from retention_pipelines_tests.helpers import TELCO_DAY
from retention_pipelines_tests.personal_data.search import ids_in, ids_in_files

KEY = b"a-key-of-the-tests-for-pseudonyms"
CUSTOMER = "7590-VHVEG"


def test_data_docs_and_results_keep_counts_and_no_values(tmp_path: Path) -> None:
    features = example_features()
    features.insert(0, "customer_id", [CUSTOMER, CUSTOMER])  # a duplicated id
    features["churned"] = [True, False]
    features.loc[1, "contract"] = "Fortnightly"  # not a contract: an attribute breaking a rule
    report = run_suite(features, date(2026, 3, 9), expected_rows=2, docs_dir=tmp_path)

    failed = {(item.expectation, item.column) for item in report.failures}
    assert ("expect_column_values_to_be_unique", "customer_id") in failed
    assert ("expect_column_values_to_be_in_set", "contract") in failed
    unique = next(item for item in report.failures if item.column == "customer_id")
    assert unique.observed == {"unexpected_count": 2, "unexpected_percent": 100.0}
    row = report.as_row()
    assert CUSTOMER not in json.dumps(row, default=str)
    assert "Fortnightly" not in json.dumps(row, default=str)
    assert "Fortnightly" not in report.failures_frame().to_string()
    assert ids_in_files(tmp_path, {CUSTOMER}).found == {}
    pages = [path.read_text(encoding="utf-8") for path in tmp_path.rglob("*.html")]
    assert pages and not any("Fortnightly" in page for page in pages)
    # What failed is still shown: the expectation, its rule and how many rows broke it.
    [validation] = [_text(path) for path in tmp_path.glob("*/validations/**/*.html")]
    assert "customer_id Status Expectation Observed Value values must be unique." in validation
    assert "must be unique. 2 unexpected values found. 100% of 2 total rows." in validation


def _text(page: Path) -> str:
    """A Data Docs page's words, as a browser shows them."""
    words = re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8"))
    return re.sub(r"\s+", " ", html.unescape(words))


def test_a_file_without_a_header_is_refused_without_quoting_its_first_row(
    telco_csv: Path, tmp_path: Path
) -> None:
    lines = telco_csv.read_text(encoding="utf-8").splitlines(keepends=True)
    headerless = tmp_path / "customers.csv"
    headerless.write_text("".join(lines[1:50]), encoding="utf-8")
    first_row = lines[1].strip().split(",")
    with pytest.raises(LandingFileError) as refused:
        check_landing_file(headerless, max_bytes=10**8)
    message = str(refused.value)
    assert "seems to have no header" in message
    assert first_row[0] not in message
    assert not any(value in message for value in first_row[1:] if len(value) > 3)


def test_the_access_log_names_customers_by_pseudonym(caplog: pytest.LogCaptureFixture) -> None:
    settings = RetentionSettings(pseudonym_key=KEY.decode())  # type: ignore[call-arg]
    create_app(settings)  # installs the filter on uvicorn's access logger
    logger = logging.getLogger(access_log.ACCESS_LOGGER)
    with caplog.at_level(logging.INFO, logger=access_log.ACCESS_LOGGER):
        for path in (f"/v1/customers/{CUSTOMER}/risk", f"/v1/customer/{CUSTOMER}?x=1", "/live"):
            # The call uvicorn makes: client, method, path with query string, version, status.
            logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5123", "GET", path, "1.1", 200)
    lines = [record.getMessage() for record in caplog.records]
    shown = display(CUSTOMER, KEY)
    assert lines == [
        f'127.0.0.1:5123 - "GET /v1/customers/~{shown}/risk HTTP/1.1" 200',
        f'127.0.0.1:5123 - "GET /v1/customer/~{shown}?x=1 HTTP/1.1" 200',
        '127.0.0.1:5123 - "GET /live HTTP/1.1" 200',
    ]
    assert access_log.pseudonymous_path("/v1/customers/7590%2DVHVEG/risk", KEY) == (
        f"/v1/customers/~{shown}/risk"
    )
    create_app(settings)
    assert len([f for f in logger.filters if isinstance(f, access_log.PseudonymousAccessLog)]) == 1


def test_the_input_example_is_made_up_and_the_logged_model_answers_it(
    mlflow_uri: str, tmp_path: Path
) -> None:
    example = example_features()
    assert list(example.columns) == list(FEATURE_COLUMNS)
    assert not example.isna().any().any()
    model = constant_churn_model(0.3)
    experiment = mlflow.MlflowClient(mlflow_uri).create_experiment(
        f"example-{tmp_path.name}", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    with mlflow.start_run(experiment_id=experiment):
        info = pyfunc.log_model(
            model,
            name="model",
            signature=pyfunc.signature(model, INTEGER_FEATURES),
            input_example=example,
            pip_requirements=["mlflow"],
        )
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    stored = mlflow.models.Model.load(info.model_uri).load_input_example(
        mlflow.artifacts.download_artifacts(info.model_uri)
    )
    pd.testing.assert_frame_equal(
        pd.DataFrame(stored)[list(FEATURE_COLUMNS)].astype(str),
        example.astype(str),
        check_dtype=False,
    )
    answer = loaded.predict(example)
    assert list(answer[pyfunc.PROBABILITY_COLUMN].round(6)) == [0.3, 0.3]


# --- with the Telco snapshot in the warehouse -----------------------------------------------


@pytest.mark.slow
def test_the_ingestion_profile_counts_values_and_holds_no_row(telco_warehouse: str) -> None:
    profile = partition_profile(telco_warehouse, date.fromisoformat(TELCO_DAY))
    assert list(profile.columns) == ["column", "value", "rows", "share"]
    assert list(dict.fromkeys(profile["column"])) == list(PROFILE_COLUMNS)
    totals = profile.groupby("column")["rows"].sum()
    assert set(totals) == {5_634}
    assert set(profile.loc[profile["column"] == "churn", "value"]) == {"Yes", "No"}
    assert profile.groupby("column")["share"].sum().round(2).eq(1.0).all()
    assert ids_in(profile.to_csv(), {CUSTOMER}) == set()


@pytest.mark.slow
def test_a_training_split_is_stored_as_a_reference_that_resolves_to_the_same_rows(
    telco_warehouse: str,
) -> None:
    frame, _ = read_labelled(telco_warehouse, 1)
    split = split_training_set(frame, seed=7)
    stored = reference_to(split).to_json()
    assert ids_in(stored, set(frame["customer_id"])) == set()
    assert "Month-to-month" not in stored

    resolved = resolve(telco_warehouse, SplitReference.from_json(stored))
    for part in ("train", "validation", "test"):
        pd.testing.assert_frame_equal(getattr(resolved, part), getattr(split, part))

    customer = split.test["customer_id"].iloc[0]
    with psycopg.connect(telco_warehouse) as conn:
        conn.execute(
            "update features.customer_features set monthly_charges = monthly_charges + 1"
            " where customer_id = %s",
            (customer,),
        )
    try:
        with pytest.raises(StaleTrainingDataError, match="materialize the whole retrain_job"):
            resolve(telco_warehouse, SplitReference.from_json(stored))
    finally:
        with psycopg.connect(telco_warehouse) as conn:
            conn.execute(
                "update features.customer_features set monthly_charges = monthly_charges - 1"
                " where customer_id = %s",
                (customer,),
            )
