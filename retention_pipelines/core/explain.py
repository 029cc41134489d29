"""Why a customer scores high: TreeSHAP contributions per feature, named for people.

Both boosters compute exact TreeSHAP natively (XGBoost ``pred_contribs``, CatBoost
``ShapValues``), fast enough for nightly scoring. Categorical columns enter the models as one
feature each, so a contribution already belongs to the human-level column ("Contract"), not
to a one-hot level. Contributions are on the log-odds scale of the raw (uncalibrated) model:
they rank reasons; the calibrated probability is reported separately.
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
)

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


def contributions(
    model: xgb.Booster | catboost.CatBoostClassifier, encoder: FeatureEncoder, frame: pd.DataFrame
) -> pd.DataFrame:
    """Per row and feature, the TreeSHAP contribution to the log-odds (bias column dropped)."""
    if isinstance(model, xgb.Booster):
        matrix = xgb.DMatrix(encoder.tree_input(frame), enable_categorical=True)
        values = model.predict(
            matrix, pred_contribs=True, iteration_range=(0, model.best_iteration + 1)
        )
    else:
        pool = catboost.Pool(encoder.catboost_input(frame), cat_features=list(CATEGORICAL_FEATURES))
        values = model.get_feature_importance(data=pool, type="ShapValues")
    return pd.DataFrame(values[:, :-1], columns=list(FEATURE_COLUMNS), index=frame.index)


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
        return f"{label}: {int(value)} {_UNITS[feature]}"
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
