"""What a training run leaves in MLflow: parameters, metrics on the test split, the model
with its signature and an input example, and the artefacts a person judges it by.

Nothing of it is a customer's: MLflow's artefacts live outside the warehouse, so the input
example is made up (:data:`EXAMPLE_CUSTOMERS`), and the plots, tables and model card hold
aggregates only.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Final

import matplotlib

matplotlib.use("Agg")  # files, never a window: runs happen on servers

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_curve

from retention_pipelines.churn_model import pyfunc
from retention_pipelines.core.features import (
    FEATURE_COLUMNS,
    INTEGER_FEATURES,
    customer_features,
    feature_frame,
)
from retention_pipelines.core.model_search import TrainingResult
from retention_pipelines.core.training import TrainingSplit, labels_of

# Two made-up customers in the raw table's shape, no one's attributes: a new month-to-month
# fibre customer paying by electronic check and a long-standing two-year DSL one. Their
# features are the logged model's input example (what MLflow shows and serving tools send).
EXAMPLE_CUSTOMERS: Final[dict[str, list[object]]] = {
    "customer_id": ["example-1", "example-2"],
    "gender": ["Female", "Male"],
    "senior_citizen": [0, 1],
    "partner": ["No", "Yes"],
    "dependents": ["No", "Yes"],
    "tenure": [2, 60],
    "phone_service": ["Yes", "Yes"],
    "multiple_lines": ["No", "Yes"],
    "internet_service": ["Fiber optic", "DSL"],
    "online_security": ["No", "Yes"],
    "online_backup": ["No", "Yes"],
    "device_protection": ["No", "Yes"],
    "tech_support": ["No", "Yes"],
    "streaming_tv": ["Yes", "No"],
    "streaming_movies": ["No", "No"],
    "contract": ["Month-to-month", "Two year"],
    "paperless_billing": ["Yes", "No"],
    "payment_method": ["Electronic check", "Bank transfer (automatic)"],
    "monthly_charges": [80.5, 65.0],
    "total_charges": [161.0, 3900.0],
}


def example_features() -> pd.DataFrame:
    """The made-up customers' features as the model takes them (integers as the table types
    them): computed by the same code as a live prediction's, so they meet the contract."""
    features = customer_features(pd.DataFrame(EXAMPLE_CUSTOMERS))
    return features.drop(columns="customer_id")


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    model_uri: str


def log_training_run(
    result: TrainingResult,
    split: TrainingSplit,
    *,
    run_name: str,
    data_description: str,
    tags: dict[str, str],
    champion_test: dict[str, float] | None = None,
) -> LoggedRun:
    """Log one training as one MLflow run (trials summarized as a table) and the model."""
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        mlflow.log_params(_params(result))
        mlflow.log_metrics(_metrics(result))
        for kind, candidate in result.candidates.items():
            mlflow.log_table(pd.DataFrame(candidate.tuned.history), f"optuna/{kind}_trials.json")
        with tempfile.TemporaryDirectory() as folder:
            for path in _artefacts(result, split, Path(folder), data_description, champion_test):
                mlflow.log_artifact(str(path), artifact_path="report")
        info = pyfunc.log_model(
            result.model,
            name="model",
            signature=pyfunc.signature(result.model, INTEGER_FEATURES),
            input_example=example_features(),
            pip_requirements=_requirements(),
        )
    return LoggedRun(run_id=run.info.run_id, model_uri=info.model_uri)


def _requirements() -> list[str]:
    """The model's runtime packages, pinned to what trained it (MLflow's own inference of
    them shells out to the package manager and takes longer than the logging itself)."""
    packages = ("mlflow", "xgboost", "catboost", "scikit-learn", "pandas", "numpy")
    return [f"{package}=={version(package)}" for package in packages]


def _params(result: TrainingResult) -> dict[str, object]:
    params: dict[str, object] = {
        "winner": result.winner,
        "calibration": result.model.calibrator.method,
        "tree_weight": result.model.tree_weight,
        "features": len(FEATURE_COLUMNS),
    }
    for kind, candidate in result.candidates.items():
        params[f"{kind}_trials"] = candidate.tuned.trials
        params[f"{kind}_pruned"] = candidate.tuned.pruned
        params |= {f"{kind}_{name}": value for name, value in candidate.tuned.params.items()}
    for name, part in result.split_summary.items():
        params[f"{name}_rows"] = part["rows"]
    return params


