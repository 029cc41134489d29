"""The feature contract: the columns of ``features.customer_features`` (its dbt contract) that
the model reads, grouped by kind, and the frame conversion every reader of the table shares.

How a row becomes model input is the model's own business (``retention_pipelines.churn_model``):
it is fitted on training data and saved with the model.
"""

from __future__ import annotations

from typing import Final

import pandas as pd

from retention_pipelines.churn_model.encoding import FeatureEncoder as ModelEncoder
from retention_pipelines.churn_model.encoding import as_float
from retention_pipelines.churn_model.legacy import FeatureEncoder  # noqa: F401  (format-0 pickles)

ID_COLUMNS: Final[tuple[str, ...]] = ("snapshot_date", "customer_id")
LABEL_COLUMN: Final = "churned"
CATEGORICAL_FEATURES: Final[tuple[str, ...]] = (
    "gender",
    "multiple_lines",
    "internet_service",
    "online_security",
    "online_backup",
    "device_protection",
    "tech_support",
    "streaming_tv",
    "streaming_movies",
    "contract",
    "payment_method",
    "tenure_band",
)
BOOLEAN_FEATURES: Final[tuple[str, ...]] = (
    "is_senior_citizen",
    "has_partner",
    "has_dependents",
    "has_phone_service",
    "is_paperless_billing",
    "has_internet",
    "has_fiber_optic",
    "has_dsl",
    "is_automatic_payment",
    "streaming_bundle",
    "protection_bundle",
)
NUMERIC_FEATURES: Final[tuple[str, ...]] = (
    "tenure_months",
    "monthly_charges",
    "total_charges",
    "avg_monthly_spend",
    "charge_increase",
    "add_on_service_count",
    "contract_length_months",
)
FEATURE_COLUMNS: Final[tuple[str, ...]] = (
    *CATEGORICAL_FEATURES,
    *BOOLEAN_FEATURES,
    *NUMERIC_FEATURES,
)
# Integer columns of the table; the other numbers are numeric(p, 2).
INTEGER_FEATURES: Final[tuple[str, ...]] = (
    "tenure_months",
    "add_on_service_count",
    "contract_length_months",
)


def fit_encoder(frame: pd.DataFrame) -> ModelEncoder:
    """An encoder of the contract's columns, fitted on ``frame`` (training rows)."""
    return ModelEncoder.fit(
        frame, categorical=CATEGORICAL_FEATURES, boolean=BOOLEAN_FEATURES, numeric=NUMERIC_FEATURES
    )


def feature_frame(frame: pd.DataFrame, *, keep_integers: bool = False) -> pd.DataFrame:
    """The contract's columns with plain dtypes (text, boolean, float), whatever the source:
    Postgres hands numerics over as ``Decimal``, which models and MLflow schemas do not take.
    ``keep_integers`` types the integer columns as the table does (64-bit integers, which
    then must not be missing)."""
    typed = pd.DataFrame(index=frame.index)
    for column in CATEGORICAL_FEATURES:
        typed[column] = frame[column].astype("object").where(frame[column].notna(), None)
    for column in BOOLEAN_FEATURES:
        typed[column] = frame[column].astype("boolean")
    for column in NUMERIC_FEATURES:
        typed[column] = as_float(frame[column])
        if keep_integers and column in INTEGER_FEATURES:
            typed[column] = typed[column].astype("int64")
    return typed
