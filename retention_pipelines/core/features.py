"""The feature contract: the columns of ``features.customer_features`` (its dbt contract) that
the model reads, grouped by kind, and the frame conversion every reader of the table shares;
and ``customer_features``, the same contract computed in Python for live predictions, held to
the dbt model by a parity test.

How a row becomes model input is the model's own business (``retention_pipelines.churn_model``):
it is fitted on training data and saved with the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from retention_pipelines.churn_model.encoding import FeatureEncoder as ModelEncoder
from retention_pipelines.churn_model.encoding import as_float
from retention_pipelines.churn_model.legacy import FeatureEncoder  # noqa: F401  (format-0 pickles)
from retention_pipelines.core.schemas import ADD_ON_COLUMNS

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


# tenure_band: the highest month of each band, and the band of longer tenures.
TENURE_BANDS: Final[tuple[tuple[int, str], ...]] = (
    (6, "0-6"),
    (12, "7-12"),
    (24, "13-24"),
    (48, "25-48"),
)
LONGEST_TENURE_BAND: Final = "49+"
CONTRACT_LENGTH_MONTHS: Final[dict[str, int]] = {
    "Month-to-month": 1,
    "One year": 12,
    "Two year": 24,
}
PROTECTION_SERVICES: Final[tuple[str, ...]] = ADD_ON_COLUMNS[:4]
# The raw table's text columns the features read: the categorical ones as they are.
_CATEGORICAL_INPUTS: Final = tuple(c for c in CATEGORICAL_FEATURES if c != "tenure_band")
_TEXT_INPUTS: Final = (
    *_CATEGORICAL_INPUTS,
    "partner",
    "dependents",
    "phone_service",
    "paperless_billing",
)


def customer_features(snapshots: pd.DataFrame) -> pd.DataFrame:
    """The feature contract of validated customers (the raw table's columns, as
    ``validate_records`` or ingestion types them), computed in Python for live predictions:
    ``customer_id`` and ``FEATURE_COLUMNS``, typed as ``feature_frame(..., keep_integers=True)``
    types them, in the input's index. :func:`feature_columns` on a frame."""
    columns = feature_columns({column: snapshots[column] for column in _INPUTS})
    typed = feature_frame(pd.DataFrame(columns, index=snapshots.index), keep_integers=True)
    typed.insert(0, "customer_id", snapshots["customer_id"].astype("object"))
    return typed


