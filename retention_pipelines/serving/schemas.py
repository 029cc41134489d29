"""What the API takes and gives, as pydantic models: the OpenAPI document is built from them.

A customer is sent in the landing file's shape (the Telco columns, ``Churn`` absent). Values
may be strings or JSON numbers, as a CSV cell would hold them; whether they are valid is
decided by the ingestion's own rules (``core.ingestion``), so an API client and a landing
file are told the same thing about the same value.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

Cell = Annotated[
    StrictStr | StrictInt | StrictFloat | None,
    Field(description="The value as the landing file holds it: text or a number."),
]

_EXAMPLE: dict[str, Any] = {
    "customerID": "7590-VHVEG",
    "gender": "Female",
    "SeniorCitizen": 0,
    "Partner": "Yes",
    "Dependents": "No",
    "tenure": 1,
    "PhoneService": "No",
    "MultipleLines": "No phone service",
    "InternetService": "DSL",
    "OnlineSecurity": "No",
    "OnlineBackup": "Yes",
    "DeviceProtection": "No",
    "TechSupport": "No",
    "StreamingTV": "No",
    "StreamingMovies": "No",
    "Contract": "Month-to-month",
    "PaperlessBilling": "Yes",
    "PaymentMethod": "Electronic check",
    "MonthlyCharges": 29.85,
    "TotalCharges": 29.85,
}


class Customer(BaseModel):
    """One customer's current attributes, in the landing file's columns."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]})

    customerID: Cell  # noqa: N815  (the landing file's column names)
    gender: Cell
    SeniorCitizen: Cell
    Partner: Cell
    Dependents: Cell
    tenure: Cell
    PhoneService: Cell
    MultipleLines: Cell
    InternetService: Cell
    OnlineSecurity: Cell
    OnlineBackup: Cell
    DeviceProtection: Cell
    TechSupport: Cell
    StreamingTV: Cell
    StreamingMovies: Cell
    Contract: Cell
    PaperlessBilling: Cell
    PaymentMethod: Cell
    MonthlyCharges: Cell
    TotalCharges: Cell


class BatchRequest(BaseModel):
    """Customers to score at once. Each is checked on its own: a bad one is reported by its
    position and the others are scored."""

    model_config = ConfigDict(extra="forbid")

    customers: list[dict[str, Any]] = Field(
        min_length=1,
        description=(
            "Customers shaped as /v1/predict's body (RETENTION_API_MAX_BATCH at most); an "
            "object of another shape is reported by its position, like a rule broken."
        ),
        json_schema_extra={
            "items": {"anyOf": [{"$ref": "#/components/schemas/Customer"}, {"type": "object"}]}
        },
    )


class Reason(BaseModel):
    feature: str = Field(description="The feature-contract column, e.g. contract.")
    reason: str = Field(description='The feature and value for people: "Contract: Month-to-month".')
    contribution: float = Field(
        description="Signed contribution to the model's log-odds; positive pushes risk up."
    )


Variant = Literal["champion", "challenger"]
Band = Literal["low", "medium", "high"]


class Prediction(BaseModel):
    customer_id: str
    churn_probability: float = Field(ge=0, le=1, description="Calibrated probability of churn.")
    risk_band: Band
    reasons: list[Reason] = Field(description="The three features that push risk up most.")
    model_name: str
    model_version: str
    variant: Variant = Field(description="Which alias answered: champion, or challenger (A/B).")


class PredictResponse(Prediction):
    request_id: str


class RowError(BaseModel):
    index: int = Field(description="Position of the customer in the request's list.")
    customer_id: str | None
    errors: list[ErrorDetail]


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class BatchPrediction(Prediction):
    index: int = Field(description="Position of the customer in the request's list.")


class BatchResponse(BaseModel):
    request_id: str
    predictions: list[BatchPrediction]
    errors: list[RowError]


class CustomerRisk(BaseModel):
    """The latest nightly score of a customer, as analytics.customer_score_history holds it."""

    customer_id: str
    snapshot_date: date
    churn_probability: float
    risk_band: Band
    reasons: list[Reason]
    model_name: str
    model_version: str
    scored_at: datetime


class Problem(BaseModel):
    """Every error response: what went wrong, in one sentence or a list of field errors."""

    detail: str | list[ErrorDetail]
    request_id: str | None = None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    uptime_s: float
    database: Literal["ok", "unreachable"]
    models: dict[str, ModelStatus]
    prediction_log: LogStatus


class ModelStatus(BaseModel):
    model_name: str
    model_version: str
    loaded_at: datetime


class LogStatus(BaseModel):
    pending: int
    written: int
    dropped: int


RowError.model_rebuild()
Health.model_rebuild()
