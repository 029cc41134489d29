"""The closed loop end to end, in process on real Postgres, MLflow and Dagster: four simulated
nights whose data drifts from day 3, run night after night (two quiet, the drifted one, one
after it); the sensor retrains once, a new version is registered and the gate's decision
recorded."""

from collections.abc import Iterator
from datetime import date, timedelta

import dagster as dg
import psycopg
import pytest

from retention_pipelines.assets.features import retention_dbt_project
from retention_pipelines.automation import drift_retrain_sensor
from retention_pipelines.core import registry, retraining
from retention_pipelines.datagen import Simulation, write_simulation
from retention_pipelines.definitions import load_definitions
from retention_pipelines.resources import resources_from_settings
from retention_pipelines.settings import get_settings
from retention_pipelines_tests.helpers import TINY_TRAINING, platform_settings

pytestmark = pytest.mark.slow
START = date(2026, 4, 1)
DAYS = 4
DRIFT_FROM = 3


@pytest.fixture(scope="module")
def platform(
    module_database_url: str, server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The platform's settings pointed at throwaway stores, with the simulated nights landed."""
    with platform_settings(module_database_url, server_url, tmp_path_factory.mktemp("home")):
        simulation = Simulation(
            customers=1_500, days=DAYS, start=START, drift_from=DRIFT_FROM, seed=11
        )
        list(write_simulation(simulation, get_settings().resolved_landing_dir))
        yield module_database_url


def _drift_rows(url: str) -> dict[date, tuple[bool, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select snapshot_date, dataset_drift, reference_model_version"
            " from monitoring.drift_reports order by 1"
        ).fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


def test_drifting_nights_retrain_once_and_the_gate_decides(platform: str) -> None:
    instance = dg.DagsterInstance.ephemeral()
    defs = load_definitions()
    first = START.isoformat()
    assert (
        defs.resolve_job_def("daily_snapshot_job")
        .execute_in_process(partition_key=first, instance=instance)
        .success
    )
    assert (
        defs.resolve_job_def("retrain_job")
        .execute_in_process(run_config=TINY_TRAINING, instance=instance)
        .success
    )
    built = resources_from_settings(get_settings(), retention_dbt_project)
    resources = {name: built[name] for name in ("warehouse", "mlflow_registry", "monitoring")}
    retrained: list[tuple[date, dg.RunRequest]] = []
    skipped: dict[date, str] = {}
    for offset in range(DAYS):
        day = START + timedelta(days=offset)
        night = defs.resolve_job_def("nightly_scoring_job").execute_in_process(
            partition_key=day.isoformat(), instance=instance
        )
        assert night.success, day
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            tick = drift_retrain_sensor(context)
        if isinstance(tick, dg.SkipReason):
            skipped[day] = tick.skip_message or ""
            continue
        retrained.append((day, tick))
        assert (
            defs.resolve_job_def("retrain_job")
            .execute_in_process(
                run_config=TINY_TRAINING,
                instance=instance,
                tags={**tick.tags, "dagster/run_key": tick.run_key or ""},
            )
            .success
        )

    drift_day = START + timedelta(days=DRIFT_FROM - 1)
    reports = _drift_rows(platform)
    assert len(reports) == DAYS
    assert [day for day, (drifted, _) in reports.items() if drifted and day < drift_day] == []
    assert reports[drift_day] == (True, "1")
    assert [day for day, _ in retrained] == [drift_day]
    assert retrained[0][1].run_key == f"retrain-1-{drift_day}"
    assert retrained[0][1].tags[retraining.TRIGGER_TAG] == "drift"
    for offset in range(DRIFT_FROM, DAYS):
        assert START + timedelta(days=offset) in skipped

    with dg.build_resources(resources) as initialized:
        client = initialized.mlflow_registry.client
    versions = {
        str(v.version): v for v in client.search_model_versions(f"name='{registry.MODEL_NAME}'")
    }
    assert set(versions) == {"1", "2"}
    assert versions["2"].tags.get("gate_decision")
    champion = registry.champion_version(client)
    # After the retraining, the drift of the following nights is measured against the
    # champion of the night: the new version when the gate promoted it.
    after = START + timedelta(days=DRIFT_FROM)
    assert reports[after][1] == champion
    scored_by = _versions_scoring(platform, after)
    assert scored_by == [champion]


def _versions_scoring(url: str, day: date) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select distinct model_version from ml.churn_risk_scores where snapshot_date = %s",
            (day,),
        ).fetchall()
    return [row[0] for row in rows]
