"""Realised model performance on the real Telco labels in real Postgres: scores of earlier
dates with known probabilities, judged by the labels of ``TELCO_DAY`` and checked against
scikit-learn and the training's own metric definitions."""

import base64
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import psycopg
import pytest
from sklearn.metrics import roc_auc_score

from retention_pipelines.assets.monitoring import (
    NO_LABELS,
    realised_model_performance,
)
from retention_pipelines.core import registry
from retention_pipelines.core.performance import (
    ChampionReference,
    champion_reference,
    performance_drop,
    realised_auc_plot,
    record_performance,
)
from retention_pipelines.core.training import evaluate
from retention_pipelines.core.warehouse.monitoring import read_performance, realised_auc_history
from retention_pipelines.core.warehouse.scores import SCORE_COLUMNS
from retention_pipelines.core.warehouse.streams import copy_in
from retention_pipelines.resources import MlflowResource, MonitoringResource, WarehouseResource
from retention_pipelines_tests.helpers import TELCO_DAY, register_champion

DAY = date.fromisoformat(TELCO_DAY)
OLD = DAY - timedelta(days=40)  # beyond the default 31-day horizon
EARLIER = DAY - timedelta(days=10)
RECENT = DAY - timedelta(days=3)
LATER = DAY + timedelta(days=7)  # the same labels again, a week on
UNLABELLED = DAY + timedelta(days=20)  # feature rows whose churn is not known yet
ONE_CLASS_CUSTOMERS = 25
HORIZON = 31


def _probabilities(labels: np.ndarray, seed: int) -> np.ndarray:
    """Informative but imperfect, rounded to two decimals so that ties occur, and clipped so
    that exact 0 and 1 occur too."""
    rng = np.random.default_rng(seed)
    noisy = 0.25 + 0.3 * labels + rng.normal(0, 0.22, len(labels))
    return np.clip(noisy, 0.0, 1.0).round(2)


def _score_rows(
    day: date, customers: pd.Series, probability: np.ndarray, version: str | np.ndarray
) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "snapshot_date": day.isoformat(),
            "customer_id": customers.to_numpy(),
            "churn_probability": probability,
            "risk_band": "low",
            "model_name": registry.MODEL_NAME,
            "model_version": version,
            "scored_at": "2026-01-01T02:00:00+00:00",
        }
    )
    for rank in (1, 2, 3):
        frame[f"top_reason_{rank}"] = "Contract: Month-to-month"
        frame[f"top_reason_{rank}_contribution"] = 0.1
    return frame[list(SCORE_COLUMNS)]


def _copy_features(url: str, to_day: date, *, labelled: bool) -> None:
    """``TELCO_DAY``'s feature rows again on ``to_day``, with or without their labels."""
    with psycopg.connect(url) as conn:
        columns = [
            row[0]
            for row in conn.execute(
                "select column_name from information_schema.columns where table_schema ="
                " 'features' and table_name = 'customer_features' order by ordinal_position"
            ).fetchall()
        ]
        values = {"snapshot_date": "%(day)s::date", "churned": "churned" if labelled else "null"}
        selected = ", ".join(values.get(column, column) for column in columns)
        conn.execute(
            f"insert into features.customer_features ({', '.join(columns)})"
            f" select {selected} from features.customer_features where snapshot_date = %(from)s",
            {"day": to_day, "from": DAY},
        )


