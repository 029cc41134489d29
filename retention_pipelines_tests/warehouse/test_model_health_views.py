"""What the dashboard's trends and model-health pages read, on real Postgres, MLflow and dbt: the
registry's versions synced into ml.model_versions, then one dbt build (models, data tests and
unit tests) of the analytics and model-health models over hand-made scores and monitoring
rows, read back through the reader login, which sees analytics and nothing behind it."""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from mlflow import MlflowClient
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from typer.testing import CliRunner

from retention_pipelines.cli import app
from retention_pipelines.core import database, registry
from retention_pipelines.core.ingestion import check_landing_file, read_validated_chunks
from retention_pipelines.core.warehouse.model_versions import (
    read_model_versions,
    sync_model_versions,
)
from retention_pipelines.core.warehouse.raw import replace_snapshot_partition
from retention_pipelines.resources import WarehouseResource, dbt_executable
from retention_pipelines.settings import get_settings
from retention_pipelines_tests.helpers import register_champion
from retention_pipelines_tests.landing_files import customer, write_rows

pytestmark = pytest.mark.slow
DAY_0, DAY_1, DAY_2 = date(2026, 1, 14), date(2026, 1, 15), date(2026, 1, 16)
SCORED_AT = datetime(2026, 1, 16, 2, tzinfo=UTC)
CONTRACT, TENURE, FIBER = (
    "Contract: Month-to-month",
    "Tenure months",
    "Internet service: Fiber optic",
)
# (snapshot date, customer number, probability, band, strongest reason, model version)
SCORES = [
    (DAY_1, 0, 0.75, "high", CONTRACT, "1"),
    (DAY_1, 1, 0.5, "medium", CONTRACT, "1"),
    (DAY_1, 2, 0.25, "low", TENURE, "1"),
    (DAY_2, 0, 0.875, "high", TENURE, "2"),
    (DAY_2, 1, 0.375, "medium", CONTRACT, "2"),
    (DAY_2, 2, 0.125, "low", TENURE, "2"),
    (DAY_2, 3, 0.625, "high", FIBER, "2"),
]
NEW_UNIT_TESTS = {
    "test_top_reasons_daily_counts_and_ranks_first_reasons_per_day",
    "test_model_performance_daily_latest_judgement_vs_training",
    "test_drift_daily_lists_the_drifted_columns_sorted",
    "test_data_quality_daily_lists_failed_expectations_in_order",
}


# ---------- the registry's versions in the warehouse


@pytest.fixture(scope="module")
def synced_versions(module_database_url: str, mlflow_uri: str) -> int:
    """Two versions, the second promoted over the first and trained as a full run tags it."""
    client = MlflowClient(mlflow_uri)
    register_champion(client, test_auc=0.875)
    second = register_champion(client, test_auc=0.75)
    client.set_registered_model_alias(registry.MODEL_NAME, registry.CHALLENGER, second)
    run_id = client.get_model_version(registry.MODEL_NAME, second).run_id
    for name, value in {
        "test_brier": 0.125,
        "test_top_decile_lift": 2.5,
        "baseline_test_roc_auc": 0.6875,
    }.items():
        client.log_metric(run_id, name, value)
    for name, value in {
        "gate_decision": "at least as good as the champion",
        "data_snapshots": "2026-01-14,2026-01-15",
        "training_rows": "1234",
    }.items():
        client.set_model_version_tag(registry.MODEL_NAME, second, name, value)
    return sync_model_versions(module_database_url, client)


def test_a_sync_copies_every_version_with_its_aliases_promotion_and_test_figures(
    module_database_url: str, synced_versions: int
) -> None:
    rows = read_model_versions(module_database_url)
    assert synced_versions == 2
    assert [row["model_version"] for row in rows] == ["2", "1"]
    newest, oldest = rows
    moments = ("registered_at", "promoted_at", "synced_at")
    assert {key: value for key, value in newest.items() if key not in moments} == {
        "model_name": "churn-model",
        "model_version": "2",
        "is_champion": True,
        "is_challenger": True,
        "promoted_by": "pytest",
        "promotion_reason": "promoted by a test",
        "gate_decision": "at least as good as the champion",
        "training_snapshots": "2026-01-14,2026-01-15",
        "training_rows": 1234,
        "test_roc_auc": 0.75,
        "test_brier": 0.125,
        "test_top_decile_lift": 2.5,
        "baseline_test_roc_auc": 0.6875,
    }
    assert (oldest["is_champion"], oldest["is_challenger"], oldest["test_roc_auc"]) == (
        False,
        False,
        0.875,
    )
    assert (oldest["gate_decision"], oldest["training_rows"], oldest["test_brier"]) == (
        None,
        None,
        None,
    )
    assert oldest["promoted_at"] is not None and newest["promoted_at"] >= oldest["promoted_at"]
    assert oldest["registered_at"] <= newest["registered_at"] <= newest["synced_at"]


