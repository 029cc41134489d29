"""``ml.prediction_log``: every answer of the prediction API, copied in batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

import psycopg
from psycopg import sql

from retention_pipelines.core.warehouse.streams import table_name
from retention_pipelines.core.warehouse.tables import PREDICTION_LOG

PREDICTION_LOG_COLUMNS: Final[tuple[str, ...]] = (
    "request_id",
    "row_index",
    "predicted_at",
    "customer_id",
    "variant",
    "served",
    "model_name",
    "model_version",
    "churn_probability",
    "risk_band",
    "latency_ms",
    "api_key_id",
)


@dataclass(frozen=True)
class LoggedPrediction:
    """One row of the log, in the table's column order."""

    request_id: UUID
    row_index: int
    predicted_at: datetime
    customer_id: str
    variant: str
    served: bool
    model_name: str
    model_version: str
    churn_probability: float
    risk_band: str
    latency_ms: float
    api_key_id: int | None


def copy_predictions(conn: psycopg.Connection, rows: Sequence[LoggedPrediction]) -> int:
    """COPY ``rows`` into the log in the connection's transaction; return how many."""
    statement = sql.SQL("copy {table} ({columns}) from stdin").format(
        table=table_name(PREDICTION_LOG),
        columns=sql.SQL(", ").join(map(sql.Identifier, PREDICTION_LOG_COLUMNS)),
    )
    with conn.cursor().copy(statement) as copy:
        for row in rows:
            copy.write_row(astuple(row))
    return len(rows)