@pytest.fixture(scope="module")
def history(
    telco_warehouse: str, telco_features: pd.DataFrame
) -> dict[tuple[date, str], pd.DataFrame]:
    """Scores of four dates around ``TELCO_DAY``; returns the groups within the horizon with
    their customers' probabilities and labels, in customer id order."""
    labelled = telco_features[["customer_id", "churned"]].reset_index(drop=True)
    labels = labelled["churned"].astype(int).to_numpy()
    ids = labelled["customer_id"]
    stayers = np.flatnonzero(labels == 0)[:ONE_CLASS_CUSTOMERS]
    recent_version = np.full(len(ids), "2", dtype=object)
    recent_version[stayers] = "3"
    frames = {
        OLD: _score_rows(OLD, ids, _probabilities(labels, 1), "1"),
        EARLIER: _score_rows(EARLIER, ids, _probabilities(labels, 2), "1"),
        RECENT: _score_rows(RECENT, ids, _probabilities(labels, 3), recent_version),
        DAY: _score_rows(DAY, ids, _probabilities(labels, 4), "2"),
    }
    with psycopg.connect(telco_warehouse) as conn:
        for frame in frames.values():
            copy_in(conn, "ml.churn_risk_scores", frame, SCORE_COLUMNS)
    _copy_features(telco_warehouse, LATER, labelled=True)
    _copy_features(telco_warehouse, UNLABELLED, labelled=False)
    groups = {}
    for day in (EARLIER, RECENT):
        frame = frames[day].assign(label=labels)
        for version, rows in frame.groupby("model_version"):
            groups[(day, version)] = rows.sort_values("customer_id").reset_index(drop=True)
    return groups


@pytest.mark.slow
def test_realised_metrics_match_scikit_learn_and_the_training_definitions(
    telco_warehouse: str, history: dict[tuple[date, str], pd.DataFrame]
) -> None:
    outcome = record_performance(telco_warehouse, DAY, horizon_days=HORIZON)
    assert outcome.labelled_customers == 5_634
    assert [(g.score_date, g.model_version) for g in outcome.groups] == [
        (EARLIER, "1"),
        (RECENT, "2"),
        (RECENT, "3"),
    ]
    assert outcome.customers_joined == 2 * 5_634
    for group in outcome.groups[:2]:
        rows = history[(group.score_date, group.model_version)]
        labels = rows["label"].to_numpy()
        probabilities = rows["churn_probability"].to_numpy()
        expected = evaluate(labels, probabilities)
        assert group.customers == len(rows)
        assert group.churned == labels.sum()
        assert group.roc_auc == pytest.approx(roc_auc_score(labels, probabilities), abs=1e-12)
        assert group.roc_auc == pytest.approx(expected["roc_auc"], abs=1e-12)
        assert 0.7 < group.roc_auc < 0.95
        assert group.top_decile_lift == pytest.approx(expected["top_decile_lift"], abs=1e-12)
        assert group.brier == pytest.approx(expected["brier"], abs=1e-12)
        assert group.mean_probability == pytest.approx(probabilities.mean(), abs=1e-12)
        assert group.churn_rate == pytest.approx(labels.mean(), abs=1e-12)


@pytest.mark.slow
def test_the_calibration_table_splits_the_group_into_tenths(
    telco_warehouse: str, history: dict[tuple[date, str], pd.DataFrame]
) -> None:
    record_performance(telco_warehouse, DAY, horizon_days=HORIZON)
    row = read_performance(telco_warehouse, DAY).iloc[0]
    rows = history[(EARLIER, "1")]
    bins = row["calibration"]
    assert [entry["bin"] for entry in bins] == sorted(entry["bin"] for entry in bins)
    assert len(bins) == 10  # the noisy probabilities reach every tenth
    assert sum(entry["customers"] for entry in bins) == len(rows)
    weighted = sum(entry["mean_probability"] * entry["customers"] for entry in bins)
    assert weighted / len(rows) == pytest.approx(rows["churn_probability"].mean())
    churned = sum(entry["churn_rate"] * entry["customers"] for entry in bins)
    assert churned == pytest.approx(rows["label"].sum())
    for entry in bins:
        low, high = (float(bound) for bound in entry["bin"].split("-"))
        assert low <= entry["mean_probability"] <= high
    # Calibration read the right way round: the highest tenth churns more than the lowest.
    assert bins[-1]["churn_rate"] > bins[0]["churn_rate"]


