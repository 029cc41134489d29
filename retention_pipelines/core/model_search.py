"""One training run: baseline, both tuned families, the winner chosen on validation data,
blended with the logistic model and calibrated there, and checked against the baseline on the
test split."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import pandas as pd

from retention_pipelines.churn_model.encoding import FeatureEncoder
from retention_pipelines.churn_model.model import ChurnModel, ModelKind
from retention_pipelines.core.features import fit_encoder
from retention_pipelines.core.training import (
    Baseline,
    TrainingQualityError,
    TrainingSplit,
    TrialCallback,
    TunedCandidate,
    TuningBudget,
    booster_margin,
    choose_calibrator,
    choose_tree_weight,
    evaluate,
    fit_baseline,
    fit_catboost,
    fit_xgboost,
    labels_of,
    predict_catboost,
    predict_xgboost,
    tune,
)

logger = logging.getLogger(__name__)
# The test metrics people compare models by.
COMPARED = ("roc_auc", "pr_auc", "brier", "top_decile_lift")
MODEL_KINDS: tuple[ModelKind, ...] = ("xgboost", "catboost")


@dataclass
class CandidateResult:
    tuned: TunedCandidate
    validation: dict[str, float]
    test: dict[str, float]


@dataclass
class TrainingResult:
    """Everything a person needs to judge a training run, and the model it produced."""

    baseline_test: dict[str, float]
    candidates: dict[str, CandidateResult]
    winner: ModelKind
    model: ChurnModel
    test: dict[str, float]
    validation: dict[str, float]
    split_summary: dict[str, dict[str, float]] = field(default_factory=dict)

    def comparison(self) -> dict[str, dict[str, Any]]:
        table: dict[str, dict[str, Any]] = {"baseline": self.baseline_test}
        for kind, candidate in self.candidates.items():
            table[kind] = candidate.test
        table[f"{self.winner} + linear, calibrated (chosen)"] = self.test
        return table

    def comparison_frame(self, extra: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
        """Test metrics of the baseline, each tuned family and the chosen model (and of
        ``extra`` rows, e.g. the current champion), one row per model."""
        rows = {**self.comparison(), **(extra or {})}
        return pd.DataFrame(
            [
                {"model": name, **{metric: round(metrics[metric], 4) for metric in COMPARED}}
                for name, metrics in rows.items()
            ]
        )


def train_churn_model(
    split: TrainingSplit,
    *,
    storage: str | optuna.storages.BaseStorage,
    study_prefix: str,
    budgets: dict[ModelKind, TuningBudget],
    seed: int,
    baseline_tolerance: float,
    on_trial: TrialCallback | None = None,
) -> TrainingResult:
    """Tune both families, pick the winner by validation ROC AUC, blend it with the logistic
    model in log-odds and calibrate the blend, both on validation data.

    Raises :class:`TrainingQualityError` when the calibrated winner's test ROC AUC is below the
    logistic baseline's by more than ``baseline_tolerance``.
    """
    encoder = fit_encoder(split.train)
    baseline = fit_baseline(encoder, split, seed=seed)
    baseline_test = evaluate(labels_of(split.test), baseline.predict(split.test))
    candidates: dict[str, CandidateResult] = {}
    fitted: dict[str, Any] = {}
    for kind in MODEL_KINDS:
        tuned = tune(
            kind,
            study_name=f"{study_prefix}-{kind}",
            storage=storage,
            encoder=encoder,
            split=split,
            budget=budgets[kind],
            seed=seed,
            on_trial=on_trial,
        )
        booster, validation_scores, test_scores = refit_candidate(
            kind, tuned.params, encoder, split, seed
        )
        fitted[kind] = (booster, validation_scores, test_scores)
        candidates[kind] = CandidateResult(
            tuned=tuned,
            validation=evaluate(labels_of(split.validation), validation_scores),
            test=evaluate(labels_of(split.test), test_scores),
        )
        logger.info("%s: validation %s", kind, candidates[kind].validation)
    winner: ModelKind = max(MODEL_KINDS, key=lambda kind: candidates[kind].validation["roc_auc"])
    model, validation_scores, test_scores = blend_and_calibrate(
        winner, fitted[winner][0], baseline, encoder, split, seed
    )
    logger.info("chosen: %s, tree weight %.2f", winner, model.tree_weight)
    test = evaluate(labels_of(split.test), test_scores)
    shortfall = baseline_test["roc_auc"] - test["roc_auc"]
    if shortfall > baseline_tolerance:
        raise TrainingQualityError(
            f"the tuned {winner} model loses to the logistic baseline on the test split: "
            f"ROC AUC {test['roc_auc']:.4f} vs {baseline_test['roc_auc']:.4f} "
            f"({shortfall:.4f} below, tolerance {baseline_tolerance})"
        )
    return TrainingResult(
        baseline_test=baseline_test,
        candidates=candidates,
        winner=winner,
        model=model,
        test=test,
        validation=evaluate(labels_of(split.validation), validation_scores),
        split_summary=split.summary(),
    )


def blend_and_calibrate(
    winner: ModelKind,
    booster: Any,
    baseline: Baseline,
    encoder: FeatureEncoder,
    split: TrainingSplit,
    seed: int,
) -> tuple[ChurnModel, np.ndarray, np.ndarray]:
    """The winner blended with the logistic model and calibrated, both on validation data;
    returns the model and its calibrated validation and test probabilities."""
    labels = labels_of(split.validation)
    tree_margin = booster_margin(booster, encoder, split.validation)
    linear_margin = baseline.margin(split.validation)
    tree_weight = choose_tree_weight(tree_margin, linear_margin, labels)
    margin = tree_weight * tree_margin + (1 - tree_weight) * linear_margin
    blended = ChurnModel(
        kind=winner,
        encoder=encoder,
        booster=booster,
        calibrator=choose_calibrator(1 / (1 + np.exp(-margin)), labels, seed=seed).to_part(),
        linear=baseline.to_part(),
        tree_weight=tree_weight,
    )
    return (
        blended,
        blended.predict_proba(split.validation),
        blended.predict_proba(split.test),
    )


def refit_candidate(
    kind: ModelKind,
    params: dict[str, Any],
    encoder: FeatureEncoder,
    split: TrainingSplit,
    seed: int,
) -> tuple[Any, np.ndarray, np.ndarray]:
    if kind == "xgboost":
        booster = fit_xgboost(
            {**params, "seed": seed, "tree_method": "hist", "max_cat_to_onehot": 8}, encoder, split
        )
        return (
            booster,
            predict_xgboost(booster, encoder, split.validation),
            predict_xgboost(booster, encoder, split.test),
        )
    model = fit_catboost({**params, "random_seed": seed}, encoder, split.train)
    return (
        model,
        predict_catboost(model, encoder, split.validation),
        predict_catboost(model, encoder, split.test),
    )
