"""Why a customer scores high, in words: a model's per-column contributions (exact TreeSHAP
plus the logistic part's, see ``retention_pipelines.churn_model``) turned into reasons named
for people ("Contract: Month-to-month", "Tenure: 2 months")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from retention_pipelines.core.features import BOOLEAN_FEATURES

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


_FEATURE_OF_LABEL: Final[dict[str, str]] = {label: name for name, label in FEATURE_LABELS.items()}


def feature_of(reason: str) -> str | None:
    """The contract's column a reason's text names ("Contract: Month-to-month" -> contract)."""
    return _FEATURE_OF_LABEL.get(reason.partition(":")[0])
