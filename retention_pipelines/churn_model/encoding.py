"""How a row of features becomes model input: category levels, flags and numbers.

The encoder is fitted on training data and saved with the model as data (levels, medians,
scales), so a model loads and encodes the same way whatever the code around it becomes. A
category never seen in training, or a missing one, maps to the explicit ``__unknown__`` level
instead of failing at predict time.

Rows arrive as a DataFrame (training, nightly scoring) or as plain columns, a mapping of
column name to a one-dimensional array (the API, one customer at a time). Either way they are
encoded once, with numpy, into :class:`EncodedRows`: category codes and floats, from which
both boosters' inputs and the logistic design matrix are built. Per-column pandas work
(a ``Categorical``, a ``Series`` per column) costs more than predicting one row does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final, TypeAlias

import numpy as np
import pandas as pd

UNKNOWN: Final = "__unknown__"
LEVEL_SEPARATOR: Final = "="
# Up to this many rows, a Python loop over the values (a dict lookup per category, a float()
# per flag) is faster than pandas' vectorised pass (``Index.get_indexer``, what
# ``pd.Categorical`` itself uses; ``pd.to_numeric``), whose fixed cost is tens of microseconds
# per column: more than scoring one customer's trees.
_PYTHON_LOOP_ROWS: Final = 512
# Objects a float is taken of as it is (the others, such as Decimal or text, go through
# ``pd.to_numeric``); ``None`` is missing.
_PLAIN_NUMBERS: Final = (bool, int, float, np.bool_, np.integer, np.floating)

FeatureColumns: TypeAlias = pd.DataFrame | Mapping[str, Any]
"""Rows of the model's input columns: a DataFrame, or a mapping of column name to a 1-D array
(or list) of values, all of one length. Categories are strings (``None`` when missing), flags
booleans (``None`` when missing), numbers floats (NaN when missing)."""


@dataclass(frozen=True)
class EncodedRows:
    """Rows encoded once for both model parts, row-aligned with the input.

    ``codes``: per categorical column, the value's position in ``[*levels, UNKNOWN]`` (a value
    outside the levels, or a missing one, is the last). ``values``: flags then numbers, as
    floats, NaN where missing (both boosters take NaN as missing; the logistic part fills it)."""

    codes: np.ndarray  # rows x categorical columns, int64
    values: np.ndarray  # rows x (flags + numbers), float64

    def __len__(self) -> int:
        return int(self.codes.shape[0])


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

    @property
    def floats(self) -> tuple[str, ...]:
        """The columns encoded as floats: flags, then numbers."""
        return (*self.booleans, *self.numeric)

    def missing_columns(self, rows: FeatureColumns) -> list[str]:
        # ``in`` reads a DataFrame's columns and a mapping's keys alike.
        return [column for column in self.columns if column not in rows]

    def encode(self, rows: FeatureColumns) -> EncodedRows:
        """Category codes and floats of ``rows``, with numpy: the encoding every prediction
        reads (see :class:`EncodedRows`)."""
        count = _row_count(rows, self.columns)
        codes = np.empty((count, len(self.categories)), dtype=np.int64)
        for position, column in enumerate(self.categories):
            codes[:, position] = self.category_codes(column, rows[column])
        values = np.empty((count, len(self.floats)), dtype=float)
        for position, column in enumerate(self.floats):
            values[:, position] = float_values(rows[column])
        return EncodedRows(codes=codes, values=values)

    def category_codes(self, column: str, values: Any) -> np.ndarray:
        """Each value's position in ``[*levels, UNKNOWN]`` of ``column``; a value outside the
        levels, or a missing one, gets the position of ``UNKNOWN``. Values match levels as
        ``pd.Categorical`` matches them: by equality, so ``1`` is not the level ``"1"``."""
        objects = values.to_numpy(dtype=object) if isinstance(values, pd.Series) else values
        objects = np.asarray(objects)
        unknown = len(self.categories[column])
        if objects.size <= _PYTHON_LOOP_ROWS:
            lookup = self._level_codes[column]
            return np.array([lookup.get(value, unknown) for value in objects], dtype=np.int64)
        codes = self._level_index[column].get_indexer(objects)
        return np.where(codes < 0, unknown, codes).astype(np.int64)

    def tree_input(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Categoricals with fixed levels (unknown and missing → ``__unknown__``), flags and
        numbers as floats (missing stays NaN: both boosters handle it): the frame boosters
        are trained on, encoded as :meth:`encode` encodes."""
        encoded = self.encode(frame)
        tree = pd.DataFrame(index=frame.index)
        for position, (column, levels) in enumerate(self.categories.items()):
            tree[column] = pd.Categorical.from_codes(
                encoded.codes[:, position], categories=[*levels, UNKNOWN]
            )
        for position, column in enumerate(self.floats):
            tree[column] = encoded.values[:, position]
        return tree

    def level_names(self, column: str) -> np.ndarray:
        """``[*levels, UNKNOWN]`` of ``column`` as an object array, indexed by its codes."""
        return self._level_names[column]

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
        """The logistic model's design matrix from an encoded :meth:`tree_input` (see
        :meth:`design_matrix`)."""
        codes = np.column_stack(
            [tree[column].cat.codes.to_numpy() for column in self.categorical]
            or [np.empty((len(tree), 0))]
        ).astype(np.int64)
        values = tree[list(self.floats)].to_numpy(dtype=float)
        return self.design_matrix(EncodedRows(codes=codes, values=values))

    def design_matrix(self, encoded: EncodedRows) -> np.ndarray:
        """The logistic model's design matrix: one-hot categoricals (unknown is a level of
        its own), flags with missing as 0, and standardized numbers with missing values at
        the median."""
        blocks = [
            np.eye(len(levels) + 1)[encoded.codes[:, position]]
            for position, levels in enumerate(self.categories.values())
        ]
        flags = len(self.booleans)
        blocks.append(np.nan_to_num(encoded.values[:, :flags]))
        numeric = encoded.values[:, flags:]
        medians, means, scales = self._numeric_statistics
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
        column, so the linear part's contributions are one per input column. Computed once
        per encoder and read-only: every prediction reads it."""
        return self._design_grouping

    # Derived once from the fitted data, which does not change after fitting or loading.

    @cached_property
    def _design_grouping(self) -> np.ndarray:
        position = {column: index for index, column in enumerate(self.columns)}
        names = self.linear_columns()
        grouping = np.zeros((len(names), len(position)))
        for row, name in enumerate(names):
            grouping[row, position[name.split(LEVEL_SEPARATOR, 1)[0]]] = 1.0
        grouping.setflags(write=False)
        return grouping

    @cached_property
    def _numeric_statistics(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Medians, means and scales of the numbers, in column order."""
        medians = np.array([self.numeric_medians[column] for column in self.numeric])
        means, scales = (
            np.array([self.numeric_scales[column] for column in self.numeric]).reshape(-1, 2).T
        )
        return medians, means, scales

    @cached_property
    def _level_codes(self) -> dict[str, dict[Any, int]]:
        return {
            column: {level: code for code, level in enumerate((*levels, UNKNOWN))}
            for column, levels in self.categories.items()
        }

    @cached_property
    def _level_index(self) -> dict[str, pd.Index]:
        return {
            column: pd.Index([*levels, UNKNOWN], dtype=object)
            for column, levels in self.categories.items()
        }

    @cached_property
    def _level_names(self) -> dict[str, np.ndarray]:
        return {
            column: np.array([*levels, UNKNOWN], dtype=object)
            for column, levels in self.categories.items()
        }

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
    return pd.Series(float_values(values), index=values.index, dtype=float)


