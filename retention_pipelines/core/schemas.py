"""Pandera models for the data boundaries, one per table, strict.

Values are converted explicitly before validation (see ``core.ingestion``), so a bad value
becomes a row error with a reason, never an exception.
"""

from __future__ import annotations

from typing import Any, Final

import pandas as pd
import pandera.pandas as pa
from pandera.typing import DataFrame, Series

# The header of a landing file, exactly as the Telco data has it.
TELCO_COLUMNS: Final[tuple[str, ...]] = (
    "customerID", "gender", "SeniorCitizen", "Partner", "Dependents", "tenure",
    "PhoneService", "MultipleLines", "InternetService", "OnlineSecurity", "OnlineBackup",
    "DeviceProtection", "TechSupport", "StreamingTV", "StreamingMovies", "Contract",
    "PaperlessBilling", "PaymentMethod", "MonthlyCharges", "TotalCharges", "Churn",
)  # fmt: skip

# Landing column -> column of raw.customer_snapshots.
RAW_COLUMN_NAMES: Final[dict[str, str]] = {
    "customerID": "customer_id",
    "gender": "gender",
    "SeniorCitizen": "senior_citizen",
    "Partner": "partner",
    "Dependents": "dependents",
    "tenure": "tenure",
    "PhoneService": "phone_service",
    "MultipleLines": "multiple_lines",
    "InternetService": "internet_service",
    "OnlineSecurity": "online_security",
    "OnlineBackup": "online_backup",
    "DeviceProtection": "device_protection",
    "TechSupport": "tech_support",
    "StreamingTV": "streaming_tv",
    "StreamingMovies": "streaming_movies",
    "Contract": "contract",
    "PaperlessBilling": "paperless_billing",
    "PaymentMethod": "payment_method",
    "MonthlyCharges": "monthly_charges",
    "TotalCharges": "total_charges",
    "Churn": "churn",
}
TELCO_NAME_OF: Final[dict[str, str]] = {raw: telco for telco, raw in RAW_COLUMN_NAMES.items()}

YES_NO: Final[tuple[str, ...]] = ("Yes", "No")
NO_PHONE: Final = "No phone service"
NO_INTERNET: Final = "No internet service"
ADD_ON_COLUMNS: Final[tuple[str, ...]] = (
    "online_security",
    "online_backup",
    "device_protection",
    "tech_support",
    "streaming_tv",
    "streaming_movies",
)

# Allowed values of every categorical column, in their canonical spelling.
CATEGORIES: Final[dict[str, tuple[str, ...]]] = {
    "gender": ("Female", "Male"),
    "partner": YES_NO,
    "dependents": YES_NO,
    "phone_service": YES_NO,
    "multiple_lines": (*YES_NO, NO_PHONE),
    "internet_service": ("DSL", "Fiber optic", "No"),
    **{column: (*YES_NO, NO_INTERNET) for column in ADD_ON_COLUMNS},
    "contract": ("Month-to-month", "One year", "Two year"),
    "paperless_billing": YES_NO,
    "payment_method": (
        "Electronic check",
        "Mailed check",
        "Bank transfer (automatic)",
        "Credit card (automatic)",
    ),
    "churn": YES_NO,
}

CUSTOMER_ID_PATTERN: Final = r"^\d{4}-[A-Z]{5}$"
MAX_TENURE_MONTHS: Final = 120
# Inclusive ranges of the numeric columns; the charges' upper bounds are the largest values
# their warehouse columns (numeric(10,2), numeric(12,2)) hold.
NUMBER_BOUNDS: Final[dict[str, tuple[float, float]]] = {
    "senior_citizen": (0, 1),
    "tenure": (0, MAX_TENURE_MONTHS),
    "monthly_charges": (0, 99_999_999.99),
    "total_charges": (0, 9_999_999_999.99),
}


def _bounded(column: str) -> pa.Field:  # type: ignore[valid-type]
    low, high = NUMBER_BOUNDS[column]
    return pa.Field(ge=low, le=high)


def _category(column: str, *, nullable: bool = False) -> pa.Field:  # type: ignore[valid-type]
    return pa.Field(isin=list(CATEGORIES[column]), nullable=nullable)


# The rules across columns, written once for a frame (the schema's checks, a Series of
# booleans) and for one record (a dict of values, a boolean): the API's one-record path
# (``core.records``) applies the same functions.
def phone_lines_agree(row: Any) -> Any:
    """MultipleLines is 'No phone service' exactly when PhoneService is No."""
    return (row["multiple_lines"] == NO_PHONE) == (row["phone_service"] == "No")


def internet_add_ons_agree(row: Any) -> Any:
    """The add-on services are 'No internet service' exactly when there is no internet."""
    no_internet = row["internet_service"] == "No"
    agree: Any = True
    for column in ADD_ON_COLUMNS:
        agree = agree & ((row[column] == NO_INTERNET) == no_internet)
    return agree


ROW_RULES: Final = (phone_lines_agree, internet_add_ons_agree)


class CustomerSnapshotSchema(pa.DataFrameModel):
    """A valid row of ``raw.customer_snapshots`` (before the partition columns are added)."""

    customer_id: Series[pd.StringDtype] = pa.Field(str_matches=CUSTOMER_ID_PATTERN)
    gender: Series[pd.StringDtype] = _category("gender")
    senior_citizen: Series[pd.Int64Dtype] = pa.Field(isin=[0, 1])
    partner: Series[pd.StringDtype] = _category("partner")
    dependents: Series[pd.StringDtype] = _category("dependents")
    tenure: Series[pd.Int64Dtype] = _bounded("tenure")
    phone_service: Series[pd.StringDtype] = _category("phone_service")
    multiple_lines: Series[pd.StringDtype] = _category("multiple_lines")
    internet_service: Series[pd.StringDtype] = _category("internet_service")
    online_security: Series[pd.StringDtype] = _category("online_security")
    online_backup: Series[pd.StringDtype] = _category("online_backup")
    device_protection: Series[pd.StringDtype] = _category("device_protection")
    tech_support: Series[pd.StringDtype] = _category("tech_support")
    streaming_tv: Series[pd.StringDtype] = _category("streaming_tv")
    streaming_movies: Series[pd.StringDtype] = _category("streaming_movies")
    contract: Series[pd.StringDtype] = _category("contract")
    paperless_billing: Series[pd.StringDtype] = _category("paperless_billing")
    payment_method: Series[pd.StringDtype] = _category("payment_method")
    monthly_charges: Series[float] = _bounded("monthly_charges")
    total_charges: Series[float] = _bounded("total_charges")
    churn: Series[pd.StringDtype] = _category("churn", nullable=True)

    class Config:
        strict = True
        coerce = False

    @pa.dataframe_check(name="MultipleLines is 'No phone service' exactly when PhoneService is No")
    def phone_lines_agree(cls, frame: pd.DataFrame) -> pd.Series:  # noqa: N805
        return phone_lines_agree(frame)

    @pa.dataframe_check(name="add-on services are 'No internet service' exactly when there is none")
    def internet_add_ons_agree(cls, frame: pd.DataFrame) -> pd.Series:  # noqa: N805
        return internet_add_ons_agree(frame)


CustomerSnapshots = DataFrame[CustomerSnapshotSchema]
