"""Small churn models for tests that need a registered model but not a trained one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from retention_pipelines.churn_model import pyfunc
from retention_pipelines.churn_model.model import ChurnModel
from retention_pipelines.churn_model.parts import Calibrator
from retention_pipelines.core.features import INTEGER_FEATURES, fit_encoder

FORMAT_0 = Path(__file__).resolve().parent / "fixtures" / "churn_model_format_0"


def feature_rows() -> pd.DataFrame:
    """Forty synthetic customers' rows of ``features.customer_features`` (no snapshot date),
    typed as the table gives them, with what the format-0 fixture models predicted for them."""
    records = json.loads((FORMAT_0 / "xgboost_sigmoid" / "expected_probabilities.json").read_text())
    return pd.DataFrame(records).drop(columns="expected_probability")


def constant_churn_model(probability: float) -> ChurnModel:
    """A churn model that gives everyone ``probability``: its calibrator maps every score
    there, whatever a one-round booster says. Versions are told apart by what they predict."""
    rows = feature_rows()
    encoder = fit_encoder(rows)
    labels = np.arange(len(rows)) % 2
    booster = xgb.train(
        {"max_depth": 1, "objective": "binary:logistic"},
        xgb.DMatrix(encoder.tree_input(rows), labels, enable_categorical=True),
        num_boost_round=1,
    )
    calibrator = Calibrator("isotonic", thresholds=(0.0, 1.0), values=(probability, probability))
    return ChurnModel(kind="xgboost", encoder=encoder, booster=booster, calibrator=calibrator)


def log_churn_model(model: ChurnModel) -> str:
    """Log ``model`` in the active run, as training does; return its model URI."""
    info = pyfunc.log_model(
        model,
        name="model",
        signature=pyfunc.signature(model, INTEGER_FEATURES),
        input_example=feature_rows().head(3),
        pip_requirements=["mlflow"],
    )
    return info.model_uri


def probability_of(model: ChurnModel) -> float:
    return float(model.predict_proba(feature_rows()).mean())


def blended_xgboost(split, *, seed: int, max_depth: int, tree_weight: float = 0.7) -> ChurnModel:
    """A small XGBoost model blended with the logistic part at ``tree_weight`` and calibrated,
    as training builds one, on a training split of the Telco features."""
    from retention_pipelines.core import training  # noqa: PLC0415

    encoder = fit_encoder(split.train)
    booster = training.fit_xgboost(
        {"max_depth": max_depth, "eta": 0.1, "seed": seed}, encoder, split
    )
    baseline = training.fit_baseline(encoder, split, seed=seed)
    margin = tree_weight * training.booster_margin(booster, encoder, split.validation)
    margin += (1 - tree_weight) * baseline.margin(split.validation)
    calibrator = training.choose_calibrator(
        1 / (1 + np.exp(-margin)), training.labels_of(split.validation), seed=seed
    )
    return ChurnModel(
        kind="xgboost",
        encoder=encoder,
        booster=booster,
        calibrator=calibrator.to_part(),
        linear=baseline.to_part(),
        tree_weight=tree_weight,
    )