def test_a_sync_without_a_registered_model_empties_the_models_rows_and_leaves_others_alone(
    database_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(database_url) as conn:
        for name in ("churn-model", "another-model"):
            conn.execute(
                "insert into ml.model_versions (model_name, model_version, registered_at,"
                " is_champion, is_challenger, synced_at)"
                " values (%s, '9', now(), true, false, now())",
                (name,),
            )
    empty_registry = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")

    assert sync_model_versions(database_url, empty_registry) == 0
    assert [row["model_name"] for row in read_model_versions(database_url)] == ["another-model"]


def test_promoting_or_rolling_back_on_the_command_line_updates_the_warehouses_copy(
    server_url: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = f"retention_test_mlflow_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("RETENTION_DATABASE_URL", database_url)
    monkeypatch.setenv("RETENTION_MLFLOW_DATABASE", store)
    get_settings.cache_clear()
    try:
        client = MlflowClient(registry.mlflow_tracking_uri(database_url, store))
        register_champion(client, test_auc=0.75)
        register_champion(client, test_auc=0.875)
        rolled_back = CliRunner().invoke(app, ["model", "rollback", "--reason", "too many calls"])
        after_rollback = read_model_versions(database_url)
        promoted = CliRunner().invoke(app, ["model", "promote", "2", "--reason", "fixed"])
        after_promotion = read_model_versions(database_url)
    finally:
        get_settings.cache_clear()
        database.drop_database(server_url, store)

    assert rolled_back.exit_code == promoted.exit_code == 0, rolled_back.output + promoted.output
    champions = [[row["is_champion"] for row in rows] for rows in (after_rollback, after_promotion)]
    assert champions == [[False, True], [True, False]]  # versions 2, 1
    assert after_promotion[0]["promotion_reason"] == "fixed"
    assert str(after_promotion[0]["promoted_by"]).startswith("cli:")


# ---------- the dbt models over scores and monitoring rows


@pytest.fixture(scope="module")
def customers(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Four customers of DAY_2's snapshot, ingested as the nightly job does."""
    rows = [customer(n) for n in range(4)]
    landing = write_rows(tmp_path_factory.mktemp("landing") / "day.csv", rows)
    replace_snapshot_partition(
        module_database_url,
        snapshot_date=DAY_2,
        facts=check_landing_file(landing, max_bytes=10**6),
        chunks=read_validated_chunks(landing, chunk_rows=100),
    )
    return [row["customerID"] for row in rows]


def _insert_scores(conn: psycopg.Connection, ids: list[str]) -> None:
    with conn.cursor() as cursor:
        cursor.executemany(
            "insert into ml.churn_risk_scores values (%s, %s, %s, %s, %s, 0.8, 'Gender: Male',"
            " 0.2, 'Paperless billing', 0.1, 'churn-model', %s, %s)",
            [
                (day, ids[number], probability, band, reason, version, SCORED_AT)
                for day, number, probability, band, reason, version in SCORES
            ],
        )


def _drift_report(day: date, drifted: list[str]) -> dict[str, Any]:
    return {
        "snapshot_date": day,
        "reference_model_version": "2",
        "reference_snapshots": "2026-01-14,2026-01-15",
        "reference_rows": 1234,
        "current_rows": 4,
        "dataset_drift": len(drifted) >= 2,
        "drift_share": len(drifted) / 4,
        "drift_share_threshold": 0.5,
        "drifted_columns": Jsonb(
            [{"column": c, "method": "psi", "score": 0.3, "threshold": 0.1} for c in drifted]
        ),
        "column_results": Jsonb([]),
        "findings": Jsonb([]),
        "report_path": f"/reports/{day}.html",
    }


def _quality(day: date, failed: list[tuple[str, str | None]], passed: int) -> dict[str, Any]:
    results = [
        {"expectation": expectation, "column": column, "condition": None, "success": False}
        for expectation, column in failed
    ] + [{"expectation": "expect_column_to_exist", "column": "x", "success": True}] * passed
    return {
        "snapshot_date": day,
        "success": not failed,
        "expectations": len(results),
        "failed": len(failed),
        "results": Jsonb(results),
    }


# (evaluated_on, score_date, model_version, customers, churned, roc_auc, brier)
PERFORMANCE = [
    (DAY_1, DAY_0, "1", 3, 1, 0.75, 0.125),
    (DAY_2, DAY_0, "1", 3, 1, 0.625, 0.25),
    (DAY_2, DAY_1, "1", 3, 2, 0.5, 0.1875),
    (DAY_2, DAY_1, "2", 4, 1, 0.8125, 0.0625),
]
CALIBRATION = [{"bin": 8, "mean_probability": 0.75, "churn_rate": 0.5, "customers": 2}]


def _insert_monitoring(conn: psycopg.Connection) -> None:
    with conn.cursor() as cursor:
        for report in (
            _drift_report(DAY_1, []),
            _drift_report(DAY_2, ["tenure_months", "contract"]),
        ):
            cursor.execute(
                f"insert into monitoring.drift_reports ({', '.join(report)})"
                f" values ({', '.join(['%s'] * len(report))})",
                list(report.values()),
            )
        for quality in (
            _quality(DAY_1, [], passed=2),
            _quality(
                DAY_2,
                [
                    ("expect_table_row_count_to_equal", None),
                    ("expect_column_values_to_be_between", "tenure_months"),
                ],
                passed=1,
            ),
        ):
            cursor.execute(
                f"insert into monitoring.data_quality ({', '.join(quality)})"
                f" values ({', '.join(['%s'] * len(quality))})",
                list(quality.values()),
            )
        cursor.executemany(
            "insert into monitoring.model_performance (evaluated_on, score_date, model_version,"
            " customers, churned, roc_auc, brier, top_decile_lift, mean_probability, churn_rate,"
            " calibration) values (%s, %s, %s, %s, %s, %s, %s, 2.0, 0.5, 0.375, %s)",
            [(*row, Jsonb(CALIBRATION)) for row in PERFORMANCE],
        )


@pytest.fixture(scope="module")
def dbt_build(
    module_database_url: str,
    customers: list[str],
    synced_versions: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> list[dict[str, Any]]:
    """One ``dbt build`` of DAY_2 (every model, data test and unit test of the project) as the
    platform runs dbt; its run results."""
    with psycopg.connect(module_database_url) as conn:
        _insert_scores(conn, customers)
        _insert_monitoring(conn)
    target = tmp_path_factory.mktemp("dbt")
    project = get_settings().dbt_project_dir
    with WarehouseResource(database_url=module_database_url).dbt_environment():
        subprocess.run(
            [dbt_executable(), "build", "--quiet",
             "--project-dir", str(project), "--profiles-dir", str(project),
             "--target-path", str(target),
             "--vars", json.dumps({"snapshot_date": DAY_2.isoformat()})],
            check=True,
        )  # fmt: skip
    return json.loads((target / "run_results.json").read_text())["results"]


def test_the_build_passes_every_data_test_and_the_new_unit_tests(
    dbt_build: list[dict[str, Any]],
) -> None:
    statuses = {result["unique_id"]: result["status"] for result in dbt_build}
    unit_tests = {key.rsplit(".", 1)[-1] for key in statuses if key.startswith("unit_test.")}
    assert unit_tests >= NEW_UNIT_TESTS
    model_health_tests = [
        key
        for key in statuses
        if key.startswith("test.")
        and any(name in key for name in ("model_versions", "_daily_", "top_reasons"))
    ]
    assert len(model_health_tests) >= 40
    assert set(statuses.values()) <= {"success", "pass"}


def _reader(url: str) -> psycopg.Connection:
    """The same database, as the reader group's shared login."""
    settings = get_settings()
    parts = database.connection_parts(url)
    return psycopg.connect(
        host=parts.host,
        port=parts.port,
        dbname=parts.dbname,
        user=settings.reader_login,
        password=settings.reader_password.get_secret_value(),
        autocommit=True,
    )


def _read(url: str, query: str) -> list[dict[str, Any]]:
    with _reader(url) as conn, conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(query).fetchall()  # type: ignore[arg-type]


def test_the_reader_sees_each_days_most_frequent_first_reasons(
    module_database_url: str, dbt_build: list[dict[str, Any]]
) -> None:
    rows = _read(module_database_url, "select * from analytics.top_reasons_daily")
    assert [tuple(row.values()) for row in rows] == [
        (DAY_2, TENURE, 2, 0.5, 1),
        (DAY_2, CONTRACT, 1, 0.25, 2),
        (DAY_2, FIBER, 1, 0.25, 3),
        (DAY_1, CONTRACT, 2, pytest.approx(2 / 3), 1),
        (DAY_1, TENURE, 1, pytest.approx(1 / 3), 2),
    ]


def test_the_call_list_is_a_table_with_its_indexes_read_in_rank_order(
    module_database_url: str, customers: list[str], dbt_build: list[dict[str, Any]]
) -> None:
    rows = _read(
        module_database_url,
        "select risk_rank, customer_id, snapshot_date, risk_band, contract"
        " from analytics.customer_risk_latest order by risk_rank",
    )
    assert [(row["customer_id"], row["risk_band"]) for row in rows] == [
        (customers[0], "high"),
        (customers[3], "high"),
        (customers[1], "medium"),
        (customers[2], "low"),
    ]
    assert {row["snapshot_date"] for row in rows} == {DAY_2}
    assert {row["contract"] for row in rows} == {"Month-to-month"}
    with psycopg.connect(module_database_url) as conn:
        kind = conn.execute("select relkind from pg_class where oid = %s::regclass",
                            ("analytics.customer_risk_latest",)).fetchone()  # fmt: skip
        indexes = conn.execute(
            "select regexp_replace(indexdef, '^.* USING btree ', ''), indexdef like '%UNIQUE%'"
            " from pg_indexes where schemaname = 'analytics'"
            " and tablename = 'customer_risk_latest' order by 1"
        ).fetchall()
    assert kind == ("r",)
    assert indexes == [("(customer_id)", True), ("(risk_rank)", True), ("(snapshot_date)", False)]


def test_the_reader_sees_every_version_with_the_champion_marked(
    module_database_url: str, dbt_build: list[dict[str, Any]]
) -> None:
    rows = _read(
        module_database_url,
        "select model_version, is_champion, is_challenger, promoted_by, test_roc_auc,"
        " baseline_test_roc_auc, training_rows from analytics.model_versions",
    )
    assert [tuple(row.values()) for row in rows] == [
        ("2", True, True, "pytest", 0.75, 0.6875, 1234),
        ("1", False, False, "pytest", 0.875, None, None),
    ]


def test_the_reader_sees_each_score_dates_latest_realised_performance_against_training(
    module_database_url: str, dbt_build: list[dict[str, Any]]
) -> None:
    rows = _read(
        module_database_url,
        "select score_date, evaluated_on, model_version, customers, churned, roc_auc, brier,"
        " training_roc_auc, roc_auc_drop from analytics.model_performance_daily",
    )
    assert [tuple(row.values()) for row in rows] == [
        (DAY_1, DAY_2, "1", 3, 2, 0.5, 0.1875, 0.875, 0.375),
        (DAY_1, DAY_2, "2", 4, 1, 0.8125, 0.0625, 0.75, -0.0625),
        (DAY_0, DAY_2, "1", 3, 1, 0.625, 0.25, 0.875, 0.25),
    ]
    calibration = _read(
        module_database_url,
        "select calibration, top_decile_lift, mean_probability, churn_rate"
        " from analytics.model_performance_daily limit 1",
    )
    assert calibration == [
        {
            "calibration": CALIBRATION,
            "top_decile_lift": 2.0,
            "mean_probability": 0.5,
            "churn_rate": 0.375,
        }
    ]


def test_the_reader_sees_drift_per_day_with_the_drifted_columns_in_one_line(
    module_database_url: str, dbt_build: list[dict[str, Any]]
) -> None:
    rows = _read(
        module_database_url,
        "select snapshot_date, reference_model_version, dataset_drift, drift_share,"
        " drift_share_threshold, drifted_column_count, drifted_columns, current_rows"
        " from analytics.drift_daily",
    )
    assert [tuple(row.values()) for row in rows] == [
        (DAY_2, "2", True, 0.5, 0.5, 2, "contract, tenure_months", 4),
        (DAY_1, "2", False, 0.0, 0.5, 0, "", 4),
    ]


def test_the_reader_sees_data_quality_per_day_with_the_failed_expectations(
    module_database_url: str, dbt_build: list[dict[str, Any]]
) -> None:
    rows = _read(
        module_database_url,
        "select snapshot_date, success, expectations, failed, failed_expectations,"
        " checked_at is not null as checked from analytics.data_quality_daily",
    )
    assert [tuple(row.values()) for row in rows] == [
        (
            DAY_2,
            False,
            3,
            2,
            "expect_table_row_count_to_equal; expect_column_values_to_be_between on tenure_months",
            True,
        ),
        (DAY_1, True, 2, 0, "", True),
    ]


@pytest.mark.parametrize(
    "table",
    [
        "ml.model_versions",
        "monitoring.model_performance",
        "monitoring.drift_reports",
        "monitoring.data_quality",
    ],
)
def test_the_reader_cannot_read_the_tables_behind_the_model_health_views(
    module_database_url: str, dbt_build: list[dict[str, Any]], table: str
) -> None:
    with (
        _reader(module_database_url) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(f"select count(*) from {table}")  # type: ignore[arg-type]
