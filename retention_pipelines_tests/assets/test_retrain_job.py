"""``retrain_job`` end to end in-process (real Postgres, dbt, Optuna storage and MLflow store)
with a tiny budget, and the behaviour of the model it registers."""

import json
import shutil
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import psycopg
import pytest
import sqlalchemy
from dagster_dbt import DbtCliResource
from mlflow import MlflowClient

from retention_pipelines.assets.features import retention_dbt_models, retention_dbt_project
from retention_pipelines.assets.ingestion import raw_customer_snapshot
from retention_pipelines.churn_model.model import ChurnModel
from retention_pipelines.core import database, registry
from retention_pipelines.core.features import feature_frame
from retention_pipelines.core.warehouse.model_versions import read_model_versions
from retention_pipelines.definitions import load_definitions
from retention_pipelines.resources import (
    LandingResource,
    MlflowResource,
    WarehouseResource,
    dbt_executable,
)

pytestmark = pytest.mark.slow
DAY = "2026-01-15"
TINY_BUDGET = {
    "seed": 11,
    "xgboost_trials": 4,
    "xgboost_timeout_s": 30,
    "catboost_trials": 1,
    "catboost_timeout_s": 30,
    # A one-trial CatBoost may trail the baseline a little; the default budget may not.
    "baseline_tolerance": 0.03,
}


