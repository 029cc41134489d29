"""The code location loads, and its asset graph, checks and jobs are what we expect."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from retention_pipelines.assets import features
from retention_pipelines.definitions import defs

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_the_asset_graph_runs_from_landing_file_to_champion_model() -> None:
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == {
        "raw_customer_snapshot",
        "stg_customers",
        "customer_features",
        "training_set",
        "churn_model_candidates",
        "registered_churn_model",
        "champion_model",
        "churn_risk_scores",
        "customer_risk_latest",
        "risk_band_summary",
        "feature_drift_report",
        "realised_model_performance",
    }
    for monitored in ("feature_drift_report", "realised_model_performance"):
        assert graph.get(dg.AssetKey(monitored)).parent_keys == {
            dg.AssetKey("customer_features"),
            dg.AssetKey("churn_risk_scores"),
        }
    assert graph.get(dg.AssetKey("training_set")).parent_keys == {dg.AssetKey("customer_features")}
    assert graph.get(dg.AssetKey("champion_model")).parent_keys == {
        dg.AssetKey("training_set"),
        dg.AssetKey("registered_churn_model"),
    }
    assert graph.get(dg.AssetKey("stg_customers")).parent_keys == {
        dg.AssetKey("raw_customer_snapshot")
    }
    assert graph.get(dg.AssetKey("customer_features")).parent_keys == {dg.AssetKey("stg_customers")}
    assert graph.get(dg.AssetKey("customer_risk_latest")).parent_keys == {
        dg.AssetKey("churn_risk_scores"),
        dg.AssetKey("customer_features"),
    }
    assert graph.get(dg.AssetKey("risk_band_summary")).parent_keys == {
        dg.AssetKey("churn_risk_scores")
    }


def test_the_analytics_views_are_their_own_dbt_assets_in_the_analytics_group() -> None:
    graph = defs.resolve_asset_graph()
    analytics = {dg.AssetKey("customer_risk_latest"), dg.AssetKey("risk_band_summary")}
    assert {
        key for key in graph.get_all_asset_keys() if graph.get(key).group_name == "analytics"
    } == analytics
    assert features.retention_dbt_analytics.keys == analytics
    assert not analytics & features.retention_dbt_models.keys
    assert (
        features.retention_dbt_analytics.partitions_def
        == features.retention_dbt_models.partitions_def
    )


def test_ingestion_checks_block_and_dbt_tests_appear_as_checks() -> None:
    checks = {key.to_user_string() for key in defs.resolve_asset_graph().asset_check_keys}
    assert {
        "raw_customer_snapshot:rows_reconcile",
        "raw_customer_snapshot:reject_share_below_threshold",
        "customer_features:unique_combination_of_columns_customer_features_snapshot_date__customer_id",
    } <= checks
    assert sum(key.startswith("customer_features:") for key in checks) > 20


def test_the_night_ends_with_monitoring_and_drift_can_start_a_retraining() -> None:
    job = defs.resolve_job_def("nightly_scoring_job")
    keys = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    assert {"churn_risk_scores", "feature_drift_report", "realised_model_performance"} <= keys
    assert "training_set" not in keys
    sensor = defs.resolve_sensor_def("drift_retrain_sensor")
    assert sensor.job_name == "retrain_job"


def test_every_snapshot_asset_shares_the_daily_partitions() -> None:
    job = defs.resolve_job_def("daily_snapshot_job")
    assert isinstance(job.partitions_def, dg.DailyPartitionsDefinition)
    assert job.partitions_def.end_offset == 1


def test_dagster_validates_the_workspace_from_the_command_line(tmp_path: Path) -> None:
    dagster = Path(sys.executable).parent / "dagster"
    completed = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", str(PROJECT_ROOT / "workspace.yaml")],
        cwd=tmp_path,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_the_jobs_are_the_daily_snapshot_the_night_and_retraining() -> None:
    jobs = {job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__")}
    assert jobs == {"daily_snapshot_job", "nightly_scoring_job", "retrain_job"}
    nightly = defs.resolve_job_def("nightly_scoring_job")
    assert {"raw_customer_snapshot", "churn_risk_scores"} <= {
        key.path[-1] for key in nightly.asset_layer.executable_asset_keys
    }
    retrain = defs.resolve_job_def("retrain_job")
    assert {node.name for node in retrain.nodes} == {
        "training_set",
        "churn_model_candidates",
        "registered_churn_model",
        "champion_model",
    }
