"""Training: the labelled training set, the tuned candidates, the registered challenger and
the promotion gate. ``retrain_job`` selects them all."""

import math
import os
import subprocess
from typing import Any

import dagster as dg
import optuna
from mlflow import MlflowClient

from retention_pipelines.assets import metadata
from retention_pipelines.core import audit, database, registry
from retention_pipelines.core.features import feature_frame
from retention_pipelines.core.model_search import TrainingResult, train_churn_model
from retention_pipelines.core.tracking import log_training_run
from retention_pipelines.core.training import (
    TrainingSplit,
    TuningBudget,
    evaluate,
    labels_of,
    split_training_set,
)
from retention_pipelines.core.warehouse.features import read_labelled
from retention_pipelines.core.warehouse.model_versions import sync_model_versions
from retention_pipelines.resources import MlflowResource, TrainingResource, WarehouseResource
from retention_pipelines.settings import PROJECT_ROOT

GROUP = "training"
CANDIDATES = "churn_model_candidates"
# What the candidates asset observes after every Optuna trial, for the command line.
STUDY, TRIALS_DONE, TRIALS_BUDGET = "study", "trials_done", "trials_budget"


class TrainingConfig(dg.Config):
    """Run config of a training run (the launchpad); unset fields keep the training
    resource's values."""

    seed: int | None = None
    snapshots: int | None = None
    xgboost_trials: int | None = None
    xgboost_timeout_s: float | None = None
    catboost_trials: int | None = None
    catboost_timeout_s: float | None = None
    baseline_tolerance: float | None = None

    def value(self, name: str, training: TrainingResource) -> Any:
        """This run's value of a training setting: its override, else the resource's."""
        override = getattr(self, name)
        return getattr(training, name) if override is None else override


@dg.asset(group_name=GROUP, kinds={"postgres", "pandas"}, deps=["customer_features"])
def training_set(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    warehouse: WarehouseResource,
    training: TrainingResource,
) -> dg.Output[TrainingSplit]:
    """Labelled customers of the latest labelled snapshot(s), split train / validation / test
    (stratified, fixed seed)."""
    frame, dates = read_labelled(warehouse.url(), config.value("snapshots", training))
    split = split_training_set(frame, seed=config.value("seed", training))
    context.log.info(f"training on {len(frame):,} labelled customers of {dates}")
    summary = split.summary()
    return dg.Output(
        split,
        metadata={
            "snapshot_dates": ", ".join(day.isoformat() for day in dates),
            "dagster/row_count": len(frame),
            **{f"{name}_rows": int(part["rows"]) for name, part in summary.items()},
            **{
                f"{name}_churn_rate": dg.MetadataValue.float(round(part["churn_rate"], 4))
                for name, part in summary.items()
            },
        },
    )


@dg.asset(name=CANDIDATES, group_name=GROUP, kinds={"xgboost", "catboost", "optuna"})
def churn_model_candidates(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    warehouse: WarehouseResource,
    training: TrainingResource,
    training_set: TrainingSplit,
) -> dg.Output[TrainingResult]:
    """Logistic baseline, Optuna-tuned XGBoost and CatBoost; the winner chosen, blended with
    the logistic model and calibrated on validation data, and required to beat the baseline
    on the test split."""

    def budget(kind: str) -> TuningBudget:
        return TuningBudget(
            config.value(f"{kind}_trials", training), config.value(f"{kind}_timeout_s", training)
        )

    result = train_churn_model(
        training_set,
        storage=optuna.storages.RDBStorage(database.sqlalchemy_url(warehouse.url())),
        study_prefix=f"churn-{context.run_id}",
        budgets={"xgboost": budget("xgboost"), "catboost": budget("catboost")},
        seed=config.value("seed", training),
        baseline_tolerance=config.value("baseline_tolerance", training),
        on_trial=lambda kind, done, budget: context.log_event(
            dg.AssetObservation(
                asset_key=CANDIDATES,
                metadata={STUDY: kind, TRIALS_DONE: done, TRIALS_BUDGET: budget},
            )
        ),
    )
    return dg.Output(
        result,
        metadata={
            "winner": result.winner,
            "calibration": result.model.calibrator.method,
            "tree_weight": dg.MetadataValue.float(result.model.tree_weight),
            "test_roc_auc": dg.MetadataValue.float(round(result.test["roc_auc"], 4)),
            "test_brier": dg.MetadataValue.float(round(result.test["brier"], 4)),
            "comparison": metadata.table(result.comparison_frame()),
            **{
                f"{kind}_trials": f"{c.tuned.trials} ({c.tuned.pruned} pruned)"
                + (", stopped by the timeout" if c.tuned.timed_out else "")
                for kind, c in result.candidates.items()
            },
        },
    )