@pytest.fixture(scope="module")
def resources(
    module_database_url: str, mlflow_uri: str, telco_csv: Path, tmp_path_factory
) -> dict[str, object]:
    landing = tmp_path_factory.mktemp("landing")
    shutil.copyfile(telco_csv, landing / f"customers_{DAY}.csv")
    warehouse = WarehouseResource(database_url=module_database_url)
    built = {
        "warehouse": warehouse,
        "landing": LandingResource(landing_dir=str(landing)),
        "dbt": DbtCliResource(project_dir=retention_dbt_project, dbt_executable=dbt_executable()),
        "mlflow_registry": MlflowResource(
            warehouse=warehouse,
            tracking_uri=mlflow_uri,
            artifact_root=str(tmp_path_factory.mktemp("mlartifacts")),
            experiment="churn-model-tests",
        ),
    }
    snapshot = dg.materialize(
        [raw_customer_snapshot, retention_dbt_models],
        partition_key=DAY,
        resources=built,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert snapshot.success
    return built


def _retrain(resources: dict[str, object]) -> dg.ExecuteInProcessResult:
    job = load_definitions().resolve_job_def("retrain_job")
    config = {
        "ops": {
            name: {"config": TINY_BUDGET} for name in ("training_set", "churn_model_candidates")
        }
    }
    return job.execute_in_process(
        run_config=config, resources=resources, instance=dg.DagsterInstance.ephemeral()
    )


@pytest.fixture(scope="module")
def first_run(resources: dict[str, object]) -> dg.ExecuteInProcessResult:
    result = _retrain(resources)
    assert result.success
    return result


@pytest.fixture(scope="module")
def champion(first_run: dg.ExecuteInProcessResult, mlflow_uri: str) -> ChurnModel:
    mlflow.set_tracking_uri(mlflow_uri)
    model, version = registry.load_champion(MlflowClient(mlflow_uri))
    assert version == registry.champion_version(MlflowClient(mlflow_uri))
    return model


@pytest.fixture(scope="module")
def test_rows(module_database_url: str) -> pd.DataFrame:
    with psycopg.connect(module_database_url) as conn:
        cursor = conn.execute("select * from features.customer_features")
        frame = pd.DataFrame(cursor.fetchall(), columns=[c.name for c in cursor.description])
    return frame


def test_the_first_training_registers_a_challenger_that_becomes_champion(
    first_run: dg.ExecuteInProcessResult, mlflow_uri: str, module_database_url: str
) -> None:
    client = MlflowClient(mlflow_uri)
    version = client.get_model_version_by_alias(registry.MODEL_NAME, registry.CHALLENGER)
    assert str(version.version) == "1"
    assert registry.champion_version(client) == "1"
    assert version.tags["dagster_run_id"] == first_run.run_id
    assert version.tags["data_snapshots"] == DAY
    gate = first_run.asset_materializations_for_node("champion_model")[0].metadata
    assert gate["decision"].value == "promoted"
    # The warehouse's copy of the registry, which the dashboard reads, follows the gate.
    assert gate["model_versions_synced"].value == 1
    [synced] = read_model_versions(module_database_url)
    test_figures = first_run.output_for_node("churn_model_candidates").test
    assert (synced["model_version"], synced["is_champion"], synced["is_challenger"]) == (
        "1",
        True,
        True,
    )
    assert synced["test_roc_auc"] == pytest.approx(test_figures["roc_auc"])
    assert synced["test_brier"] == pytest.approx(test_figures["brier"])
    assert synced["training_snapshots"] == DAY
    assert synced["gate_decision"] == gate["reason"].value


def test_a_second_training_is_identical_and_goes_through_the_gate(
    first_run: dg.ExecuteInProcessResult,
    resources: dict[str, object],
    mlflow_uri: str,
    module_database_url: str,
) -> None:
    second = _retrain(resources)
    assert second.success
    # Same data, seed and budget: the same model, to the sixth decimal.
    before = first_run.output_for_node("churn_model_candidates")
    after = second.output_for_node("churn_model_candidates")
    assert after.winner == before.winner
    assert (
        after.candidates[after.winner].tuned.params == before.candidates[before.winner].tuned.params
    )
    assert after.model.tree_weight == before.model.tree_weight
    for name, value in before.test.items():
        assert after.test[name] == pytest.approx(value, abs=1e-6)
    # An equally good challenger is "at least as good": the gate promotes it.
    gate = second.asset_materializations_for_node("champion_model")[0].metadata
    assert gate["champion_version_before"].value == "1"
    assert gate["decision"].value == "promoted"
    client = MlflowClient(mlflow_uri)
    assert registry.champion_version(client) == "2"
    assert client.get_model_version(registry.MODEL_NAME, "2").tags["gate_decision"]
    assert [
        (row["model_version"], row["is_champion"])
        for row in read_model_versions(module_database_url)
    ] == [("2", True), ("1", False)]


def test_month_to_month_customers_score_higher_than_two_year_ones(
    champion: ChurnModel, test_rows: pd.DataFrame
) -> None:
    rows = feature_frame(test_rows.head(500))
    monthly = rows.assign(contract="Month-to-month", contract_length_months=1.0)
    two_year = rows.assign(contract="Two year", contract_length_months=24.0)
    assert champion.predict_proba(monthly).mean() > champion.predict_proba(two_year).mean()


def test_the_customer_id_changes_nothing(champion: ChurnModel, test_rows: pd.DataFrame) -> None:
    rows = test_rows.head(200)
    renamed = rows.assign(customer_id=[f"9{n:03d}-ZZZZZ" for n in range(len(rows))])
    first = champion.predict_proba(feature_frame(rows))
    again = champion.predict_proba(feature_frame(renamed))
    assert np.array_equal(first, again)


def test_predictions_are_probabilities_and_calibrated(
    champion: ChurnModel, test_rows: pd.DataFrame
) -> None:
    probabilities = champion.predict_proba(feature_frame(test_rows))
    labels = test_rows["churned"].astype(int).to_numpy()
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    # Expected calibration error over ten equal-count bins. 0.05 leaves room for sampling
    # noise (about 0.03 per bin of 560 rows at a 27% rate) and still catches a model whose
    # probabilities are off by a few points everywhere.
    order = np.argsort(probabilities)
    bins = np.array_split(order, 10)
    error = sum(len(b) * abs(probabilities[b].mean() - labels[b].mean()) for b in bins) / len(
        labels
    )
    assert error < 0.05


def test_unseen_categories_and_missing_values_do_not_crash_prediction(
    champion: ChurnModel, test_rows: pd.DataFrame
) -> None:
    rows = feature_frame(test_rows.head(3))
    rows.loc[rows.index[0], "payment_method"] = "Crypto wallet"
    rows.loc[rows.index[1], "monthly_charges"] = np.nan
    rows.loc[rows.index[2], "tenure_band"] = None
    probabilities = champion.predict_proba(rows)
    assert np.all((probabilities >= 0) & (probabilities <= 1))


def test_the_champion_takes_rows_read_straight_from_the_feature_table_through_plain_mlflow(
    first_run: dg.ExecuteInProcessResult,
    champion: ChurnModel,
    module_database_url: str,
    mlflow_uri: str,
) -> None:
    mlflow.set_tracking_uri(mlflow_uri)
    loaded = mlflow.pyfunc.load_model(f"models:/{registry.MODEL_NAME}@{registry.CHAMPION}")
    engine = sqlalchemy.create_engine(database.sqlalchemy_url(module_database_url))
    with engine.connect() as connection:
        rows = pd.read_sql_query(
            "select * from features.customer_features order by customer_id limit 50", connection
        )
    engine.dispose()
    assert rows["tenure_months"].dtype == np.int64  # integers, as the table types them
    expected = champion.predict_proba(feature_frame(rows))
    predicted = loaded.predict(rows)["churn_probability"].to_numpy()  # snapshot_date, ids too
    assert np.abs(predicted - expected).max() < 1e-12
    one = json.loads(rows.iloc[[0]].to_json(orient="records", date_format="iso"))[0]
    assert loaded.predict(one)["churn_probability"].iloc[0] == pytest.approx(expected[0])