def feature_columns(snapshots: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The feature contract of validated customers, column by column: ``customer_id`` and
    ``FEATURE_COLUMNS`` as numpy arrays (text as objects, flags as booleans, numbers as
    integers or floats), from the raw table's columns as arrays, lists or Series. Plain numpy,
    so one customer (the API's request) costs microseconds and a million stay vectorized.

    The dbt models ``stg_customers`` and ``customer_features`` compute the same contract in
    Postgres for the nightly scores; they are its other half, and the parity test
    (``retention_pipelines_tests/warehouse/test_feature_parity.py``) holds the two together:
    a change to one that is not made to the other fails it. Amounts are computed as Postgres
    does, in whole cents: a charge is stored as its decimal text rounded half away from zero
    to cents, and ``numeric(12, 2)`` casts round half away from zero, so the averages are
    integer divisions and exact, where floats would differ by a cent now and then.
    """
    tenure = _whole_numbers(snapshots["tenure"], "tenure")
    monthly = _cents(snapshots["monthly_charges"], "monthly_charges")
    # stg_customers: a new customer's blank TotalCharges means 0.
    charges = _floats(snapshots["total_charges"])
    total = _cents(np.where(np.isnan(charges) & (tenure == 0), 0.0, charges), "total_charges")
    average = np.where(tenure == 0, monthly, _divide_rounding_half_away(total, tenure))
    text = {column: _objects(snapshots[column]) for column in _TEXT_INPUTS}
    internet = text["internet_service"]
    return {
        "customer_id": _objects(snapshots["customer_id"]),
        **{column: text[column] for column in _CATEGORICAL_INPUTS},
        "tenure_band": _tenure_bands(tenure),
        "is_senior_citizen": _whole_numbers(snapshots["senior_citizen"], "senior_citizen") == 1,
        "has_partner": _yes_no(text["partner"]),
        "has_dependents": _yes_no(text["dependents"]),
        "has_phone_service": _yes_no(text["phone_service"]),
        "is_paperless_billing": _yes_no(text["paperless_billing"]),
        "has_internet": internet != "No",
        "has_fiber_optic": internet == "Fiber optic",
        "has_dsl": internet == "DSL",
        "is_automatic_payment": np.array(
            [value.endswith("(automatic)") for value in text["payment_method"]], dtype=bool
        ),
        "streaming_bundle": _all_yes(text, ("streaming_tv", "streaming_movies")),
        "protection_bundle": _all_yes(text, PROTECTION_SERVICES),
        "tenure_months": tenure,
        "monthly_charges": monthly / 100,
        "total_charges": total / 100,
        "avg_monthly_spend": average / 100,
        "charge_increase": (monthly - average) / 100,
        "add_on_service_count": sum(
            (text[column] == "Yes").astype(np.int64) for column in ADD_ON_COLUMNS
        ),
        "contract_length_months": np.array(
            [CONTRACT_LENGTH_MONTHS[value] for value in text["contract"]], dtype=np.int64
        ),
    }


_INPUTS: Final = (
    "customer_id",
    "senior_citizen",
    "tenure",
    "monthly_charges",
    "total_charges",
    *_TEXT_INPUTS,
)


def _objects(values: Any) -> npt.NDArray[np.object_]:
    """Text values as an object array, missing ones None."""
    if isinstance(values, pd.Series):
        return values.to_numpy(dtype=object, na_value=None)
    return np.asarray(values, dtype=object)


def _floats(values: Any) -> npt.NDArray[np.float64]:
    if isinstance(values, pd.Series):
        return as_float(values).to_numpy()
    return np.array([np.nan if value is None else value for value in values], dtype=float)


def _whole_numbers(values: Any, column: str) -> npt.NDArray[np.int64]:
    numbers = _floats(values)
    if np.isnan(numbers).any():
        raise ValueError(f"{column} is missing in a row: features are computed from valid rows")
    return numbers.astype(np.int64)


def _cents(values: Any, column: str) -> npt.NDArray[np.int64]:
    """Amounts in whole cents as Postgres stores them: the float's shortest decimal text (what
    ingestion's COPY writes) rounded half away from zero. Scaling the float is exact enough
    except within a hair of a half cent; those few are rounded from their decimal text."""
    amounts = values if isinstance(values, np.ndarray) else _floats(values)
    if np.isnan(amounts).any():
        raise ValueError(f"{column} is missing in a row: features are computed from valid rows")
    magnitude = np.abs(amounts * 100)
    cents = np.floor(magnitude + 0.5)
    near_half = np.abs(magnitude - np.floor(magnitude) - 0.5) <= 1e-9 * np.maximum(magnitude, 1)
    for position in np.flatnonzero(near_half):
        text = float.__repr__(float(amounts[position]))
        cents[position] = float(abs(Decimal(text).scaleb(2).quantize(Decimal(1), ROUND_HALF_UP)))
    return (np.sign(amounts) * cents).astype(np.int64)


def _divide_rounding_half_away(
    cents: npt.NDArray[np.int64], months: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """``cast(cents / months as numeric(12, 2))`` in cents, exactly (months 0 give 0)."""
    divisor = np.maximum(months, 1)
    return np.sign(cents) * ((2 * np.abs(cents) + divisor) // (2 * divisor))


def _tenure_bands(tenure: npt.NDArray[np.int64]) -> npt.NDArray[np.object_]:
    conditions = [tenure <= highest for highest, _ in TENURE_BANDS]
    names = [name for _, name in TENURE_BANDS]
    return np.select(conditions, names, default=LONGEST_TENURE_BAND).astype(object)


def _yes_no(values: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    """``yes_no_to_boolean``: 'Yes' true, 'No' false, anything else null."""
    return np.array([_YES_NO.get(value) for value in values], dtype=object)


_YES_NO: Final = {"Yes": True, "No": False}


def _all_yes(
    text: dict[str, npt.NDArray[np.object_]], columns: tuple[str, ...]
) -> npt.NDArray[np.bool_]:
    """SQL's ``a = 'Yes' and b = 'Yes'`` over values that are never null (valid rows)."""
    result = np.ones(len(text[columns[0]]), dtype=bool)
    for column in columns:
        result &= text[column] == "Yes"
    return result
