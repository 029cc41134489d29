"""The retraining sensor against real monitoring rows, a real MLflow registry and a real
Dagster instance: it retrains once per drift, says why when it does not, and respects data
quality and the cooldown."""

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from retention_pipelines.automation import drift_retrain_sensor
from retention_pipelines.core import retraining
from retention_pipelines.definitions import load_definitions
from retention_pipelines.resources import MlflowResource, MonitoringResource, WarehouseResource
from retention_pipelines_tests.helpers import register_champion

pytestmark = pytest.mark.slow
DAY = date(2026, 3, 10)
TEST_AUC = 0.85


@pytest.fixture(scope="module")
def mlflow_registry(
    mlflow_uri: str, server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> MlflowResource:
    return MlflowResource(
        warehouse=WarehouseResource(database_url=server_url),
        tracking_uri=mlflow_uri,
        artifact_root=str(tmp_path_factory.mktemp("mlartifacts")),
        experiment="sensor",
    )


@pytest.fixture(scope="module")
def champion(mlflow_registry: MlflowResource) -> str:
    """Version 1, the champion, with its test ROC AUC logged."""
    return register_champion(mlflow_registry.client, test_auc=TEST_AUC)


@pytest.fixture
def resources(database_url: str, mlflow_registry: MlflowResource, champion: str) -> dict:
    return {
        "warehouse": WarehouseResource(database_url=database_url),
        "mlflow_registry": mlflow_registry,
        "monitoring": MonitoringResource(),
    }


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


def _tick(instance: dg.DagsterInstance, resources: dict) -> dg.RunRequest | dg.SkipReason:
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        return drift_retrain_sensor(context)


def _skipped(instance: dg.DagsterInstance, resources: dict) -> str:
    """The reason of a tick that must not retrain."""
    result = _tick(instance, resources)
    assert isinstance(result, dg.SkipReason)
    return result.skip_message or ""


def _launch(instance: dg.DagsterInstance, request: dg.RunRequest) -> None:
    """What the daemon does with a request: a run of retrain_job with its tags and key."""
    instance.create_run_for_job(
        load_definitions().resolve_job_def("retrain_job"),
        tags={**request.tags, "dagster/run_key": request.run_key},
    )


def _drift_report(
    url: str, day: date, *, drifted: bool, version: str = "1", share: float | None = None
) -> None:
    share = share if share is not None else (0.4 if drifted else 0.05)
    columns = [{"column": "monthly_charges", "method": "wasserstein", "score": 0.3}] * drifted
    with psycopg.connect(url) as conn:
        conn.execute(
            "insert into monitoring.drift_reports (snapshot_date, reference_model_version,"
            " reference_snapshots, reference_rows, current_rows, dataset_drift, drift_share,"
            " drift_share_threshold, drifted_columns, column_results, findings, report_path)"
            " values (%s, %s, '2026-03-01', 5634, 5000, %s, %s, 0.2, %s, %s, '[]', 'r.html')",
            (day, version, drifted, share, json.dumps(columns), json.dumps(columns)),
        )


def _quality(url: str, day: date, *, success: bool) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            "insert into monitoring.data_quality (snapshot_date, success, expectations, failed,"
            " results) values (%s, %s, 20, %s, '[]')",
            (day, success, 0 if success else 2),
        )


def _drifted_day(url: str, day: date, *, quality: bool | None = True) -> None:
    _drift_report(url, day, drifted=True)
    if quality is not None:
        _quality(url, day, success=quality)


def test_without_a_report_or_without_drift_it_skips_and_says_why(
    database_url: str, resources: dict, instance: dg.DagsterInstance
) -> None:
    assert "no drift report yet" in _skipped(instance, resources)
    _drift_report(database_url, DAY, drifted=False)
    _quality(database_url, DAY, success=True)
    assert f"no drift on {DAY}" in _skipped(instance, resources)


