"""How a row of features becomes model input: category levels, flags and numbers.

The encoder is fitted on training data and saved with the model as data (levels, medians,
scales), so a model loads and encodes the same way whatever the code around it becomes. A
category never seen in training, or a missing one, maps to the explicit ``__unknown__`` level
instead of failing at predict time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

UNKNOWN: Final = "__unknown__"
LEVEL_SEPARATOR: Final = "="


@dataclass
class FeatureEncoder:
    """The input columns of one model, in order (categories, flags, numbers), and what was
    learned about them from its training data."""

    categories: dict[str, list[str]] = field(default_factory=dict)
    booleans: tuple[str, ...] = ()
    numeric_medians: dict[str, float] = field(default_factory=dict)
    numeric_scales: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        *,
        categorical: Sequence[str],
        boolean: Sequence[str],
        numeric: Sequence[str],
    ) -> FeatureEncoder:
        categories = {
            column: sorted(str(value) for value in frame[column].dropna().unique())
            for column in categorical
        }
        numbers = frame[list(numeric)].apply(as_float)
        medians = {column: float(numbers[column].median()) for column in numeric}
        scales = {
            column: (float(numbers[column].mean()), float(numbers[column].std(ddof=0) or 1.0))
            for column in numeric
        }
        return cls(categories, tuple(boolean), medians, scales)

    @property
    def categorical(self) -> tuple[str, ...]:
        return tuple(self.categories)

    @property
    def numeric(self) -> tuple[str, ...]:
        return tuple(self.numeric_medians)

    @property
    def columns(self) -> tuple[str, ...]:
        """The model's input columns, in the order of its contributions."""
        return (*self.categorical, *self.booleans, *self.numeric)

    def missing_columns(self, frame: pd.DataFrame) -> list[str]:
        return [column for column in self.columns if column not in frame.columns]

    def tree_input(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Categoricals with fixed levels (unknown and missing → ``__unknown__``), flags and
        numbers as floats (missing stays NaN: both boosters handle it)."""
        encoded = pd.DataFrame(index=frame.index)
        for column, levels in self.categories.items():
            # A value outside the levels (or missing) becomes NaN here, then the unknown level.
            values = pd.Categorical(frame[column].astype("object"), categories=[*levels, UNKNOWN])
            encoded[column] = values.fillna(UNKNOWN)
        for column in (*self.booleans, *self.numeric):
            encoded[column] = as_float(frame[column])
        return encoded

    def catboost_from_tree(self, tree: pd.DataFrame) -> pd.DataFrame:
        """CatBoost takes categorical columns as strings."""
        encoded = tree.copy()
        for column in self.categorical:
            encoded[column] = encoded[column].astype(str)
        return encoded

    def linear_columns(self) -> list[str]:
        """Names of the logistic model's design columns: ``contract=Two year``, flags, numbers."""
        return [
            *(
                f"{column}{LEVEL_SEPARATOR}{level}"
                for column, levels in self.categories.items()
                for level in (*levels, UNKNOWN)
            ),
            *self.booleans,
            *self.numeric,
        ]

    def linear_matrix(self, tree: pd.DataFrame) -> np.ndarray:
        """The logistic model's design matrix from an encoded :meth:`tree_input`: one-hot
        categoricals, flags, and standardized numbers with missing values at the median."""
        blocks = [
            np.eye(len(tree[column].cat.categories))[tree[column].cat.codes.to_numpy()]
            for column in self.categorical
        ]
        blocks.append(np.nan_to_num(tree[list(self.booleans)].to_numpy(dtype=float)))
        numeric = tree[list(self.numeric)].to_numpy(dtype=float)
        medians = np.array([self.numeric_medians[column] for column in self.numeric])
        means, scales = np.array([self.numeric_scales[column] for column in self.numeric]).T
        numeric = np.where(np.isnan(numeric), medians, numeric)
        blocks.append((numeric - means) / scales)
        return np.hstack(blocks)

    def linear_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """:meth:`linear_matrix` of raw rows, with its column names."""
        return pd.DataFrame(
            self.linear_matrix(self.tree_input(frame)),
            columns=self.linear_columns(),
            index=frame.index,
        )

    def design_grouping(self) -> np.ndarray:
        """A (design columns x input columns) 0/1 matrix summing one-hot levels back to their
        column, so the linear part's contributions are one per input column."""
        position = {column: index for index, column in enumerate(self.columns)}
        names = self.linear_columns()
        grouping = np.zeros((len(names), len(position)))
        for row, name in enumerate(names):
            grouping[row, position[name.split(LEVEL_SEPARATOR, 1)[0]]] = 1.0
        return grouping

    def to_dict(self) -> dict[str, Any]:
        return {
            "categories": self.categories,
            "booleans": list(self.booleans),
            "numeric_medians": self.numeric_medians,
            "numeric_scales": {name: list(scale) for name, scale in self.numeric_scales.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureEncoder:
        return cls(
            categories={name: list(levels) for name, levels in data["categories"].items()},
            booleans=tuple(data["booleans"]),
            numeric_medians={name: float(value) for name, value in data["numeric_medians"].items()},
            numeric_scales={
                name: (float(mean), float(scale))
                for name, (mean, scale) in data["numeric_scales"].items()
            },
        )


def as_float(values: pd.Series) -> pd.Series:
    """Numbers, flags and ``Decimal`` values (what Postgres numerics arrive as) as floats."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return pd.Series(
            values.to_numpy(dtype=float, na_value=np.nan), index=values.index, dtype=float
        )
    return pd.to_numeric(
        values.astype("object").where(values.notna(), np.nan), errors="coerce"
    ).astype(float)
