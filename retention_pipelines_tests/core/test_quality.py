"""The Great Expectations suite on ``features.customer_features``: on the real Telco snapshot
built by dbt, on a corrupted copy of it, on an empty day, and as a Dagster asset check."""

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg
import pytest
from dagster_dbt import DbtCliResource

from retention_pipelines.assets import features, ingestion
from retention_pipelines.assets.features import retention_dbt_models, retention_dbt_project
from retention_pipelines.automation import daily_snapshot_job
from retention_pipelines.checks.quality import quality_checks
from retention_pipelines.core.quality import (
    QualityReport,
    run_suite,
    validate_customer_features,
)
from retention_pipelines.resources import (
    LandingResource,
    MonitoringResource,
    WarehouseResource,
    dbt_executable,
)
from retention_pipelines_tests.helpers import TELCO_DAY

pytestmark = [pytest.mark.slow]

TELCO_ROWS = 5_634
CORRUPTED_DAY = date(2026, 1, 16)
BROKEN_CHARGES = 40
BROKEN_CONTRACTS = 7


def _recorded(url: str, day: date) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select success, expectations, failed, results, docs_path, checked_at"
            " from monitoring.data_quality where snapshot_date = %s",
            (day,),
        ).fetchall()


def _failed(report: QualityReport) -> set[tuple[str, str | None, str | None]]:
    return {(item.expectation, item.column, item.condition) for item in report.failures}


def test_the_telco_snapshot_meets_the_suite_and_its_verdict_is_recorded(
    telco_warehouse: str, tmp_path: Path
) -> None:
    day = date.fromisoformat(TELCO_DAY)
    report = validate_customer_features(telco_warehouse, day, tmp_path / "data_docs")

    assert report.success, report.failures_frame().to_string()
    assert (report.rows, report.expected_rows) == (TELCO_ROWS, TELCO_ROWS)
    assert report.expectations > 40
    assert report.failures == ()
    kinds = {item.expectation for item in report.results}
    assert {
        "expect_table_row_count_to_equal",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_column_pair_values_a_to_be_greater_than_b",
    } <= kinds
    assert report.docs_path == tmp_path / "data_docs" / TELCO_DAY / "index.html"
    assert "customer_features" in report.docs_path.read_text()

    [(success, expectations, failed, results, docs_path, _)] = _recorded(telco_warehouse, day)
    assert (success, expectations, failed) == (True, report.expectations, 0)
    assert docs_path == str(report.docs_path)
    assert len(results) == report.expectations
    assert {"expectation", "column", "condition", "success", "observed"} == set(results[0])
    row_count = next(r for r in results if r["expectation"] == "expect_table_row_count_to_equal")
    assert row_count["observed"] == TELCO_ROWS


def test_a_second_run_replaces_the_dates_row_and_its_data_docs(
    telco_warehouse: str, tmp_path: Path
) -> None:
    day = date.fromisoformat(TELCO_DAY)
    validate_customer_features(telco_warehouse, day, tmp_path)
    [first] = _recorded(telco_warehouse, day)
    report = validate_customer_features(telco_warehouse, day, tmp_path)

    [second] = _recorded(telco_warehouse, day)
    assert second[5] > first[5]  # checked_at
    pages = list((tmp_path / TELCO_DAY / "validations").rglob("*.html"))
    assert len(pages) == 1, "the date's site holds the latest validation only"
    assert [path.name for path in tmp_path.iterdir()] == [TELCO_DAY], "no build folder left"
    assert report.docs_path.exists()


@pytest.fixture
def corrupted_day(telco_warehouse: str) -> Iterator[date]:
    """A copy of the Telco day under another date, with nulls in ``monthly_charges`` and
    contract lengths that contradict the contract; removed afterwards."""
    with psycopg.connect(telco_warehouse) as conn:
        for table in ("raw.customer_snapshots", "features.customer_features"):
            conn.execute(
                f"create temp table day_copy as select * from {table} where snapshot_date = %s",
                (TELCO_DAY,),
            )
            conn.execute("update day_copy set snapshot_date = %s", (CORRUPTED_DAY,))
            conn.execute(f"insert into {table} select * from day_copy")
            conn.execute("drop table day_copy")
        conn.execute(
            "update features.customer_features set monthly_charges = null"
            " where snapshot_date = %s and customer_id in (select customer_id"
            "  from features.customer_features where snapshot_date = %s"
            "  order by customer_id limit %s)",
            (CORRUPTED_DAY, CORRUPTED_DAY, BROKEN_CHARGES),
        )
        conn.execute(
            "update features.customer_features set contract_length_months = 12"
            " where snapshot_date = %s and customer_id in (select customer_id"
            "  from features.customer_features"
            "  where snapshot_date = %s and contract = 'Month-to-month'"
            "  order by customer_id desc limit %s)",
            (CORRUPTED_DAY, CORRUPTED_DAY, BROKEN_CONTRACTS),
        )
    try:
        yield CORRUPTED_DAY
    finally:
        with psycopg.connect(telco_warehouse) as conn:
            for table in ("raw.customer_snapshots", "features.customer_features"):
                conn.execute(f"delete from {table} where snapshot_date = %s", (CORRUPTED_DAY,))
            conn.execute(
                "delete from monitoring.data_quality where snapshot_date = %s", (CORRUPTED_DAY,)
            )


