"""The registry on a real MLflow store in a throwaway Postgres database: versions arrive as
``challenger``, ``champion`` moves by promotion and rollback, and the gate's rules."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
import psycopg
import pytest
from mlflow import MlflowClient

from retention_pipelines.core import database, registry
from retention_pipelines.core.registry import GateMetrics, decide_promotion
from retention_pipelines_tests.churn_models import (
    constant_churn_model,
    log_churn_model,
    probability_of,
)


@pytest.fixture(scope="module")
def experiment_id(mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    artifacts = tmp_path_factory.mktemp("mlartifacts")
    return MlflowClient(mlflow_uri).create_experiment(
        "registry-tests", artifact_location=artifacts.resolve().as_uri()
    )


@pytest.fixture(scope="module")
def client(mlflow_uri: str) -> MlflowClient:
    return MlflowClient(mlflow_uri)


def _register(client: MlflowClient, experiment_id: str, probability: float) -> str:
    """Log a constant model in a run of its own and register it as the challenger."""
    with mlflow.start_run(experiment_id=experiment_id) as run:
        model_uri = log_churn_model(constant_churn_model(probability))
    return registry.register_challenger(
        client,
        model_uri=model_uri,
        run_id=run.info.run_id,
        tags={"probability": str(probability), "git_revision": "abc123"},
    )


@pytest.fixture(scope="module")
def versions(client: MlflowClient, experiment_id: str) -> list[str]:
    """Three versions predicting 0.1, 0.2 and 0.3, registered in that order."""
    return [_register(client, experiment_id, p) for p in (0.1, 0.2, 0.3)]


# --- the store ---------------------------------------------------------------------------


def test_the_tracking_uri_is_the_server_for_psycopg2_on_its_own_database(
    server_url: str, mlflow_uri: str
) -> None:
    """Against the embedded server this is a Unix-socket URL: ``?host=`` must survive."""
    store, server = urlsplit(mlflow_uri), urlsplit(server_url)
    assert store.scheme == "postgresql+psycopg2"
    assert store.path.startswith("/retention_test_mlflow_")
    assert (store.netloc, store.query) == (server.netloc, server.query)


def test_first_use_creates_mlflow_tables_at_the_latest_revision(mlflow_uri: str) -> None:
    from mlflow.store.db.utils import _get_latest_schema_revision  # noqa: PLC0415

    url = mlflow_uri.replace("postgresql+psycopg2://", "postgresql://", 1)
    with psycopg.connect(url) as conn:
        revision = conn.execute("select version_num from alembic_version").fetchone()
        tables = {row[0] for row in conn.execute("select tablename from pg_tables")}
    assert revision == (_get_latest_schema_revision(),)
    assert {"experiments", "registered_models", "model_versions", "logged_models"} <= tables


def test_asking_again_for_the_tracking_uri_gives_the_same_uri(
    server_url: str, mlflow_uri: str
) -> None:
    name = urlsplit(mlflow_uri).path.lstrip("/")
    assert registry.mlflow_tracking_uri(server_url, name) == mlflow_uri


_START_STORE = """
import sys
from retention_pipelines.core import registry
print(registry.mlflow_tracking_uri(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.slow  # two interpreters importing MLflow, ~10 s
def test_several_processes_meeting_a_fresh_database_create_mlflow_tables_once(
    server_url: str,
) -> None:
    """Left to MLflow, one of the two fails with a duplicate-key error from its table creation
    (both create the tables); with the advisory lock, one creates them and the other waits."""
    name = f"retention_test_mlflow_{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-c", _START_STORE, server_url, name]
    try:
        processes = [
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        results = [(process.communicate(timeout=120), process.returncode) for process in processes]
        for (_, stderr), returncode in results:
            assert returncode == 0, stderr
        assert len({stdout for (stdout, _), _ in results}) == 1
        assert MlflowClient(results[0][0][0].strip()).search_registered_models() == []
    finally:
        database.drop_database(server_url, name)


# --- registering and moving the champion ---------------------------------------------------


def test_registering_makes_a_version_with_alias_challenger_and_the_tags(
    client: MlflowClient, versions: list[str]
) -> None:
    assert versions == ["1", "2", "3"]
    challenger = client.get_model_version_by_alias(registry.MODEL_NAME, registry.CHALLENGER)
    assert str(challenger.version) == "3"  # MLflow 3.17's SQL store answers an int here
    assert challenger.tags["probability"] == "0.3"
    assert challenger.tags["git_revision"] == "abc123"
    assert challenger.run_id
    assert challenger.source.startswith("models:/m-")  # MLflow 3's logged model, linked
    logged = client.get_logged_model(challenger.source.removeprefix("models:/"))
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [
        {"name": registry.MODEL_NAME, "version": "3"}
    ]


def test_there_is_no_champion_and_nothing_to_roll_back_before_a_promotion(
    client: MlflowClient, versions: list[str]
) -> None:
    assert registry.champion_version(client) is None
    with pytest.raises(ValueError, match="nothing to roll back"):
        registry.rollback(client, reason="test", actor="pytest")
    with pytest.raises(LookupError, match="no champion"):
        registry.load_champion(client)


def test_a_first_promotion_has_no_earlier_champion_to_roll_back_to(
    client: MlflowClient, versions: list[str]
) -> None:
    registry.promote(client, "1", reason="first model", actor="pytest")
    assert registry.champion_version(client) == "1"
    with pytest.raises(ValueError, match="no earlier champion"):
        registry.rollback(client, reason="test", actor="pytest")


def test_promote_moves_champion_and_records_why_and_who(
    client: MlflowClient, versions: list[str]
) -> None:
    registry.promote(client, "2", reason="better ROC AUC", actor="pytest")
    assert registry.champion_version(client) == "2"
    version = client.get_model_version(registry.MODEL_NAME, "2")
    assert version.tags["promotion_reason"] == "better ROC AUC"
    assert version.tags["promoted_at"].endswith("+00:00")
    last = registry.champion_history(client)[-1]
    assert (last["action"], last["version"], last["previous"]) == ("promote", "2", "1")
    assert last["actor"] == "pytest"


def test_load_champion_returns_the_champion_version_and_its_predictions(
    client: MlflowClient, versions: list[str]
) -> None:
    registry.promote(client, "3", reason="better again", actor="pytest")
    model, version = registry.load_champion(client)
    assert version == "3"
    assert probability_of(model) == pytest.approx(0.3)


def test_load_champion_reads_the_clients_store_not_the_process_wide_uri(
    client: MlflowClient, versions: list[str], tmp_path: Path
) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    try:
        model, version = registry.load_champion(client)
    finally:
        mlflow.set_tracking_uri(client.tracking_uri)
    assert (version, probability_of(model)) == ("3", pytest.approx(0.3))


def test_rollback_walks_back_through_earlier_champions_in_order(
    client: MlflowClient, versions: list[str]
) -> None:
    assert registry.rollback(client, reason="3 misbehaves", actor="pytest") == "2"
    assert registry.champion_version(client) == "2"
    model, version = registry.load_champion(client)
    assert (version, probability_of(model)) == ("2", pytest.approx(0.2))
    assert client.get_model_version(registry.MODEL_NAME, "3").tags["rollback_reason"]
    assert registry.rollback(client, reason="2 too", actor="pytest") == "1"
    with pytest.raises(ValueError, match="nothing to roll back to"):
        registry.rollback(client, reason="and 1", actor="pytest")
    last = registry.champion_history(client)[-1]
    assert (last["action"], last["version"], last["previous"]) == ("rollback", "1", "2")


def test_promoting_a_version_that_does_not_exist_fails_and_moves_nothing(
    client: MlflowClient, versions: list[str]
) -> None:
    before = registry.champion_version(client)
    with pytest.raises(mlflow.exceptions.MlflowException):
        registry.promote(client, "99", reason="typo", actor="pytest")
    assert registry.champion_version(client) == before


def test_the_history_stays_within_the_tag_column_however_long_the_reasons(
    client: MlflowClient, versions: list[str]
) -> None:
    for round_ in range(20):
        registry.promote(client, "23"[round_ % 2], reason="x" * 1000, actor="pytest")
    raw = client.get_registered_model(registry.MODEL_NAME).tags[registry.HISTORY_TAG]
    assert len(raw) <= registry.HISTORY_MAX_CHARS
    assert registry.champion_version(client) == "3"
    assert registry.rollback(client, reason="still works", actor="pytest") == "2"


def test_a_champion_moved_by_hand_outside_the_registry_module_rolls_back_to_the_one_before(
    client: MlflowClient, versions: list[str]
) -> None:
    assert registry.champion_version(client) == "2"
    client.set_registered_model_alias(registry.MODEL_NAME, registry.CHAMPION, "1")  # the UI
    assert registry.rollback(client, reason="undo the manual move", actor="pytest") == "2"
    registry.promote(client, "3", reason="again", actor="pytest")
    assert registry.rollback(client, reason="and back", actor="pytest") == "2"


def test_applying_the_gate_tags_the_challenger_and_moves_champion_only_to_promote(
    client: MlflowClient, versions: list[str]
) -> None:
    """Without a warehouse (``audit_url=None``) nothing is recorded but the registry's own
    history; the audit log's side is tested in ``personal_data/test_audit.py``."""
    before = registry.champion_version(client)
    refused = registry.PromotionDecision(False, "Brier too high")
    registry.apply_gate(client, "3", refused, actor="pytest", audit_url=None)
    assert registry.champion_version(client) == before == "2"
    assert client.get_model_version(registry.MODEL_NAME, "3").tags["gate_decision"] == (
        "Brier too high"
    )
    promoted = registry.PromotionDecision(True, "at least as good")
    registry.apply_gate(client, "3", promoted, actor="pytest", audit_url=None)
    assert registry.champion_version(client) == "3"
    assert registry.champion_history(client)[-1]["reason"] == "at least as good"


# --- the gate (pure) -----------------------------------------------------------------------

CHAMPION = GateMetrics(roc_auc=0.8433, brier=0.1350)


def _decide(challenger: GateMetrics, champion: GateMetrics | None = CHAMPION, **kwargs):
    options = {"beat_baseline": True, "auc_tolerance": 0.005, "brier_tolerance": 0.005}
    return decide_promotion(challenger, champion, **(options | kwargs))


def test_a_challenger_better_on_both_metrics_is_promoted() -> None:
    decision = _decide(GateMetrics(roc_auc=0.8500, brier=0.1300))
    assert decision.promote
    assert "at least as good" in decision.reason


def test_the_first_model_is_promoted() -> None:
    decision = _decide(GateMetrics(roc_auc=0.70, brier=0.20), champion=None)
    assert decision == registry.PromotionDecision(True, "first model: there is no champion yet")


def test_a_challenger_that_does_not_beat_the_baseline_is_kept_out_even_without_champion() -> None:
    decision = _decide(GateMetrics(roc_auc=0.90, brier=0.10), None, beat_baseline=False)
    assert not decision.promote
    assert "baseline" in decision.reason


def test_a_challenger_too_far_below_on_roc_auc_is_kept_out_with_the_shortfall() -> None:
    decision = _decide(GateMetrics(roc_auc=0.8312, brier=0.1300))
    assert not decision.promote
    assert decision.reason == (
        "ROC AUC 0.8312 is 0.0121 below the champion's 0.8433 (tolerance 0.005)"
    )


def test_a_challenger_too_far_above_on_brier_is_kept_out_with_the_excess() -> None:
    decision = _decide(GateMetrics(roc_auc=0.8500, brier=0.1450))
    assert not decision.promote
    assert decision.reason == "Brier 0.1450 is 0.0100 above the champion's 0.1350 (tolerance 0.005)"


def test_failing_both_metrics_names_both() -> None:
    decision = _decide(GateMetrics(roc_auc=0.80, brier=0.20))
    assert not decision.promote
    assert "ROC AUC" in decision.reason
    assert "Brier" in decision.reason


@pytest.mark.parametrize(
    ("roc_auc", "brier"),
    [(0.8383, 0.1350), (0.8433, 0.1400), (0.8383, 0.1400), (0.5007 - 0.001 + 0.3426, 0.1350)],
)
def test_a_challenger_exactly_at_the_tolerance_is_promoted(roc_auc: float, brier: float) -> None:
    assert _decide(GateMetrics(roc_auc=roc_auc, brier=brier)).promote


def test_exactly_at_the_tolerance_holds_despite_float_rounding() -> None:
    # 0.5007 - 0.001 is 0.49970000000000003 in binary floating point.
    champion = GateMetrics(roc_auc=0.5007, brier=0.2)
    assert _decide(GateMetrics(roc_auc=0.4997, brier=0.2), champion, auc_tolerance=0.001).promote


@pytest.mark.parametrize(("roc_auc", "brier"), [(0.8382, 0.1350), (0.8433, 0.1401)])
def test_a_challenger_just_past_the_tolerance_is_kept_out(roc_auc: float, brier: float) -> None:
    assert not _decide(GateMetrics(roc_auc=roc_auc, brier=brier)).promote


def test_a_challenger_with_nan_metrics_is_kept_out() -> None:
    assert not _decide(GateMetrics(roc_auc=float("nan"), brier=0.1)).promote


def test_negative_tolerances_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        _decide(GateMetrics(roc_auc=0.9, brier=0.1), auc_tolerance=-0.01)