def test_drift_requests_exactly_one_retraining_however_often_it_is_evaluated(
    database_url: str, resources: dict, instance: dg.DagsterInstance
) -> None:
    _drifted_day(database_url, DAY)
    request = _tick(instance, resources)
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == f"retrain-1-{DAY}"
    assert request.tags[retraining.TRIGGER_TAG] == "drift"
    assert request.tags[retraining.DRIFT_DATE_TAG] == DAY.isoformat()
    assert "monthly_charges" in request.tags[retraining.REASON_TAG]
    # The same tick again, before the daemon launched anything: the same key, which Dagster
    # launches once.
    again = _tick(instance, resources)
    assert isinstance(again, dg.RunRequest) and again.run_key == request.run_key
    _launch(instance, request)
    # A restarted daemon (a fresh evaluation context) sees the launched run.
    assert "cooldown" in _skipped(instance, resources)
    assert len(instance.get_runs(dg.RunsFilter(job_name="retrain_job"))) == 1


def test_the_cooldown_holds_back_consecutive_drifted_days(
    database_url: str, resources: dict, instance: dg.DagsterInstance
) -> None:
    _drifted_day(database_url, DAY)
    first = _tick(instance, resources)
    assert isinstance(first, dg.RunRequest)
    _launch(instance, first)
    for offset in range(1, 7):
        _drifted_day(database_url, DAY + timedelta(days=offset))
        assert "cooldown 7 days" in _skipped(instance, resources)
    week_later = DAY + timedelta(days=7)
    _drifted_day(database_url, week_later)
    second = _tick(instance, resources)
    assert isinstance(second, dg.RunRequest)
    assert second.run_key == f"retrain-1-{week_later}"


@pytest.mark.parametrize(("quality", "state"), [(False, "failed"), (None, "has not run")])
def test_no_retraining_on_data_that_failed_or_skipped_its_quality_suite(
    database_url: str,
    resources: dict,
    instance: dg.DagsterInstance,
    quality: bool | None,
    state: str,
) -> None:
    _drifted_day(database_url, DAY, quality=quality)
    assert f"data quality suite of {DAY} {state}" in _skipped(instance, resources)


def test_a_report_against_an_earlier_champion_waits_for_the_next_one(
    database_url: str, resources: dict, instance: dg.DagsterInstance
) -> None:
    _drift_report(database_url, DAY, drifted=True, version="0")
    _quality(database_url, DAY, success=True)
    assert "the champion is now v1" in _skipped(instance, resources)


def test_a_drop_in_realised_performance_retrains_too(
    database_url: str, resources: dict, instance: dg.DagsterInstance
) -> None:
    _drift_report(database_url, DAY, drifted=False)
    _quality(database_url, DAY, success=True)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "insert into monitoring.model_performance (evaluated_on, score_date, model_version,"
            " customers, churned, roc_auc, top_decile_lift, brier, mean_probability,"
            " churn_rate, calibration) values (%s, %s, '1', 5000, 1300, 0.71, 1.9, 0.2, 0.26,"
            " 0.26, '[]')",
            (DAY, DAY - timedelta(days=5)),
        )
    request = _tick(instance, resources)
    assert isinstance(request, dg.RunRequest)
    assert request.tags[retraining.TRIGGER_TAG] == "performance"
    assert "realised ROC AUC 0.710" in request.tags[retraining.REASON_TAG]


def test_the_decision_explains_itself_before_the_first_champion() -> None:
    decision = retraining.decide_retraining(
        report=None,
        champion_version=None,
        quality_passed=None,
        last_drift_retrain=None,
        cooldown_days=7,
    )
    assert not decision.retrain
    assert "no champion yet" in decision.reason


def test_the_reports_folder_setting_is_where_the_html_goes(tmp_path: Path) -> None:
    from retention_pipelines.settings import RetentionSettings  # noqa: PLC0415

    assert RetentionSettings(home_dir=tmp_path).resolved_reports_dir == tmp_path / "reports"
    assert RetentionSettings(reports_dir=tmp_path / "r").resolved_reports_dir == tmp_path / "r"
