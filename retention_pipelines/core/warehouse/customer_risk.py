"""A customer's latest nightly score, as business users see it: read through the analytics
view with the reader role's connection, never from the platform's own tables."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import psycopg

from retention_pipelines.core.warehouse.scores import REASONS
from retention_pipelines.core.warehouse.tables import CUSTOMER_SCORE_HISTORY


@dataclass(frozen=True)
class StoredRisk:
    customer_id: str
    snapshot_date: date
    churn_probability: float
    risk_band: str
    reasons: list[tuple[str, float]]  # text, contribution
    model_name: str
    model_version: str
    scored_at: datetime


_REASON_COLUMNS = ", ".join(
    f"top_reason_{rank}, top_reason_{rank}_contribution" for rank in range(1, REASONS + 1)
)
_LATEST = (
    "select customer_id, snapshot_date, churn_probability, risk_band, model_name,"
    f" model_version, scored_at, {_REASON_COLUMNS} from {CUSTOMER_SCORE_HISTORY}"
    " where customer_id = %s order by snapshot_date desc limit 1"
)


def latest_risk(conn: psycopg.Connection, customer_id: str) -> StoredRisk | None:
    """The customer's score of their latest scored date, or None when never scored."""
    row = conn.execute(_LATEST, (customer_id,)).fetchone()
    if row is None:
        return None
    reasons = row[7:]
    return StoredRisk(
        customer_id=row[0],
        snapshot_date=row[1],
        churn_probability=float(row[2]),
        risk_band=row[3],
        reasons=[(reasons[i], float(reasons[i + 1])) for i in range(0, len(reasons), 2)],
        model_name=row[4],
        model_version=row[5],
        scored_at=row[6],
    )
