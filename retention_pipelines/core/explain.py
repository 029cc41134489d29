"""Why a customer scores high: TreeSHAP contributions per feature, named for people.

Both boosters compute exact TreeSHAP natively (XGBoost ``pred_contribs``, CatBoost
``ShapValues``), fast enough for nightly scoring. Categorical columns enter the models as one
feature each, so a contribution already belongs to the human-level column ("Contract"), not
to a one-hot level. The logistic part of the model is explained exactly too (coefficient times
the value's distance from the training mean, one-hot levels summed back to their column).
Contributions are on the log-odds scale of the raw (uncalibrated) model: they rank reasons;
the calibrated probability is reported separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import catboost
import numpy as np
import pandas as pd
import xgboost as xgb

from retention_pipelines.core.features import (
    BOOLEAN_FEATURES,
    CATEGORICAL_FEATURES,
    FEATURE_COLUMNS,
    FeatureEncoder,
    linear_feature,
)
from retention_pipelines.core.training import Baseline

FEATURE_LABELS: Final[dict[str, str]] = {
    "gender": "Gender",
    "multiple_lines": "Multiple lines",
    "internet_service": "Internet service",
    "online_security": "Online security",
    "online_backup": "Online backup",
    "device_protection": "Device protection",
    "tech_support": "Tech support",
    "streaming_tv": "Streaming TV",
    "streaming_movies": "Streaming movies",
    "contract": "Contract",
    "payment_method": "Payment method",
    "tenure_band": "Tenure band",
    "is_senior_citizen": "Senior citizen",
    "has_partner": "Partner",
    "has_dependents": "Dependents",
    "has_phone_service": "Phone service",
    "is_paperless_billing": "Paperless billing",
    "has_internet": "Internet",
    "has_fiber_optic": "Fiber optic",
    "has_dsl": "DSL",
    "is_automatic_payment": "Automatic payment",
    "streaming_bundle": "Streams TV and movies",
    "protection_bundle": "Full protection bundle",
    "tenure_months": "Tenure",
    "monthly_charges": "Monthly charges",
    "total_charges": "Total charges",
    "avg_monthly_spend": "Average monthly spend",
    "charge_increase": "Charge increase vs average",
    "add_on_service_count": "Add-on services",
    "contract_length_months": "Contract length",
}
_UNITS: Final[dict[str, str]] = {"tenure_months": "months", "contract_length_months": "months"}
_MONEY: Final[frozenset[str]] = frozenset(
    {"monthly_charges", "total_charges", "avg_monthly_spend", "charge_increase"}
)


TreeModel = xgb.Booster | catboost.CatBoostClassifier
TreeData = xgb.DMatrix | catboost.Pool


def tree_data(model: TreeModel, encoder: FeatureEncoder, frame: pd.DataFrame) -> TreeData:
    """The booster's own input structure, built once and used for margins and contributions."""
    return tree_data_from(model, encoder.tree_input(frame))


def tree_data_from(model: TreeModel, tree: pd.DataFrame) -> TreeData:
    """:func:`tree_data` from an already encoded :meth:`FeatureEncoder.tree_input`."""
    if isinstance(model, xgb.Booster):
        return xgb.DMatrix(tree, enable_categorical=True)
    return catboost.Pool(
        FeatureEncoder.catboost_from_tree(tree), cat_features=list(CATEGORICAL_FEATURES)
    )


