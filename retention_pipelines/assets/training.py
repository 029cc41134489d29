"""Training: the labelled training set, the tuned candidates, the registered challenger and
the promotion gate. ``retrain_job`` selects them all."""

import os
import subprocess

import dagster as dg
import mlflow
import optuna

from retention_pipelines.core import database, registry
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
from retention_pipelines.core.warehouse import read_labelled_features
from retention_pipelines.resources import MlflowResource, WarehouseResource
from retention_pipelines.settings import PROJECT_ROOT, get_settings

GROUP = "training"


class TrainingConfig(dg.Config):
    """Run config of a training run; unset fields come from the settings."""

    seed: int | None = None
    snapshots: int | None = None
    xgboost_trials: int | None = None
    xgboost_timeout_s: float | None = None
    catboost_trials: int | None = None
    catboost_timeout_s: float | None = None
    baseline_tolerance: float | None = None


@dg.asset(group_name=GROUP, kinds={"postgres", "pandas"}, deps=["customer_features"])
def training_set(
    context: dg.AssetExecutionContext, config: TrainingConfig, warehouse: WarehouseResource
) -> dg.Output[TrainingSplit]:
    """Labelled customers of the latest labelled snapshot(s), split train / validation / test
    (stratified, fixed seed)."""
    settings = get_settings()
    frame, dates = read_labelled_features(
        warehouse.url(), config.snapshots or settings.training_snapshots
    )
    split = split_training_set(frame, seed=_seed(config))
    context.log.info(f"training on {len(frame):,} labelled customers from {dates}")
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


@dg.asset(group_name=GROUP, kinds={"xgboost", "catboost", "optuna"})
def churn_model_candidates(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    warehouse: WarehouseResource,
    training_set: TrainingSplit,
) -> dg.Output[TrainingResult]:
    """Logistic baseline, Optuna-tuned XGBoost and CatBoost; the winner chosen, blended with
    the logistic model and calibrated on validation data, and required to beat the baseline
    on the test split."""
    settings = get_settings()
    storage = optuna.storages.RDBStorage(database.sqlalchemy_url(warehouse.url()))
    result = train_churn_model(
        training_set,
        storage=storage,
        study_prefix=f"churn-{context.run_id}",
        budgets={
            "xgboost": TuningBudget(
                config.xgboost_trials or settings.xgboost_trials,
                config.xgboost_timeout_s or settings.xgboost_timeout_s,
            ),
            "catboost": TuningBudget(
                config.catboost_trials or settings.catboost_trials,
                config.catboost_timeout_s or settings.catboost_timeout_s,
            ),
        },
        seed=_seed(config),
        baseline_tolerance=(
            config.baseline_tolerance
            if config.baseline_tolerance is not None
            else settings.baseline_tolerance
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
            "comparison": dg.MetadataValue.md(_comparison_markdown(result)),
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
    warehouse: WarehouseResource,
    mlflow_registry: MlflowResource,
    training_set: TrainingSplit,
    churn_model_candidates: TrainingResult,
) -> dg.Output[dict[str, str]]:
    """The winner logged to MLflow (metrics, plots, model card) and registered as a new
    version of ``churn-model`` with alias ``challenger``."""
    client = mlflow_registry.client(warehouse)
    dates = sorted({str(day) for day in training_set.test["snapshot_date"]})
    tags = {
        "data_snapshots": ",".join(dates),
        "training_rows": str(
            sum(
                len(part)
                for part in (training_set.train, training_set.validation, training_set.test)
            )
        ),
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
    ui = get_settings().mlflow_ui_url.rstrip("/")
    experiment_id = client.get_run(logged.run_id).info.experiment_id
    return dg.Output(
        {"version": version, "run_id": logged.run_id, "model_uri": logged.model_uri},
        metadata={
            "model_name": registry.MODEL_NAME,
            "version": version,
            "mlflow_run_id": logged.run_id,
            "mlflow_run": dg.MetadataValue.url(
                f"{ui}/#/experiments/{experiment_id}/runs/{logged.run_id}"
            ),
            "mlflow_model_version": dg.MetadataValue.url(
                f"{ui}/#/models/{registry.MODEL_NAME}/versions/{version}"
            ),
            "model_uri": logged.model_uri,
        },
    )


@dg.asset(group_name=GROUP, kinds={"mlflow"})
def champion_model(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    mlflow_registry: MlflowResource,
    training_set: TrainingSplit,
    registered_churn_model: dict[str, str],
) -> dg.MaterializeResult:
    """The promotion gate: challenger and champion scored on the same latest labelled test
    data; ``champion`` moves only when the challenger is at least as good."""
    settings = get_settings()
    client = mlflow_registry.client(warehouse)
    challenger_version = registered_churn_model["version"]
    challenger = _gate_metrics(challenger_version, training_set)
    current = registry.champion_version(client)
    champion = _gate_metrics(current, training_set) if current else None
    decision = registry.decide_promotion(
        challenger,
        champion,
        beat_baseline=True,  # churn_model_candidates fails otherwise
        auc_tolerance=settings.gate_auc_tolerance,
        brier_tolerance=settings.gate_brier_tolerance,
    )
    if decision.promote:
        registry.promote(
            client,
            challenger_version,
            reason=decision.reason,
            actor=f"dagster run {context.run_id}",
        )
    client.set_model_version_tag(
        registry.MODEL_NAME, challenger_version, "gate_decision", decision.reason
    )
    context.log.info(f"gate: {'promote' if decision.promote else 'keep'}: {decision.reason}")
    return dg.MaterializeResult(
        metadata={
            "decision": "promoted" if decision.promote else "kept the champion",
            "reason": decision.reason,
            "challenger_version": challenger_version,
            "champion_version_before": current or "none",
            "challenger_roc_auc": dg.MetadataValue.float(round(challenger.roc_auc, 4)),
            "challenger_brier": dg.MetadataValue.float(round(challenger.brier, 4)),
            **(
                {
                    "champion_roc_auc": dg.MetadataValue.float(round(champion.roc_auc, 4)),
                    "champion_brier": dg.MetadataValue.float(round(champion.brier, 4)),
                }
                if champion
                else {}
            ),
        }
    )


def _gate_metrics(version: str, split: TrainingSplit) -> registry.GateMetrics:
    model = mlflow.pyfunc.load_model(f"models:/{registry.MODEL_NAME}/{version}")
    probabilities = model.predict(feature_frame(split.test)).iloc[:, 0].to_numpy()
    metrics = evaluate(labels_of(split.test), probabilities)
    return registry.GateMetrics(roc_auc=metrics["roc_auc"], brier=metrics["brier"])


def _seed(config: TrainingConfig) -> int:
    return config.seed if config.seed is not None else get_settings().training_seed


def _comparison_markdown(result: TrainingResult) -> str:
    lines = ["| model | ROC AUC | Brier | top-decile lift |", "| --- | --- | --- | --- |"]
    for name, metrics in result.comparison().items():
        lines.append(
            f"| {name} | {metrics['roc_auc']:.4f} | {metrics['brier']:.4f} "
            f"| {metrics['top_decile_lift']:.2f} |"
        )
    return "\n".join(lines)


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