def float_values(values: Any) -> np.ndarray:
    """:func:`as_float` of a Series, an array or a list, as a float array: numbers and flags
    as they are, missing values (``None``, NaN, ``pd.NA``) as NaN, other objects (``Decimal``,
    numeric text) converted as ``pd.to_numeric`` converts them, anything else NaN."""
    if isinstance(values, pd.Series):
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            return values.to_numpy(dtype=float, na_value=np.nan)
        objects = values.to_numpy(dtype=object)
    else:
        array = np.asarray(values)
        if array.dtype.kind in "biuf":
            return array.astype(float)
        objects = array.astype(object)
    if objects.size <= _PYTHON_LOOP_ROWS and all(
        value is None or isinstance(value, _PLAIN_NUMBERS) for value in objects
    ):
        return np.array([np.nan if value is None else value for value in objects], dtype=float)
    present = np.where(pd.isna(objects), np.nan, objects)
    return np.asarray(pd.to_numeric(present, errors="coerce"), dtype=float)


def _row_count(rows: FeatureColumns, columns: Sequence[str]) -> int:
    """The number of rows; plain columns must be one-dimensional and of one length."""
    if isinstance(rows, pd.DataFrame):
        return len(rows)
    lengths = {column: np.shape(rows[column]) for column in columns}
    shapes = set(lengths.values())
    if len(shapes) != 1 or len(next(iter(shapes), (0,))) != 1:
        raise ValueError(
            "input columns must be one-dimensional arrays of one length, got shapes "
            f"{ {column: shape for column, shape in lengths.items()} }"
        )
    return int(next(iter(shapes))[0])