@pytest.mark.slow
def test_rerunning_a_date_replaces_its_rows(
    telco_warehouse: str, history: dict[tuple[date, str], pd.DataFrame]
) -> None:
    first = record_performance(telco_warehouse, DAY, horizon_days=HORIZON)
    second = record_performance(telco_warehouse, DAY, horizon_days=HORIZON)
    assert first.groups == second.groups
    recorded = read_performance(telco_warehouse, DAY)
    assert len(recorded) == 3
    assert not recorded.duplicated(["score_date", "model_version"]).any()
    narrower = record_performance(telco_warehouse, DAY, horizon_days=5)
    assert len(narrower.groups) == 2
    assert set(read_performance(telco_warehouse, DAY)["score_date"]) == {RECENT}


@pytest.mark.slow
def test_the_horizon_excludes_older_scores_and_the_day_itself(
    telco_warehouse: str, history: dict[tuple[date, str], pd.DataFrame]
) -> None:
    within = record_performance(telco_warehouse, DAY, horizon_days=HORIZON)
    assert {group.score_date for group in within.groups} == {EARLIER, RECENT}
    assert within.first_score_date == DAY - timedelta(days=HORIZON)
    wider = record_performance(telco_warehouse, DAY, horizon_days=40)
    assert {group.score_date for group in wider.groups} == {OLD, EARLIER, RECENT}
    assert DAY not in {group.score_date for group in wider.groups}


@pytest.mark.slow
def test_a_group_of_one_class_gets_no_auc_or_lift(
    telco_warehouse: str, history: dict[tuple[date, str], pd.DataFrame]
) -> None:
    outcome = record_performance(telco_warehouse, DAY, horizon_days=HORIZON)
    one_class = next(group for group in outcome.groups if group.model_version == "3")
    rows = history[(RECENT, "3")]
    assert one_class.customers == ONE_CLASS_CUSTOMERS
    assert one_class.churned == 0
    assert one_class.roc_auc is None
    assert one_class.top_decile_lift is None
    assert one_class.churn_rate == 0
    # Brier needs no second class: the mean squared error of the clipped probabilities.
    clipped = rows["churn_probability"].clip(1e-7, 1 - 1e-7)
    assert one_class.brier == pytest.approx(((clipped - rows["label"]) ** 2).mean(), abs=1e-12)
    recorded = read_performance(telco_warehouse, DAY).set_index("model_version")
    assert pd.isna(recorded.loc["3", "roc_auc"])
    assert pd.isna(recorded.loc["3", "top_decile_lift"])


@pytest.mark.slow
def test_a_date_without_labels_or_earlier_scores_records_nothing(
    telco_warehouse: str, history: dict[tuple[date, str], pd.DataFrame]
) -> None:
    for day in (UNLABELLED, date(2025, 6, 1)):  # labels not known yet; no rows at all
        outcome = record_performance(telco_warehouse, day, horizon_days=HORIZON)
        assert outcome.labelled_customers == 0
        assert outcome.groups == ()
        assert outcome.message.startswith(f"no labels on {day}")
        assert read_performance(telco_warehouse, day).empty
    record_performance(telco_warehouse, DAY, horizon_days=HORIZON)
    no_scores = record_performance(telco_warehouse, DAY, horizon_days=2)
    assert no_scores.labelled_customers == 5_634
    assert no_scores.groups == ()
    assert no_scores.message.startswith(f"no scores from {DAY - timedelta(days=2)}")
    # The date is replaced by what its labels judge now: nothing.
    assert read_performance(telco_warehouse, DAY).empty


