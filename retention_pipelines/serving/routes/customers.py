"""``/v1/customers/{customer_id}/risk``: the latest nightly score, from the warehouse."""

from __future__ import annotations

import logging
from typing import Annotated

import psycopg
from fastapi import APIRouter, HTTPException, Path
from starlette.concurrency import run_in_threadpool

from retention_pipelines.core.explain import feature_of
from retention_pipelines.core.warehouse.customer_risk import StoredRisk, latest_risk
from retention_pipelines.serving.deps import ReadKey, State
from retention_pipelines.serving.schemas import CustomerRisk, Problem, Reason
from retention_pipelines.serving.state import ServingState

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/customers", tags=["customers"])

CustomerId = Annotated[
    str, Path(min_length=1, max_length=64, description="The customer's id, e.g. 7590-VHVEG.")
]


@router.get(
    "/{customer_id}/risk",
    response_model=CustomerRisk,
    responses={
        401: {"model": Problem},
        403: {"model": Problem},
        404: {"model": Problem, "description": "The customer was never scored."},
        429: {"model": Problem},
        503: {"model": Problem, "description": "The warehouse cannot be reached."},
    },
)
async def customer_risk(customer_id: CustomerId, state: State, key: ReadKey) -> CustomerRisk:
    """The customer's score of the latest night they were scored, with its reasons and the
    model version that made it."""
    stored = await run_in_threadpool(_read, state, customer_id)
    if stored is None:
        raise HTTPException(404, "no nightly score for this customer")
    return CustomerRisk(
        customer_id=stored.customer_id,
        snapshot_date=stored.snapshot_date,
        churn_probability=stored.churn_probability,
        risk_band=stored.risk_band,  # type: ignore[arg-type]
        reasons=[
            Reason(feature=feature_of(text) or "", reason=text, contribution=contribution)
            for text, contribution in stored.reasons
        ],
        model_name=stored.model_name,
        model_version=stored.model_version,
        scored_at=stored.scored_at,
    )


def _read(state: ServingState, customer_id: str) -> StoredRisk | None:
    try:
        with state.reader_pool.connection(timeout=5) as conn:
            return latest_risk(conn, customer_id)
    except psycopg.errors.UndefinedTable as error:
        raise HTTPException(
            503, "no nightly scores yet: the nightly job builds the analytics views"
        ) from error
    except Exception as error:
        logger.warning("cannot read a stored score: %s", str(error).strip().split("\n", 1)[0])
        raise HTTPException(503, "the warehouse cannot be reached; try again later") from error
