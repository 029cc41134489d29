"""``/v1/predict`` and ``/v1/predict/batch``: customers scored live with reasons."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any, Final

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from retention_pipelines.serving.deps import PredictKey, State
from retention_pipelines.serving.predictor import (
    Answer,
    FieldError,
    NoModelError,
    Outcome,
    log_rows,
)
from retention_pipelines.serving.schemas import (
    BatchPrediction,
    BatchRequest,
    BatchResponse,
    Customer,
    ErrorDetail,
    PredictResponse,
    Problem,
    RowError,
)
from retention_pipelines.serving.state import ServingState

router = APIRouter(prefix="/v1", tags=["predictions"])
MODEL_VERSION_HEADER: Final = "X-Model-Version"
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "The body cannot be read as text (not UTF-8)."},
    401: {"model": Problem, "description": "No API key, or an unknown or revoked one."},
    403: {"model": Problem, "description": "The key may not request predictions."},
    413: {"model": Problem, "description": "The body is over RETENTION_API_MAX_BODY_BYTES."},
    422: {"model": Problem, "description": "A value breaks an ingestion rule (field and rule)."},
    429: {"model": Problem, "description": "Over the key's rate limit; see Retry-After."},
    503: {"model": Problem, "description": "No champion model is loaded yet."},
}


@router.post("/predict", response_model=PredictResponse, responses=_ERRORS)
async def predict(
    customer: Customer, request: Request, state: State, key: PredictKey
) -> JSONResponse:
    """One customer's churn probability, risk band and three reasons, now."""
    started = time.perf_counter()
    outcome = _predict(state, [customer.model_dump()])
    if outcome.errors:
        raise HTTPException(422, [_detail(error, "body") for error in outcome.errors[0]])
    [answer] = outcome.answers
    request_id = request.state.request_id
    _record(state, request_id, outcome, started, key.key_id)
    # Built from plain values, not validated again against the response model (the OpenAPI
    # document still says what it is): on the hot path that saves a good share of the time.
    body = {**_plain_prediction(answer), "request_id": request_id}
    return JSONResponse(body, headers={MODEL_VERSION_HEADER: answer.model.version})


@router.post("/predict/batch", response_model=BatchResponse, responses=_ERRORS)
async def predict_batch(
    batch: BatchRequest, request: Request, response: Response, state: State, key: PredictKey
) -> BatchResponse:
    """Many customers at once (RETENTION_API_MAX_BATCH at most), scored together. A customer
    that breaks a rule is reported by its position; the others are answered."""
    started = time.perf_counter()
    limit = state.settings.api_max_batch
    if len(batch.customers) > limit:
        raise HTTPException(
            422, f"a batch holds at most {limit:,} customers; this one has {len(batch.customers):,}"
        )
    typed, shape_errors = _typed_records(batch.customers)
    outcome = _predict(state, [record for _, record in typed], batch=True)
    positions = [position for position, _ in typed]
    request_id = request.state.request_id
    _record(state, request_id, outcome, started, key.key_id, positions)
    versions = sorted({answer.model.version for answer in outcome.answers})
    response.headers[MODEL_VERSION_HEADER] = ",".join(versions) or _champion_version(state)
    errors = shape_errors + [
        RowError(
            index=positions[index],
            customer_id=_customer_id(batch.customers[positions[index]]),
            errors=[_detail(e, "body", "customers", positions[index]) for e in found],
        )
        for index, found in outcome.errors.items()
    ]
    return BatchResponse(
        request_id=request_id,
        predictions=[
            BatchPrediction(**_plain_prediction(answer), index=positions[answer.index])
            for answer in outcome.answers
        ],
        errors=sorted(errors, key=lambda error: error.index),
    )


def _predict(state: ServingState, records: list[dict[str, Any]], *, batch: bool = False) -> Outcome:
    try:
        return state.predictor.predict(records, batch=batch)
    except NoModelError as error:
        raise HTTPException(503, f"{error}: promote one, or wait for the next poll") from error


def _typed_records(
    customers: list[dict[str, Any]],
) -> tuple[list[tuple[int, dict[str, Any]]], list[RowError]]:
    """Each customer checked against the body's shape on its own, so one of the wrong shape
    is an error of its row, not of the request."""
    typed: list[tuple[int, dict[str, Any]]] = []
    errors: list[RowError] = []
    for position, record in enumerate(customers):
        try:
            typed.append((position, Customer.model_validate(record).model_dump()))
        except ValidationError as error:
            details = [
                ErrorDetail(
                    loc=["body", "customers", position, *map(_loc_part, e["loc"])],
                    msg=e["msg"],
                    type=e["type"],
                )
                for e in error.errors(include_url=False, include_input=False)
            ]
            row = RowError(index=position, customer_id=_customer_id(record), errors=details)
            errors.append(row)
    return typed, errors


def _loc_part(part: Any) -> str | int:
    return part if isinstance(part, int) else str(part)


def _customer_id(record: Any) -> str | None:
    value = record.get("customerID") if isinstance(record, dict) else None
    return value[:64] if isinstance(value, str) else None


def _detail(error: FieldError, *loc: str | int) -> dict[str, Any]:
    where = [*loc, error.field] if error.field else list(loc)
    return jsonable_encoder(ErrorDetail(loc=where, msg=error.message, type="value_error"))


def _plain_prediction(answer: Answer) -> dict[str, Any]:
    return {
        "customer_id": answer.customer_id,
        "churn_probability": answer.probability,
        "risk_band": answer.band,
        "reasons": [
            {"feature": feature, "reason": text, "contribution": contribution}
            for feature, text, contribution in answer.reasons
        ],
        "model_name": answer.model.name,
        "model_version": answer.model.version,
        "variant": answer.model.variant,
    }


def _record(
    state: ServingState,
    request_id: str,
    outcome: Outcome,
    started: float,
    key_id: int,
    positions: list[int] | None = None,
) -> None:
    """Count the answers and queue them for the prediction log (never waits)."""
    for answer in [*outcome.answers, *outcome.shadow]:
        state.metrics.predictions.labels(
            answer.model.version, answer.model.variant, answer.band, str(answer.served).lower()
        ).inc()
    answers = [*outcome.answers, *outcome.shadow]
    if positions is not None:
        answers = [_at(answer, positions[answer.index]) for answer in answers]
    state.log_writer.submit(
        log_rows(uuid.UUID(request_id), answers, started=started, api_key_id=key_id)
    )


def _at(answer: Answer, index: int) -> Answer:
    return replace(answer, index=index)


def _champion_version(state: ServingState) -> str:
    champion = state.holder.champion
    return champion.version if champion else "none"
