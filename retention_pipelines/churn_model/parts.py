"""The parts of a churn model that are not the encoder: the booster, the logistic part it is
blended with, and the calibrator. Each part computes from plain numbers (coefficients,
thresholds, a booster file), so it is saved as data and rebuilt on load.

Contributions are on the log-odds scale of the uncalibrated blend: they rank reasons; the
calibrated probability is reported separately.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import catboost
import numpy as np
import pandas as pd
import xgboost as xgb

from retention_pipelines.churn_model.encoding import EncodedRows, FeatureEncoder

TreeModel = xgb.Booster | catboost.CatBoostClassifier
TreeData = xgb.DMatrix | catboost.Pool
Calibration = Literal["isotonic", "sigmoid"]
# The sigmoid calibrator reads scores as log-odds, clipped so that 0 and 1 stay finite.
_SCORE_CLIP = 1e-6
# CatBoost reads a few rows fastest from one object array, many rows from a DataFrame (it
# parses an object array value by value, a DataFrame's float columns whole): measured, the two
# cross at about a thousand rows.
_CATBOOST_OBJECT_ROWS = 1_000


# --- the booster -----------------------------------------------------------------------------


def tree_data(model: TreeModel, tree: pd.DataFrame, categorical: tuple[str, ...]) -> TreeData:
    """The booster's own input structure from an encoded frame (:meth:`FeatureEncoder.tree_input`),
    built once for margins and contributions. CatBoost takes its categorical columns as
    strings. Predictions build theirs with :func:`encoded_tree_data`, which skips the frame."""
    if isinstance(model, xgb.Booster):
        return xgb.DMatrix(tree, enable_categorical=True)
    strings = tree.copy()
    for column in categorical:
        strings[column] = strings[column].astype(str)
    return catboost.Pool(strings, cat_features=list(categorical))


def encoded_tree_data(
    model: TreeModel,
    encoder: FeatureEncoder,
    encoded: EncodedRows,
    *,
    threads: int | None = None,
) -> TreeData:
    """The booster's input from :meth:`FeatureEncoder.encode` rows: margins and
    contributions are the same as from :func:`tree_data` of the same rows, at less cost.

    XGBoost reads a float32 matrix (what it stores anyway) of category codes and numbers, its
    category columns declared by ``feature_types`` (``c``): the codes are positions in
    ``[*levels, UNKNOWN]``, the very codes of the categoricals it was trained on. CatBoost
    hashes category strings, so it reads each code's level name, and the floats (one object
    array up to a thousand rows, a DataFrame beyond). ``threads`` is the number of threads
    building the input (``None``: the library's default)."""
    categorical = encoder.categorical
    thread_count = threads if threads is not None else -1
    if isinstance(model, xgb.Booster):
        matrix = np.empty((len(encoded), len(encoder.columns)), dtype=np.float32)
        matrix[:, : len(categorical)] = encoded.codes
        matrix[:, len(categorical) :] = encoded.values
        return xgb.DMatrix(
            matrix,
            feature_names=list(encoder.columns),
            feature_types=["c"] * len(categorical) + ["q"] * len(encoder.floats),
            enable_categorical=True,
            nthread=thread_count,
        )
    category_names = [
        encoder.level_names(column)[encoded.codes[:, i]] for i, column in enumerate(categorical)
    ]
    if len(encoded) > _CATBOOST_OBJECT_ROWS:
        columns = dict(zip(categorical, category_names, strict=True))
        columns |= {column: encoded.values[:, i] for i, column in enumerate(encoder.floats)}
        return catboost.Pool(
            pd.DataFrame(columns, copy=False),
            cat_features=list(categorical),
            thread_count=thread_count,
        )
    objects = np.empty((len(encoded), len(encoder.columns)), dtype=object)
    for position, names in enumerate(category_names):
        objects[:, position] = names
    objects[:, len(categorical) :] = encoded.values
    return catboost.Pool(
        objects,
        cat_features=list(range(len(categorical))),
        feature_names=list(encoder.columns),
        thread_count=thread_count,
    )


def boosting_rounds(booster: xgb.Booster) -> int:
    """The rounds an XGBoost model predicts with: up to its best round when it was early
    stopped, all of them otherwise."""
    best = booster.attr("best_iteration")
    return int(best) + 1 if best is not None else booster.num_boosted_rounds()


def tree_margin(model: TreeModel, data: TreeData, *, threads: int | None = None) -> np.ndarray:
    """Either booster's log-odds of churn. ``threads`` sets CatBoost's thread count (``None``:
    every core); an XGBoost booster predicts with its own ``nthread`` parameter."""
    if isinstance(model, xgb.Booster):
        return model.predict(data, output_margin=True, iteration_range=(0, boosting_rounds(model)))
    return np.asarray(
        model.predict(
            data,
            prediction_type="RawFormulaVal",
            thread_count=threads if threads is not None else -1,
        ),
        dtype=float,
    )


def tree_contributions(
    model: TreeModel,
    data: TreeData,
    *,
    approximate: bool = False,
    threads: int | None = None,
) -> np.ndarray:
    """Per row and input column, the contribution to the booster's log-odds (bias dropped).

    Exact TreeSHAP (XGBoost ``pred_contribs``, CatBoost ``ShapValues``) by default; both
    boosters take categorical columns as one feature each, so a contribution already belongs
    to the column ("Contract"), not to a level. ``approximate`` takes the path attribution
    instead (Saabas: each split's change in the expected value goes to the split's feature
    along the row's own path): one walk down each tree, tens of times faster, and usually the
    same ranking of the strongest reasons. ``threads`` as for :func:`tree_margin`.
    """
    if isinstance(model, xgb.Booster):
        assert isinstance(data, xgb.DMatrix)  # noqa: S101
        values = model.predict(
            data,
            pred_contribs=True,
            approx_contribs=approximate,
            iteration_range=(0, boosting_rounds(model)),
        )
    else:
        values = model.get_feature_importance(
            data=data,
            type="ShapValues",
            shap_calc_type="Approximate" if approximate else "Regular",
            thread_count=threads if threads is not None else -1,
        )
    return np.asarray(values[:, :-1], dtype=float)


# --- the logistic part -----------------------------------------------------------------------


@dataclass(frozen=True)
class LinearExplanation:
    """The logistic part's log-odds and its exact per-column contributions."""

    margin: np.ndarray
    contributions: np.ndarray


@dataclass(frozen=True)
class LinearPart:
    """A logistic model over the encoder's design matrix: one coefficient per design column,
    and the training mean of each column, against which contributions are measured."""

    coefficients: np.ndarray
    intercept: float
    design_means: np.ndarray

    def explain(self, design: np.ndarray, grouping: np.ndarray) -> LinearExplanation:
        """``coefficient * (value - training mean)`` per design column, summed per input
        column by ``grouping``; the margin is the model's own log-odds."""
        margin = design @ self.coefficients + self.intercept
        centred = (design - self.design_means) * self.coefficients
        return LinearExplanation(margin=margin, contributions=centred @ grouping)

    @classmethod
    def from_fitted(cls, logistic: Any, design_means: Any) -> LinearPart:
        """From a fitted binary scikit-learn ``LogisticRegression`` (duck-typed: ``coef_`` and
        ``intercept_``) and the design columns' training means."""
        return cls(
            coefficients=np.asarray(logistic.coef_[0], dtype=float),
            intercept=float(logistic.intercept_[0]),
            design_means=np.asarray(design_means, dtype=float),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "coefficients": self.coefficients.tolist(),
            "intercept": self.intercept,
            "design_means": self.design_means.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LinearPart:
        return cls(
            coefficients=np.asarray(data["coefficients"], dtype=float),
            intercept=float(data["intercept"]),
            design_means=np.asarray(data["design_means"], dtype=float),
        )


# --- the calibrator --------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibrator:
    """Maps the blend's raw probability to a calibrated one.

    ``sigmoid``: ``1 / (1 + exp(-(slope * logit(score) + intercept)))`` (Platt scaling).
    ``isotonic``: linear interpolation between fitted thresholds, constant beyond them.
    """

    method: Calibration
    slope: float = 1.0
    intercept: float = 0.0
    thresholds: tuple[float, ...] = ()
    values: tuple[float, ...] = ()

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=float)
        if self.method == "isotonic":
            return np.clip(np.interp(scores, self.thresholds, self.values), 0.0, 1.0)
        return 1.0 / (1.0 + np.exp(-(self.slope * logit(scores) + self.intercept)))

    @classmethod
    def from_fitted(cls, method: Calibration, fitted: Any) -> Calibrator:
        """From the fitted scikit-learn calibrator of ``method`` (duck-typed): an
        ``IsotonicRegression`` (``X_thresholds_``, ``y_thresholds_``), or the
        ``LogisticRegression`` of Platt scaling on the scores' log-odds."""
        if method == "isotonic":
            return cls(
                "isotonic",
                thresholds=tuple(np.asarray(fitted.X_thresholds_, dtype=float).tolist()),
                values=tuple(np.asarray(fitted.y_thresholds_, dtype=float).tolist()),
            )
        return cls(
            "sigmoid", slope=float(fitted.coef_[0][0]), intercept=float(fitted.intercept_[0])
        )

    def to_dict(self) -> dict[str, Any]:
        if self.method == "isotonic":
            return {
                "method": self.method,
                "thresholds": list(self.thresholds),
                "values": list(self.values),
            }
        return {"method": self.method, "slope": self.slope, "intercept": self.intercept}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibrator:
        if data["method"] == "isotonic":
            return cls(
                "isotonic",
                thresholds=tuple(map(float, data["thresholds"])),
                values=tuple(map(float, data["values"])),
            )
        if data["method"] != "sigmoid":
            raise ValueError(f"unknown calibration method {data['method']!r}")
        return cls("sigmoid", slope=float(data["slope"]), intercept=float(data["intercept"]))


def logit(scores: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.asarray(scores, dtype=float), _SCORE_CLIP, 1 - _SCORE_CLIP)
    return np.log(clipped / (1 - clipped))
