"""The code location: it loads (and imports without touching anything), its asset graph is the
one recorded in ``asset_graph.json``, and settings reach assets through its resources."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from retention_pipelines.assets import features
from retention_pipelines.assets.training import TrainingConfig
from retention_pipelines.definitions import load_definitions
from retention_pipelines.resources import TrainingResource, resources_from_settings
from retention_pipelines.settings import RetentionSettings, get_settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = Path(__file__).with_name("asset_graph.json")


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    return load_definitions()


def asset_graph_snapshot(defs: dg.Definitions) -> dict[str, object]:
    """What an accidental change of lineage would change: per asset its group, partitioning,
    parents and checks (blocking or not); per job its assets; schedules and sensors."""
    graph = defs.resolve_asset_graph()
    checks: dict[str, list[str]] = {}
    for check in graph.asset_check_keys:
        blocking = graph.get_check_spec(check).blocking
        checks.setdefault(check.asset_key.to_user_string(), []).append(
            f"{check.name}{' (blocking)' if blocking else ''}"
        )
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        partitions = node.partitions_def
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "partitions": type(partitions).__name__ if partitions else None,
            "parents": sorted(parent.to_user_string() for parent in node.parent_keys),
            "checks": sorted(checks.get(key.to_user_string(), [])),
        }
    return {
        "assets": assets,
        "jobs": {
            job.name: sorted(k.to_user_string() for k in job.asset_layer.executable_asset_keys)
            for job in sorted(defs.resolve_all_job_defs(), key=lambda job: job.name)
            if not job.name.startswith("__")
        },
        "schedules": {
            schedule.name: [schedule.job_name, schedule.cron_schedule]
            for schedule in map(defs.resolve_schedule_def, _names(defs.schedules))
        },
        "sensors": {
            sensor.name: sensor.job_name
            for sensor in map(defs.resolve_sensor_def, _names(defs.sensors))
        },
    }


def _names(definitions: object) -> list[str]:
    return sorted(item.name for item in definitions or [])  # type: ignore[attr-defined]


def test_the_asset_graph_is_the_recorded_one(defs: dg.Definitions) -> None:
    """A change of keys, groups, partitions, checks or lineage shows here. When it is meant,
    record the new graph with ``UPDATE_ASSET_GRAPH=1 make test PYTEST_ARGS=-k asset_graph``."""
    current = asset_graph_snapshot(defs)
    if os.environ.get("UPDATE_ASSET_GRAPH") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_the_analytics_views_are_their_own_dbt_assets_in_the_analytics_group(
    defs: dg.Definitions,
) -> None:
    graph = defs.resolve_asset_graph()
    analytics = {
        dg.AssetKey(name)
        for name in (
            "customer_risk_latest",
            "risk_band_summary",
            "customer_score_history",
            "top_reasons_daily",
            "call_list_facets",
        )
    }
    model_health = {
        dg.AssetKey(name)
        for name in (
            "model_versions",
            "model_performance_daily",
            "drift_daily",
            "data_quality_daily",
        )
    }
    assert {
        key for key in graph.get_all_asset_keys() if graph.get(key).group_name == "analytics"
    } == analytics | model_health
    assert features.retention_dbt_analytics.keys == analytics
    assert features.retention_dbt_model_health.keys == model_health
    assert not (analytics | model_health) & features.retention_dbt_models.keys


def test_the_call_list_never_waits_for_monitoring_and_model_health_does(
    defs: dg.Definitions,
) -> None:
    """A failed drift or performance step must not keep today's scores from business users."""
    graph = defs.resolve_asset_graph()
    monitoring = {
        key for key in graph.get_all_asset_keys() if graph.get(key).group_name == "monitoring"
    }
    call_list = graph.get(dg.AssetKey("customer_risk_latest"))
    assert not graph.get_ancestor_asset_keys(call_list.key) & monitoring
    assert graph.get(dg.AssetKey("drift_daily")).parent_keys == {
        dg.AssetKey("feature_drift_report")
    }
    assert (
        dg.AssetKey("realised_model_performance")
        in graph.get(dg.AssetKey("model_performance_daily")).parent_keys
    )
    nightly = defs.resolve_job_def("nightly_scoring_job").asset_layer.executable_asset_keys
    assert features.retention_dbt_model_health.keys <= nightly


