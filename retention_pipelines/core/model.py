"""The model artefact: feature contract in, calibrated churn probability out.

Everything between the two (encoding, the booster and its linear partner, the calibrator)
lives in one MLflow pyfunc model, so batch scoring and the API load the same object from
``models:/churn-model@champion`` and cannot disagree about how a feature is encoded.
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
from retention_pipelines.core.training import Baseline, Calibrator, ModelKind, tree_margin

PROBABILITY_COLUMN = "churn_probability"


@dataclass
class ChurnModel:
    """A fitted booster blended in log-odds with the logistic model, then calibrated.

    ``margin = tree_weight * booster log-odds + (1 - tree_weight) * logistic log-odds``; the
    calibrator maps ``sigmoid(margin)`` to the probability. With ``tree_weight`` 1 (or no
    linear part) it is the booster alone.
    """

    kind: ModelKind
    encoder: FeatureEncoder
    booster: xgb.Booster | catboost.CatBoostClassifier
    calibrator: Calibrator
    linear: Baseline | None = None
    tree_weight: float = 1.0

    def margin(self, frame: pd.DataFrame) -> np.ndarray:
        """Log-odds of churn before calibration."""
        tree = self.encoder.tree_input(frame)
        margin = tree_margin(self.booster, explain.tree_data_from(self.booster, tree))
        if not self.blended:
            return margin
        linear = explain.linear_parts(self.linear, frame, tree).margin  # type: ignore[arg-type]
        return self.tree_weight * margin + (1 - self.tree_weight) * linear

    @property
    def blended(self) -> bool:
        return self.linear is not None and self.tree_weight < 1.0

    def raw_scores(self, frame: pd.DataFrame) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.margin(frame)))

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated churn probabilities for rows holding the feature contract's columns."""
        _require_features(frame)
        return self.calibrator(self.raw_scores(frame))

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Per row and feature, the exact contribution to :meth:`margin`."""
        scored = self.score(frame)
        return pd.DataFrame(scored.contributions, columns=list(FEATURE_COLUMNS), index=frame.index)

    def score(
        self,
        frame: pd.DataFrame,
        *,
        exact_from: float | None = None,
        exact_gap: float = float("inf"),
    ) -> Scored:
        """Probabilities and reasons in one pass over the encodings.

        ``None`` for ``exact_from`` explains every row with exact TreeSHAP. Otherwise an
        XGBoost booster's contributions come from the path approximation (see
        :func:`explain.tree_contributions`), tens of times faster, and exact TreeSHAP is
        recomputed where the approximation could name the wrong top reason of a customer who
        matters most: rows whose calibrated probability is at least ``exact_from`` and whose
        approximate top two reasons lie within ``exact_gap`` log-odds of each other. CatBoost's
        approximate ShapValues measured no faster than its exact ones, so CatBoost rows are
        always exact. The linear part is always exact (it is cheap).
        """
        _require_features(frame)
        tree = self.encoder.tree_input(frame)
        data = explain.tree_data_from(self.booster, tree)
        margin = tree_margin(self.booster, data)
        linear = explain.linear_parts(self.linear, frame, tree) if self.blended else None  # type: ignore[arg-type]
        if linear is not None:
            margin = self.tree_weight * margin + (1 - self.tree_weight) * linear.margin
        probabilities = self.calibrator(1.0 / (1.0 + np.exp(-margin)))

        def blend(tree_part: np.ndarray, rows: Any = slice(None)) -> np.ndarray:
            if linear is None:
                return tree_part
            return self.tree_weight * tree_part + (
                (1 - self.tree_weight) * linear.contributions[rows]
            )

        if exact_from is None or isinstance(self.booster, catboost.CatBoostClassifier):
            contributions = blend(explain.tree_contributions(self.booster, data))
            exact = np.ones(len(frame), dtype=bool)
        else:
            contributions = blend(explain.tree_contributions(self.booster, data, approximate=True))
            exact = (probabilities >= exact_from) & (_top_gap(contributions) < exact_gap)
            rows = np.flatnonzero(exact)
            if rows.size:
                exact_tree = explain.tree_contributions(self.booster, data.slice(rows))
                contributions[rows] = blend(exact_tree, rows)
        return Scored(probabilities=probabilities, contributions=contributions, exact=exact)


@dataclass(frozen=True)
class Scored:
    """What :meth:`ChurnModel.score` returns, row-aligned with its input."""

    probabilities: np.ndarray
    contributions: np.ndarray  # rows x FEATURE_COLUMNS, log-odds
    exact: np.ndarray  # whether the row's contributions are exact TreeSHAP


def _top_gap(contributions: np.ndarray) -> np.ndarray:
    """Per row, how far the largest contribution leads the second largest."""
    top_two = np.partition(contributions, -2, axis=1)[:, -2:]
    return top_two[:, 1] - top_two[:, 0]


def _require_features(frame: pd.DataFrame) -> None:
    missing = [column for column in FEATURE_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"the input lacks feature columns: {missing}")


def booster_margin(
    booster: xgb.Booster | catboost.CatBoostClassifier, encoder: FeatureEncoder, frame: pd.DataFrame
) -> np.ndarray:
    """Either booster's log-odds of churn."""
    return tree_margin(booster, explain.tree_data(booster, encoder, frame))


class ChurnPyfunc(mlflow.pyfunc.PythonModel):
    """The MLflow face of :class:`ChurnModel`: a frame of features in, probabilities out."""

    def __init__(self, model: ChurnModel) -> None:
        self.model = model

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        probabilities = self.model.predict_proba(model_input)
        return pd.DataFrame({PROBABILITY_COLUMN: probabilities}, index=model_input.index)