def tree_contributions(
    model: TreeModel, data: TreeData, *, approximate: bool = False
) -> np.ndarray:
    """Per row and feature, the contribution to the booster's log-odds (bias dropped).

    Exact TreeSHAP by default. ``approximate`` takes the path attribution instead (Saabas:
    XGBoost ``approx_contribs``, CatBoost ``Approximate`` ShapValues): each split's change in
    the expected value goes to the split's feature along the row's own path. It is one walk
    down each tree, tens of times faster than exact TreeSHAP, and usually ranks the strongest
    reasons the same way; scoring uses it where exactness matters least.
    """
    if isinstance(model, xgb.Booster):
        assert isinstance(data, xgb.DMatrix)  # noqa: S101
        values = model.predict(
            data,
            pred_contribs=True,
            approx_contribs=approximate,
            iteration_range=(0, model.best_iteration + 1),
        )
    else:
        values = model.get_feature_importance(
            data=data,
            type="ShapValues",
            shap_calc_type="Approximate" if approximate else "Regular",
        )
    return np.asarray(values[:, :-1], dtype=float)


def contributions(model: TreeModel, encoder: FeatureEncoder, frame: pd.DataFrame) -> pd.DataFrame:
    """Per row and feature, the exact TreeSHAP contribution to the booster's log-odds."""
    values = tree_contributions(model, tree_data(model, encoder, frame))
    return pd.DataFrame(values, columns=list(FEATURE_COLUMNS), index=frame.index)


@dataclass(frozen=True)
class LinearParts:
    """The logistic model's log-odds and its exact per-feature contributions, from one pass
    over the design matrix."""

    margin: np.ndarray
    contributions: np.ndarray


def linear_parts(
    baseline: Baseline, frame: pd.DataFrame, tree: pd.DataFrame | None = None
) -> LinearParts:
    """``coefficient * (value - training mean)`` per design column, one-hot levels summed back
    to their contract column; the margin is the model's own log-odds. ``tree``, when given,
    is the frame's :meth:`FeatureEncoder.tree_input`, so it is not encoded twice."""
    encoder = baseline.encoder
    design = encoder.linear_matrix(encoder.tree_input(frame) if tree is None else tree)
    columns = baseline.design_means.index
    coefficients = baseline.model.coef_[0]
    margin = design @ coefficients + float(baseline.model.intercept_[0])
    grouping = np.zeros((len(columns), len(FEATURE_COLUMNS)))
    position = {feature: index for index, feature in enumerate(FEATURE_COLUMNS)}
    for row, column in enumerate(columns):
        grouping[row, position[linear_feature(column)]] = 1.0
    centred = (design - baseline.design_means.to_numpy(dtype=float)) * coefficients
    return LinearParts(margin=margin, contributions=centred @ grouping)


def linear_contributions(baseline: Baseline, frame: pd.DataFrame) -> pd.DataFrame:
    """Per row and feature, the logistic model's exact contribution to its log-odds."""
    return pd.DataFrame(
        linear_parts(baseline, frame).contributions,
        columns=list(FEATURE_COLUMNS),
        index=frame.index,
    )


def describe(feature: str, value: object) -> str:
    """A feature and its value as a person reads it: "Contract: Month-to-month"."""
    label = FEATURE_LABELS.get(feature, feature)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return f"{label}: unknown"
    if feature in BOOLEAN_FEATURES:
        return f"{label}: {'yes' if bool(value) else 'no'}"
    if feature in _MONEY:
        return f"{label}: {float(value):.2f}"
    if feature in _UNITS:
        count = int(value)  # type: ignore[call-overload]
        unit = _UNITS[feature] if count != 1 else _UNITS[feature].removesuffix("s")
        return f"{label}: {count} {unit}"
    return f"{label}: {value}"


@dataclass(frozen=True)
class Reason:
    text: str
    contribution: float


def top_reasons(
    row_contributions: pd.DataFrame, frame: pd.DataFrame, k: int = 3
) -> list[list[Reason]]:
    """For each row, the ``k`` features that pushed its risk up most (largest contributions)."""
    values = row_contributions.to_numpy()
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    columns = row_contributions.columns
    reasons = []
    for row_index, picks in enumerate(order):
        row = frame.iloc[row_index]
        reasons.append(
            [
                Reason(describe(columns[pick], row[columns[pick]]), float(values[row_index, pick]))
                for pick in picks
            ]
        )
    return reasons