def test_a_corrupted_day_fails_naming_the_broken_expectations(
    telco_warehouse: str, corrupted_day: date, tmp_path: Path
) -> None:
    report = validate_customer_features(telco_warehouse, corrupted_day, tmp_path)

    assert not report.success
    assert report.rows == TELCO_ROWS
    month_to_month = "contract == 'Month-to-month'"
    assert _failed(report) == {
        ("expect_column_values_to_not_be_null", "monthly_charges", None),
        ("expect_column_values_to_be_in_set", "contract_length_months", month_to_month),
    }
    nulls, lengths = sorted(report.failures, key=lambda item: item.expectation, reverse=True)
    assert nulls.observed["unexpected_count"] == BROKEN_CHARGES
    assert lengths.observed["unexpected_count"] == BROKEN_CONTRACTS
    assert set(lengths.observed) == {"unexpected_count", "unexpected_percent"}  # no values
    table = report.failures_frame().set_index(["expectation", "column"])
    assert table.loc[("expect_column_values_to_not_be_null", "monthly_charges"), "rows"] == "all"
    lengths_row = table.loc[("expect_column_values_to_be_in_set", "contract_length_months")]
    assert lengths_row["rows"] == month_to_month
    assert lengths_row["observed"].startswith(f"{BROKEN_CONTRACTS} unexpected")
    assert table.loc[
        ("expect_column_values_to_not_be_null", "monthly_charges"), "observed"
    ].startswith(f"{BROKEN_CHARGES} unexpected")

    [(success, _, failed, results, _, _)] = _recorded(telco_warehouse, corrupted_day)
    assert (success, failed) == (False, len(report.failures))
    assert sum(not result["success"] for result in results) == failed


def test_an_empty_partition_is_a_failed_suite_with_a_clear_message(
    database_url: str, tmp_path: Path
) -> None:
    day = date(2026, 3, 1)
    report = validate_customer_features(database_url, day, tmp_path)

    assert not report.success
    assert (report.rows, report.expected_rows) == (0, 0)
    assert _failed(report) == {("expect_table_row_count_to_be_between", None, None)}
    assert report.message.startswith("no rows of features.customer_features for 2026-03-01")
    assert report.docs_path.exists()
    [(success, _, failed, _, _, _)] = _recorded(database_url, day)
    assert (success, failed) == (False, 1)


def test_an_expectation_that_cannot_be_evaluated_fails_with_its_error(tmp_path: Path) -> None:
    frame = pd.DataFrame({"customer_id": ["0001-ABCDE"]})  # every other column missing
    report = run_suite(frame, date(2026, 3, 2), expected_rows=1, docs_dir=tmp_path)

    assert not report.success
    gender = next(item for item in report.failures if item.column == "gender")
    assert 'The column "gender" in BatchData does not exist' in gender.observed["error"]
    assert report.failures_frame()["observed"].str.startswith("error: ").any()


def test_the_check_runs_on_the_partition_in_the_dbt_run(
    telco_warehouse: str, tmp_path: Path
) -> None:
    result = dg.materialize(
        [retention_dbt_models, *quality_checks],
        partition_key=TELCO_DAY,
        resources={
            "warehouse": WarehouseResource(database_url=telco_warehouse),
            "monitoring": MonitoringResource(reports_dir=str(tmp_path / "reports")),
            "dbt": DbtCliResource(
                project_dir=retention_dbt_project, dbt_executable=dbt_executable()
            ),
        },
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )

    assert result.success
    evaluation = next(
        check
        for check in result.get_asset_check_evaluations()
        if check.check_name == "great_expectations_suite"
    )
    assert evaluation.asset_key == dg.AssetKey("customer_features")
    assert evaluation.passed, evaluation.metadata["failed_expectations"].value
    assert evaluation.metadata["failed"].value == 0
    assert evaluation.metadata["expectations"].value > 40
    assert evaluation.metadata["rows"].value == TELCO_ROWS
    docs = evaluation.metadata["data_docs"].value
    assert docs.startswith("file://")
    assert docs.endswith(f"/data_docs/{TELCO_DAY}/index.html")


def test_the_daily_snapshot_job_runs_the_suite_after_the_features() -> None:
    defs = dg.Definitions(
        assets=[*dg.load_assets_from_modules([ingestion, features])],
        asset_checks=quality_checks,
        jobs=[daily_snapshot_job],
        resources={
            "warehouse": WarehouseResource(),
            "landing": LandingResource(landing_dir="landing"),
            "monitoring": MonitoringResource(),
            "dbt": DbtCliResource(
                project_dir=retention_dbt_project, dbt_executable=dbt_executable()
            ),
        },
    )
    job = defs.resolve_job_def("daily_snapshot_job")
    upstream = job.graph.dependency_structure.input_to_upstream_outputs_for_node(
        "customer_features_great_expectations_suite"
    )
    assert {output.node.name for outputs in upstream.values() for output in outputs} == {
        "retention_dbt_models"
    }
    [spec] = quality_checks[0].check_specs
    assert (spec.asset_key, spec.name, spec.blocking) == (
        dg.AssetKey("customer_features"),
        "great_expectations_suite",
        True,
    )