@pytest.mark.slow
def test_the_drop_verdict_compares_the_latest_realised_auc_with_the_test_auc(
    telco_warehouse: str, history: dict[tuple[date, str], pd.DataFrame]
) -> None:
    record_performance(telco_warehouse, DAY, horizon_days=HORIZON)
    later = record_performance(telco_warehouse, LATER, horizon_days=HORIZON)
    latest = next(g for g in later.groups if g.score_date == DAY and g.model_version == "2")
    assert latest.roc_auc is not None

    dropped = performance_drop(telco_warehouse, "2", latest.roc_auc + 0.08, threshold=0.05)
    assert dropped is not None
    assert (dropped.evaluated_on, dropped.score_date) == (LATER, DAY)
    assert dropped.realised_auc == pytest.approx(latest.roc_auc)
    assert dropped.dropped
    assert dropped.shortfall == pytest.approx(0.08)

    held = performance_drop(telco_warehouse, "2", latest.roc_auc + 0.03, threshold=0.05)
    assert held is not None
    assert not held.dropped
    at_threshold = performance_drop(telco_warehouse, "2", latest.roc_auc + 0.05, threshold=0.05)
    assert at_threshold is not None
    assert not at_threshold.dropped

    assert performance_drop(telco_warehouse, "3", 0.9, threshold=0.05) is None  # one class only
    assert performance_drop(telco_warehouse, "99", 0.9, threshold=0.05) is None


@pytest.mark.slow
def test_the_plot_is_a_small_png_of_the_realised_auc_history(
    telco_warehouse: str, history: dict[tuple[date, str], pd.DataFrame]
) -> None:
    record_performance(telco_warehouse, DAY, horizon_days=HORIZON)
    frame = realised_auc_history(telco_warehouse, until=DAY)
    assert list(frame[["score_date", "model_version"]].itertuples(index=False, name=None)) == [
        (EARLIER, "1"),
        (RECENT, "2"),
    ]
    image = realised_auc_plot(frame, test_auc=ChampionReference("2", 0.9))
    prefix = "![realised ROC AUC per score date](data:image/png;base64,"
    assert image.startswith(prefix)
    png = base64.b64decode(image[len(prefix) : -1])
    assert png.startswith(b"\x89PNG")
    assert len(png) < 60_000
    assert realised_auc_plot(frame.iloc[0:0]) == ""


@pytest.mark.slow
def test_the_asset_records_a_labelled_date_and_judges_the_champion(
    telco_warehouse: str,
    history: dict[tuple[date, str], pd.DataFrame],
    mlflow_uri: str,
    tmp_path: Path,
) -> None:
    warehouse = WarehouseResource(database_url=telco_warehouse)
    mlflow_registry = MlflowResource(
        warehouse=warehouse,
        tracking_uri=mlflow_uri,
        artifact_root=str(tmp_path / "mlartifacts"),
        experiment="perf",
    )
    client = mlflow_registry.client
    assert champion_reference(client) is None
    assert register_champion(client, test_auc=0.99) == "1"
    assert champion_reference(client) == ChampionReference("1", 0.99)
    resources = {
        "warehouse": warehouse,
        "mlflow_registry": mlflow_registry,
        "monitoring": MonitoringResource(),
    }

    result = dg.materialize(
        [realised_model_performance],
        partition_key=TELCO_DAY,
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    metadata = result.asset_materializations_for_node("realised_model_performance")[0].metadata
    assert metadata["groups_evaluated"].value == 3
    assert metadata["customers_joined"].value == 2 * 5_634
    groups = [record.data for record in metadata["realised_performance"].records]
    assert [group["ROC AUC"] is None for group in groups].count(True) == 1  # one class only
    assert metadata["realised_auc_over_time"].value.startswith("![")
    assert metadata["champion_version"].value == "1"
    assert metadata["champion_auc_dropped"].value is True
    assert len(read_performance(telco_warehouse, DAY)) == 3

    quiet = dg.materialize(
        [realised_model_performance],
        partition_key=UNLABELLED.isoformat(),
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert quiet.success
    metadata = quiet.asset_materializations_for_node("realised_model_performance")[0].metadata
    assert metadata["status"].value == NO_LABELS
    assert metadata["groups_evaluated"].value == 0
