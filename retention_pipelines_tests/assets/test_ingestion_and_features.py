"""The ingestion and dbt stages materialized in-process by Dagster, on real Postgres and dbt."""

import gzip
import shutil
from datetime import date
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from dagster_dbt import DbtCliResource

from retention_pipelines.assets.features import retention_dbt_models, retention_dbt_project
from retention_pipelines.assets.ingestion import raw_customer_snapshot
from retention_pipelines.core.ingestion import landing_file_name
from retention_pipelines.resources import LandingResource, WarehouseResource, dbt_executable
from retention_pipelines_tests.landing_files import customer, write_rows

pytestmark = [pytest.mark.slow, pytest.mark.embedded]
DAY = "2026-01-15"


def _resources(url: str, landing_dir: Path, **landing: object) -> dict[str, object]:
    return {
        "warehouse": WarehouseResource(database_url=url),
        "landing": LandingResource(landing_dir=str(landing_dir), **landing),
        "dbt": DbtCliResource(project_dir=retention_dbt_project, dbt_executable=dbt_executable()),
    }


def _build(
    url: str,
    landing_dir: Path,
    day: str,
    assets: tuple[object, ...] = (raw_customer_snapshot, retention_dbt_models),
    **landing: object,
) -> dg.ExecuteInProcessResult:
    """Materialize one day of the given assets on a throwaway instance; failures returned."""
    return dg.materialize(
        list(assets),
        partition_key=day,
        resources=_resources(url, landing_dir, **landing),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def _land(source: Path, landing_dir: Path, day: str = DAY) -> Path:
    landing_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(source, landing_dir / landing_file_name(date.fromisoformat(day))))


def _count(url: str, table: str, day: str = DAY) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"select count(*) from {table} where snapshot_date = %s", (day,))
        return int(row.fetchone()[0])


def test_the_telco_snapshot_flows_from_landing_file_to_feature_table(
    module_database_url: str, telco_csv: Path, tmp_path: Path
) -> None:
    _land(telco_csv, tmp_path)
    result = _build(module_database_url, tmp_path, DAY)
    assert result.success
    metadata = result.asset_materializations_for_node("raw_customer_snapshot")[0].metadata
    assert metadata["rows_read"].value == 5_634
    assert metadata["rows_rejected"].value == 0
    checks = result.get_asset_check_evaluations()
    assert len(checks) > 40
    assert all(check.passed for check in checks), [c.check_name for c in checks if not c.passed]
    assert _count(module_database_url, "features.customer_features") == 5_634
    with psycopg.connect(module_database_url) as conn:
        churn_rate, new_customers = conn.execute(
            "select avg(churned::int),"
            " count(*) filter (where tenure_months = 0 and total_charges = 0)"
            " from features.customer_features"
        ).fetchone()
    assert float(churn_rate) == pytest.approx(1_495 / 5_634, abs=1e-6)
    assert new_customers == 11


def test_a_second_day_leaves_the_first_day_alone_and_tests_only_its_own_rows(
    module_database_url: str, tmp_path: Path
) -> None:
    day = "2026-01-16"
    with psycopg.connect(module_database_url) as conn:  # a bad value on the first day only
        conn.execute(
            "update raw.customer_snapshots set gender = 'Unknown'"
            " where snapshot_date = %s and source_row_number = 1",
            (DAY,),
        )
    _land(write_rows(tmp_path / "small.csv", [customer(n) for n in range(1, 21)]), tmp_path, day)
    result = _build(module_database_url, tmp_path, day)
    assert result.success
    assert all(check.passed for check in result.get_asset_check_evaluations())
    assert _count(module_database_url, "features.customer_features", day) == 20
    assert _count(module_database_url, "features.customer_features") == 5_634


def test_a_missing_landing_file_fails_the_run_naming_the_expected_path(
    module_database_url: str, tmp_path: Path
) -> None:
    result = _build(module_database_url, tmp_path, "2026-02-01", (raw_customer_snapshot,))
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    message = failure.step_failure_data.error.message
    assert str(tmp_path / "customers_2026-02-01.csv") in message


def test_too_many_rejects_fail_the_blocking_check_and_stop_dbt(
    module_database_url: str, tmp_path: Path
) -> None:
    day = "2026-01-20"
    rows = [customer(n) for n in range(1, 10)] + [customer(50, tenure="many")]
    _land(write_rows(tmp_path / "rejects.csv", rows), tmp_path, day)
    result = _build(module_database_url, tmp_path, day, max_reject_share=0.05)
    assert not result.success
    share = next(
        check
        for check in result.get_asset_check_evaluations()
        if check.check_name == "reject_share_below_threshold"
    )
    assert not share.passed
    assert _count(module_database_url, "raw.customer_rejects", day) == 1
    assert _count(module_database_url, "features.customer_features", day) == 0


def test_a_gzip_landing_file_in_the_configured_format_is_ingested_and_reconciled(
    module_database_url: str, tmp_path: Path
) -> None:
    day = "2026-01-22"
    rows = [customer(n) for n in range(1, 21)] + [customer(99, MonthlyCharges="inf")]
    source = write_rows(tmp_path / "export.csv", rows)
    text = source.read_text().replace(",", ";").replace("\n", "\n\n")
    tmp_path.joinpath(f"customers_{day}.csv.gz").write_bytes(gzip.compress(text.encode()))
    result = _build(module_database_url, tmp_path, day, (raw_customer_snapshot,), delimiter=";")
    assert result.success
    [reconcile] = [
        check
        for check in result.get_asset_check_evaluations()
        if check.check_name == "rows_reconcile"
    ]
    assert reconcile.passed and reconcile.metadata["data_lines"].value == 21
    metadata = result.asset_materializations_for_node("raw_customer_snapshot")[0].metadata
    assert metadata["blank_lines"].value == 22
    assert _count(module_database_url, "raw.customer_rejects", day) == 1


def test_a_refused_landing_file_fails_the_run_with_its_one_line_reason(
    module_database_url: str, tmp_path: Path
) -> None:
    day = "2026-01-23"
    _land(write_rows(tmp_path / "cols.csv", [customer(1)], header=["customerID"]), tmp_path, day)
    result = _build(module_database_url, tmp_path, day, (raw_customer_snapshot,))
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    message = failure.step_failure_data.error.message.strip()
    assert "header does not match the Telco columns" in message
    assert len(message.splitlines()) == 1