def _metrics(result: TrainingResult) -> dict[str, float]:
    metrics = {f"test_{name}": value for name, value in result.test.items()}
    metrics |= {f"validation_{name}": value for name, value in result.validation.items()}
    metrics |= {f"baseline_test_{name}": value for name, value in result.baseline_test.items()}
    for kind, candidate in result.candidates.items():
        metrics |= {f"{kind}_test_{name}": value for name, value in candidate.test.items()}
        metrics[f"{kind}_tuning_seconds"] = candidate.tuned.seconds
    return metrics


def _artefacts(
    result: TrainingResult,
    split: TrainingSplit,
    folder: Path,
    data_description: str,
    champion_test: dict[str, float] | None,
) -> list[Path]:
    labels = labels_of(split.test)
    probabilities = result.model.predict_proba(feature_frame(split.test))
    contributions = result.model.contributions(feature_frame(split.test))
    return [
        _roc_plot(labels, probabilities, folder / "roc.png"),
        _calibration_plot(labels, probabilities, folder / "calibration.png"),
        _shap_summary(contributions, folder / "shap_summary.png"),
        _importance_table(contributions, folder / "feature_importance.csv"),
        _optuna_history(result, folder / "optuna_history.png"),
        _model_card(result, data_description, champion_test, folder / "model_card.md"),
    ]


def _roc_plot(labels: np.ndarray, probabilities: np.ndarray, path: Path) -> Path:
    false_positive, true_positive, _ = roc_curve(labels, probabilities)
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot(false_positive, true_positive, label="chosen model (calibrated)")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey")
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test split")
    axis.legend()
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def _calibration_plot(labels: np.ndarray, probabilities: np.ndarray, path: Path) -> Path:
    observed, predicted = calibration_curve(labels, probabilities, n_bins=10, strategy="quantile")
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot(predicted, observed, marker="o", label="model")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    axis.set(xlabel="predicted probability", ylabel="observed churn rate", title="Calibration")
    axis.legend()
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def _shap_summary(contributions: pd.DataFrame, path: Path) -> Path:
    importance = contributions.abs().mean().sort_values().tail(15)
    figure, axis = plt.subplots(figsize=(6, 6))
    axis.barh(importance.index, importance.to_numpy())
    axis.set(xlabel="mean |TreeSHAP contribution| (log-odds)", title="What drives churn risk")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def _importance_table(contributions: pd.DataFrame, path: Path) -> Path:
    table = contributions.abs().mean().sort_values(ascending=False).rename("mean_abs_shap")
    table.to_csv(path, index_label="feature")
    return path


def _optuna_history(result: TrainingResult, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(6, 4))
    for kind, candidate in result.candidates.items():
        values = [row["value"] for row in candidate.tuned.history if row["value"] is not None]
        if values:
            axis.plot(np.maximum.accumulate(values), label=f"{kind} (best so far)")
    axis.set(xlabel="completed trial", ylabel="validation ROC AUC", title="Optuna history")
    axis.legend()
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def _model_card(
    result: TrainingResult,
    data_description: str,
    champion_test: dict[str, float] | None,
    path: Path,
) -> Path:
    comparison = result.comparison_frame(
        {"current champion": champion_test} if champion_test is not None else None
    ).to_markdown(index=False)
    splits = "\n".join(
        f"- {name}: {int(part['rows']):,} rows, churn rate {part['churn_rate']:.1%}"
        for name, part in result.split_summary.items()
    )
    path.write_text(
        f"""# churn-model: model card

## Data
{data_description}

{splits}

## Features
{len(FEATURE_COLUMNS)} columns of `features.customer_features`: {", ".join(FEATURE_COLUMNS)}.

## Model
{result.winner}, tuned by Optuna, blended in log-odds with the logistic model (tree weight
{result.model.tree_weight:.2f}, chosen on the validation split) and calibrated
({result.model.calibrator.method}) on the validation split. Output: the probability that the
customer churns. Reasons are exact contributions to the blended log-odds (TreeSHAP for the
trees, coefficient times centred value for the linear part).

## Metrics on the test split
{comparison}

## Intended use
Ranking customers by churn risk for retention outreach, and reading the probability as a
probability (it is calibrated). Each score comes with the features that pushed it up most.

## Limits
Trained on one company's customers and the Telco columns only; it knows nothing of
complaints, usage or competitors' offers. Probabilities are calibrated on historical churn;
when the customer base drifts, the drift monitor flags it and the model is retrained.
""",
        encoding="utf-8",
    )
    return path