@dg.asset(group_name=GROUP, kinds={"mlflow"})
def registered_churn_model(
    context: dg.AssetExecutionContext,
    mlflow_registry: MlflowResource,
    training_set: TrainingSplit,
    churn_model_candidates: TrainingResult,
) -> dg.Output[dict[str, str]]:
    """The winner logged to MLflow (metrics, plots, model card) and registered as a new
    version of ``churn-model`` with alias ``challenger``."""
    client = mlflow_registry.client
    dates = sorted({str(day) for day in training_set.test["snapshot_date"]})
    rows = sum(
        len(part) for part in (training_set.train, training_set.validation, training_set.test)
    )
    tags = {
        "data_snapshots": ",".join(dates),
        "training_rows": str(rows),
        "git_revision": _git_revision(),
        "dagster_run_id": context.run_id,
    }
    logged = log_training_run(
        churn_model_candidates,
        training_set,
        run_name=f"train-{context.run_id[:8]}",
        data_description=(
            f"Labelled customers of features.customer_features, snapshots {', '.join(dates)}."
        ),
        tags=tags,
    )
    version = registry.register_challenger(
        client, model_uri=logged.model_uri, run_id=logged.run_id, tags=tags
    )
    experiment_id = client.get_run(logged.run_id).info.experiment_id
    return dg.Output(
        {"version": version, "run_id": logged.run_id, "model_uri": logged.model_uri},
        metadata={
            "model_name": registry.MODEL_NAME,
            "version": version,
            "mlflow_run_id": logged.run_id,
            "mlflow_run": dg.MetadataValue.url(
                mlflow_registry.run_url(experiment_id, logged.run_id)
            ),
            "mlflow_model_version": dg.MetadataValue.url(
                mlflow_registry.model_version_url(registry.MODEL_NAME, version)
            ),
            "model_uri": logged.model_uri,
        },
    )


@dg.asset(group_name=GROUP, kinds={"mlflow"})
def champion_model(
    context: dg.AssetExecutionContext,
    mlflow_registry: MlflowResource,
    warehouse: WarehouseResource,
    training: TrainingResource,
    training_set: TrainingSplit,
    registered_churn_model: dict[str, str],
) -> dg.MaterializeResult:
    """The promotion gate: challenger and champion scored on the same latest labelled test
    data; ``champion`` moves only when the challenger is at least as good. Either way the
    decision is an entry of ``ops.audit_log`` (promotion or gate refusal, by this run). The
    registry's versions are then copied to ``ml.model_versions`` for the dashboard."""
    client = mlflow_registry.client
    challenger_version = registered_churn_model["version"]
    challenger = _gate_metrics(client, challenger_version, training_set)
    current = registry.champion_version(client)
    champion = _gate_metrics(client, current, training_set) if current else None
    decision = registry.decide_promotion(
        challenger,
        champion,
        beat_baseline=True,  # churn_model_candidates fails otherwise
        auc_tolerance=training.gate_auc_tolerance,
        brier_tolerance=training.gate_brier_tolerance,
    )
    registry.apply_gate(
        client,
        challenger_version,
        decision,
        actor=audit.run_actor(context.run_id),
        audit_url=warehouse.url(),
        figures=_audit_figures(challenger, champion),
    )
    context.log.info(f"gate: {'promote' if decision.promote else 'keep'}: {decision.reason}")
    synced = sync_model_versions(warehouse.url(), client)
    return dg.MaterializeResult(
        metadata={
            "decision": "promoted" if decision.promote else "kept the champion",
            "reason": decision.reason,
            "challenger_version": challenger_version,
            "champion_version_before": current or "none",
            **_gate_figures("challenger", challenger),
            **(_gate_figures("champion", champion) if champion else {}),
            "model_versions_synced": synced,
        }
    )


def _gate_metrics(client: MlflowClient, version: str, split: TrainingSplit) -> registry.GateMetrics:
    model = registry.load_version(client, version)
    metrics = evaluate(labels_of(split.test), model.predict_proba(feature_frame(split.test)))
    return registry.GateMetrics(roc_auc=metrics["roc_auc"], brier=metrics["brier"])


def _gate_figures(role: str, metrics: registry.GateMetrics) -> dict[str, dg.MetadataValue]:
    return {
        f"{role}_roc_auc": dg.MetadataValue.float(round(metrics.roc_auc, 4)),
        f"{role}_brier": dg.MetadataValue.float(round(metrics.brier, 4)),
    }


def _audit_figures(
    challenger: registry.GateMetrics, champion: registry.GateMetrics | None
) -> dict[str, float | None]:
    """The compared metrics for the audit entry; a metric that is not finite (which JSON
    cannot hold) as null."""
    figures = {"challenger_roc_auc": challenger.roc_auc, "challenger_brier": challenger.brier}
    if champion is not None:
        figures |= {"champion_roc_auc": champion.roc_auc, "champion_brier": champion.brier}
    return {
        name: round(value, 4) if math.isfinite(value) else None for name, value in figures.items()
    }


def _git_revision() -> str:
    revision = os.environ.get("RETENTION_GIT_REVISION")
    if revision:
        return revision
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return completed.stdout.strip()
