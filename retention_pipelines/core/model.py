"""The model artefact: feature contract in, calibrated churn probability out.

Everything between the two (encoding, the booster, the calibrator) lives in one MLflow pyfunc
model, so batch scoring and the API load the same object from ``models:/churn-model@champion``
and cannot disagree about how a feature is encoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import catboost
import mlflow.pyfunc
import numpy as np
import pandas as pd
import xgboost as xgb

from retention_pipelines.core import explain
from retention_pipelines.core.features import FEATURE_COLUMNS, FeatureEncoder
from retention_pipelines.core.training import (
    Calibrator,
    ModelKind,
    predict_catboost,
    predict_xgboost,
)

PROBABILITY_COLUMN = "churn_probability"


@dataclass
class ChurnModel:
    """A fitted booster with its encoder and calibrator."""

    kind: ModelKind
    encoder: FeatureEncoder
    booster: xgb.Booster | catboost.CatBoostClassifier
    calibrator: Calibrator

    def raw_scores(self, frame: pd.DataFrame) -> np.ndarray:
        if self.kind == "xgboost":
            assert isinstance(self.booster, xgb.Booster)  # noqa: S101
            return predict_xgboost(self.booster, self.encoder, frame)
        assert isinstance(self.booster, catboost.CatBoostClassifier)  # noqa: S101
        return predict_catboost(self.booster, self.encoder, frame)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated churn probabilities for rows holding the feature contract's columns."""
        missing = [column for column in FEATURE_COLUMNS if column not in frame.columns]
        if missing:
            raise ValueError(f"the input lacks feature columns: {missing}")
        return self.calibrator(self.raw_scores(frame))

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        return explain.contributions(self.booster, self.encoder, frame)


class ChurnPyfunc(mlflow.pyfunc.PythonModel):
    """The MLflow face of :class:`ChurnModel`: a frame of features in, probabilities out."""

    def __init__(self, model: ChurnModel) -> None:
        self.model = model

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        probabilities = self.model.predict_proba(model_input)
        return pd.DataFrame({PROBABILITY_COLUMN: probabilities}, index=model_input.index)
