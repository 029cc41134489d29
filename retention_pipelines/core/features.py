"""The feature contract the model reads, and the encoding that turns it into model input.

The columns are those of ``features.customer_features`` (its dbt contract). The encoding is
fitted on training data and travels inside the model artefact, so batch scoring and the API
cannot disagree: a category never seen in training, or a missing value, maps to an explicit
``__unknown__`` level instead of failing at predict time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pandas as pd

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
UNKNOWN: Final = "__unknown__"
LEVEL_SEPARATOR: Final = "="


@dataclass
class FeatureEncoder:
    """Category levels learned from training data, plus what the linear baseline needs."""

    categories: dict[str, list[str]] = field(default_factory=dict)
    numeric_medians: dict[str, float] = field(default_factory=dict)
    numeric_scales: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> FeatureEncoder:
        categories = {
            column: sorted(str(value) for value in frame[column].dropna().unique())
            for column in CATEGORICAL_FEATURES
        }
        numeric = frame[list(NUMERIC_FEATURES)].astype(float)
        medians = {column: float(numeric[column].median()) for column in NUMERIC_FEATURES}
        scales = {
            column: (float(numeric[column].mean()), float(numeric[column].std(ddof=0) or 1.0))
            for column in NUMERIC_FEATURES
        }
        return cls(categories=categories, numeric_medians=medians, numeric_scales=scales)

    def tree_input(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Categoricals with fixed levels (unknown and missing → ``__unknown__``), flags and
        numbers as floats (missing stays NaN: both boosters handle it)."""
        encoded = pd.DataFrame(index=frame.index)
        for column in CATEGORICAL_FEATURES:
            levels = [*self.categories[column], UNKNOWN]
            # A value outside the levels (or missing) becomes NaN here, then the unknown level.
            values = pd.Categorical(frame[column].astype("object"), categories=levels)
            encoded[column] = values.fillna(UNKNOWN)
        for column in (*BOOLEAN_FEATURES, *NUMERIC_FEATURES):
            encoded[column] = _as_float(frame[column])
        return encoded

    def catboost_input(self, frame: pd.DataFrame) -> pd.DataFrame:
        """CatBoost takes categorical columns as strings."""
        return self.catboost_from_tree(self.tree_input(frame))

    @staticmethod
    def catboost_from_tree(tree: pd.DataFrame) -> pd.DataFrame:
        encoded = tree.copy()
        for column in CATEGORICAL_FEATURES:
            encoded[column] = encoded[column].astype(str)
        return encoded

    def linear_input(self, frame: pd.DataFrame) -> np.ndarray:
        """The logistic model's design matrix (see :meth:`linear_frame`)."""
        return self.linear_matrix(self.tree_input(frame))

    def linear_columns(self) -> list[str]:
        """Names of the design matrix's columns: ``contract=Two year``, flags, numbers."""
        return [
            *(
                f"{column}{LEVEL_SEPARATOR}{level}"
                for column in CATEGORICAL_FEATURES
                for level in (*self.categories[column], UNKNOWN)
            ),
            *BOOLEAN_FEATURES,
            *NUMERIC_FEATURES,
        ]

    def linear_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One-hot categoricals (``contract=Two year``), flags, and standardized numbers with
        missing values at the training median. :func:`linear_feature` maps a column back."""
        return pd.DataFrame(
            self.linear_matrix(self.tree_input(frame)),
            columns=self.linear_columns(),
            index=frame.index,
        )

    def linear_matrix(self, tree: pd.DataFrame) -> np.ndarray:
        """:meth:`linear_frame` as a plain matrix, from an already encoded :meth:`tree_input`."""
        blocks = [
            np.eye(len(tree[column].cat.categories))[tree[column].cat.codes.to_numpy()]
            for column in CATEGORICAL_FEATURES
        ]
        blocks.append(np.nan_to_num(tree[list(BOOLEAN_FEATURES)].to_numpy(dtype=float)))
        numeric = tree[list(NUMERIC_FEATURES)].to_numpy(dtype=float)
        medians = np.array([self.numeric_medians[column] for column in NUMERIC_FEATURES])
        means, scales = np.array([self.numeric_scales[column] for column in NUMERIC_FEATURES]).T
        numeric = np.where(np.isnan(numeric), medians, numeric)
        blocks.append((numeric - means) / scales)
        return np.hstack(blocks)


def linear_feature(design_column: str) -> str:
    """The contract column a design-matrix column comes from (``contract=Two year`` →
    ``contract``)."""
    return design_column.split(LEVEL_SEPARATOR, 1)[0]


def _as_float(values: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return pd.Series(
            values.to_numpy(dtype=float, na_value=np.nan), index=values.index, dtype=float
        )
    return pd.to_numeric(
        values.astype("object").where(values.notna(), np.nan), errors="coerce"
    ).astype(float)


def feature_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The contract's columns with plain dtypes (text, boolean, float), whatever the source:
    Postgres hands numerics over as ``Decimal``, which models and MLflow schemas do not take."""
    typed = pd.DataFrame(index=frame.index)
    for column in CATEGORICAL_FEATURES:
        typed[column] = frame[column].astype("object").where(frame[column].notna(), None)
    for column in BOOLEAN_FEATURES:
        typed[column] = frame[column].astype("boolean")
    for column in NUMERIC_FEATURES:
        typed[column] = _as_float(frame[column])
    return typed