def test_the_retention_purge_runs_alone_every_day_and_never_in_the_night(
    defs: dg.Definitions,
) -> None:
    """A purge waits for the writers of the dates it deletes: it has a job and a schedule of
    its own, after the nightly run, and no night waits for it."""
    purge = dg.AssetKey("data_retention_purge")
    job = defs.resolve_job_def("data_retention_job")
    assert job.asset_layer.executable_asset_keys == {purge}
    schedule = defs.resolve_schedule_def("data_retention_schedule")
    assert (schedule.job_name, schedule.cron_schedule) == ("data_retention_job", "0 5 * * *")
    assert schedule.execution_timezone == get_settings().timezone
    nightly = defs.resolve_job_def("nightly_scoring_job").asset_layer.executable_asset_keys
    assert purge not in nightly
    assert defs.resolve_asset_graph().get(purge).group_name == "governance"


def test_dbt_tests_appear_as_checks_of_their_models(defs: dg.Definitions) -> None:
    checks = {key.to_user_string() for key in defs.resolve_asset_graph().asset_check_keys}
    assert (
        "customer_features:unique_combination_of_columns_customer_features_snapshot_date__customer_id"
        in checks
    )
    assert sum(key.startswith("customer_features:") for key in checks) > 20


def test_importing_and_loading_the_code_location_touches_no_database_and_writes_nothing(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    script = (
        "import retention_pipelines.definitions as module\n"
        "jobs = sorted(j.name for j in module.defs().resolve_all_job_defs())\n"
        "print(','.join(j for j in jobs if not j.startswith('__')))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={
            **os.environ,
            "RETENTION_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/unreachable",
            "RETENTION_HOME_DIR": str(home),
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == (
        "daily_snapshot_job,data_retention_job,nightly_scoring_job,retrain_job"
    )
    assert not any(tmp_path.iterdir())  # no embedded server started, no file written


def test_a_setting_of_zero_reaches_the_resources_and_a_run_override_of_zero_wins() -> None:
    settings = RetentionSettings(scoring_exact_gap=0, baseline_tolerance=0, retrain_cooldown_days=0)
    resources = resources_from_settings(settings, features.retention_dbt_project)
    assert resources["scoring"].exact_gap == 0
    assert resources["training"].baseline_tolerance == 0
    assert resources["monitoring"].retrain_cooldown_days == 0
    training = TrainingResource(baseline_tolerance=0.5, xgboost_trials=40)
    config = TrainingConfig(baseline_tolerance=0.0)
    assert config.value("baseline_tolerance", training) == 0.0
    assert config.value("xgboost_trials", training) == 40


def test_secrets_reach_the_ui_as_the_names_of_their_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RETENTION_DATABASE_URL", "postgresql://etl:s3cret@db:5432/retention")
    settings = RetentionSettings()
    warehouse = resources_from_settings(settings, features.retention_dbt_project)["warehouse"]
    assert isinstance(warehouse.database_url, dg.EnvVar)
    assert warehouse.database_url.env_var_name == "RETENTION_DATABASE_URL"


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


def test_on_kubernetes_the_partitioned_jobs_run_a_pod_per_step_and_training_stays_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RETENTION_EXECUTOR", "k8s")
    monkeypatch.setenv("RETENTION_K8S_MAX_CONCURRENT_STEPS", "6")
    get_settings.cache_clear()
    try:
        on_k8s = load_definitions()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    for name in ("daily_snapshot_job", "nightly_scoring_job"):
        executor = on_k8s.resolve_job_def(name).executor_def
        assert executor.name == "k8s_step_executor"
        assert executor.executor_creation_fn is not None
    assert on_k8s.resolve_job_def("retrain_job").executor_def.name == "multiprocess"
    local = load_definitions().resolve_job_def("nightly_scoring_job").executor_def
    assert local.name == "multiprocess"
