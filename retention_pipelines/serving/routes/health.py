"""Probes and metrics: ``/live``, ``/ready``, ``/health`` and ``/metrics``, without a key."""

from __future__ import annotations

import time
from importlib import metadata

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from retention_pipelines.serving.deps import State
from retention_pipelines.serving.metrics import CONTENT_TYPE
from retention_pipelines.serving.schemas import Health, LogStatus, ModelStatus

router = APIRouter(tags=["operations"])
metrics_router = APIRouter(tags=["operations"])
VERSION = metadata.version("retention-pipelines")


@router.get("/live")
async def live() -> dict[str, str]:
    """The process answers: restart it if not."""
    return {"status": "live"}


@router.get("/ready", responses={503: {"description": "Not ready, with the reason."}})
async def ready(state: State) -> JSONResponse:
    """Whether to send traffic here: a champion is loaded and the database answers."""
    reasons = []
    if state.holder.champion is None:
        reasons.append(state.holder.last_error or "no champion model is loaded")
    if not await run_in_threadpool(state.database_reachable):
        reasons.append("the database cannot be reached")
    if reasons:
        return JSONResponse({"status": "not ready", "reasons": reasons}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/health", response_model=Health)
async def health(state: State) -> Health:
    """What the service runs: versions, the loaded models, the database and the log."""
    reachable = await run_in_threadpool(state.database_reachable)
    models = {
        loaded.variant: ModelStatus(
            model_name=loaded.name, model_version=loaded.version, loaded_at=loaded.loaded_at
        )
        for loaded in (state.holder.champion, state.holder.challenger)
        if loaded is not None
    }
    counters = state.log_writer.counters
    return Health(
        status="ok" if reachable and "champion" in models else "degraded",
        version=VERSION,
        uptime_s=round(time.monotonic() - state.started, 3),
        database="ok" if reachable else "unreachable",
        models=models,
        prediction_log=LogStatus(
            pending=state.log_writer.pending, written=counters.written, dropped=counters.dropped
        ),
    )


@metrics_router.get("/metrics", response_class=Response)
async def metrics(state: State) -> Response:
    """Prometheus metrics of the whole server."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
