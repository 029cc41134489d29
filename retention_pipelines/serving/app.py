"""The prediction API, built by :func:`create_app` from the settings (tests build it with
their own). The lifespan prepares the warehouse, loads the champion, starts the prediction-log
writer and the pollers of the model aliases and the API keys, and stops them in order."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from retention_pipelines.core import database
from retention_pipelines.core.pseudonyms import pseudonym_key
from retention_pipelines.core.registry import mlflow_tracking_uri
from retention_pipelines.core.scoring import RiskBands
from retention_pipelines.serving import access_log
from retention_pipelines.serving.keys import KeyCache
from retention_pipelines.serving.metrics import create_metrics
from retention_pipelines.serving.middleware import ApiMiddleware
from retention_pipelines.serving.models import ModelEvents, ModelHolder, Variant
from retention_pipelines.serving.prediction_log import (
    DROP_REASONS,
    LogCounters,
    PredictionLogWriter,
)
from retention_pipelines.serving.predictor import Predictor
from retention_pipelines.serving.rate_limits import RateLimiter
from retention_pipelines.serving.routes import customers, health, predict
from retention_pipelines.serving.state import ServingState, mlflow_client_factory, report_load
from retention_pipelines.settings import RetentionSettings, get_settings

logger = logging.getLogger(__name__)

TITLE: Final = "RetentionAI prediction API"
DESCRIPTION: Final = (
    "Churn probability, risk band and the three strongest reasons of a customer, live, from "
    "the champion model; and the latest nightly score from the warehouse. Send an API key as "
    "`Authorization: Bearer <key>` (create one with `retention api-key create NAME`)."
)
_CDN: Final = "https://cdn.jsdelivr.net"
_FAVICON: Final = "https://fastapi.tiangolo.com"


def create_app(settings: RetentionSettings | None = None) -> FastAPI:
    """The API for ``settings`` (default: the environment's). uvicorn's access log names
    customers by pseudonym (see :mod:`retention_pipelines.serving.access_log`)."""
    settings = settings or get_settings()
    access_log.install(pseudonym_key(settings))
    metrics = create_metrics()
    docs_html = get_swagger_ui_html(openapi_url="/openapi.json", title=TITLE)
    app = FastAPI(
        title=TITLE,
        description=DESCRIPTION,
        version=health.VERSION,
        docs_url=None,
        redoc_url=None,
        lifespan=_lifespan(settings, metrics),
    )
    app.include_router(predict.router)
    app.include_router(customers.router)
    app.include_router(health.router)
    if settings.api_metrics_port is None:
        app.include_router(health.metrics_router)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return docs_html

    app.add_middleware(
        ApiMiddleware,
        metrics=metrics,
        max_body_bytes=settings.api_max_body_bytes,
        docs_csp=docs_csp(docs_html.body.decode()),
    )
    if settings.api_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api_cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
            expose_headers=["X-Model-Version", "X-Request-ID", "Retry-After"],
        )
    _add_error_handlers(app)
    app.state.metrics = metrics
    return app


def docs_csp(html: str) -> str:
    """A Content-Security-Policy for the Swagger page: its scripts and styles from the CDN,
    its one inline script by hash, the OpenAPI document from here, nothing else."""
    inline = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in inline
    )
    return (
        f"default-src 'none'; script-src {_CDN} {hashes}; style-src {_CDN} 'unsafe-inline'; "
        f"img-src {_FAVICON} {_CDN} data:; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    )


def _lifespan(settings: RetentionSettings, metrics: Any) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await run_in_threadpool(build_state, settings, metrics)
        app.state.serving = state
        await run_in_threadpool(state.keys.refresh)
        await run_in_threadpool(state.holder.refresh)
        state.log_writer.start()
        state.reader_pool.open(wait=False)
        pollers = [
            asyncio.create_task(_every(settings.api_model_poll_s, state.holder.refresh)),
            asyncio.create_task(_every(settings.api_key_refresh_s, state.keys.refresh)),
        ]
        try:
            yield
        finally:
            for poller in pollers:
                poller.cancel()
            for poller in pollers:
                with suppress(asyncio.CancelledError):
                    await poller
            await run_in_threadpool(state.log_writer.stop)
            state.reader_pool.close()

    return lifespan


async def _every(seconds: float, work: Callable[[], object]) -> None:
    """Run ``work`` in a thread every ``seconds``, off the request path, forever."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await run_in_threadpool(work)
        except Exception:  # a poller must outlive a failure of one round
            logger.exception("a background refresh failed; trying again in %.0f s", seconds)


def build_state(settings: RetentionSettings, metrics: Any) -> ServingState:
    """Everything the running API holds, from the settings."""
    owner_url = database.settings_database_url(settings)
    reader_url = database.with_login(
        owner_url, settings.reader_login, settings.reader_password.get_secret_value()
    )
    tracking_uri = mlflow_tracking_uri(owner_url, settings.mlflow_database)
    wanted: tuple[Variant, ...] = ("champion",)
    if settings.api_challenger_share > 0 or settings.api_shadow:
        wanted = ("champion", "challenger")
    for variant in wanted:  # exposed at 0 from the start, so increase() sees the first failure
        metrics.model_reloads.labels(variant)
        metrics.model_load_failures.labels(variant)
    for reason in DROP_REASONS:
        metrics.log_rows_dropped.labels(reason)
    holder = ModelHolder(
        client_factory=lambda: mlflow_client_factory(tracking_uri),
        wanted=wanted,
        events=ModelEvents(
            on_load=report_load(metrics, {}),
            on_failure=lambda variant, version: metrics.model_load_failures.labels(variant).inc(),
        ),
    )
    counters = LogCounters(
        on_written=metrics.log_rows_written.inc,
        on_dropped=lambda rows, reason: metrics.log_rows_dropped.labels(reason).inc(rows),
    )
    return ServingState(
        settings=settings,
        owner_url=owner_url,
        reader_url=reader_url,
        tracking_uri=tracking_uri,
        metrics=metrics,
        holder=holder,
        predictor=Predictor(
            holder=holder,
            bands=RiskBands(settings.risk_high_threshold, settings.risk_medium_threshold),
            challenger_share=settings.api_challenger_share,
            shadow=settings.api_shadow,
            max_field_chars=settings.max_field_chars,
            batch_exact_gap=settings.scoring_exact_gap,
        ),
        keys=KeyCache(owner_url, refresh_s=settings.api_key_refresh_s),
        limiter=RateLimiter(
            settings.api_rate_limit, settings.redis_url, namespace=_namespace(owner_url)
        ),
        log_writer=PredictionLogWriter(
            owner_url,
            pseudonym_key=pseudonym_key(settings),
            max_rows=settings.api_log_queue_rows,
            batch_rows=settings.api_log_batch_rows,
            flush_s=settings.api_log_flush_s,
            counters=counters,
        ),
        reader_pool=ConnectionPool(
            reader_url,
            min_size=1,
            max_size=4,
            open=False,
            kwargs={"connect_timeout": 3},
            name="reader",
        ),
    )


def _namespace(url: str) -> str:
    """The warehouse a server belongs to (host, port, database), naming its rate-limit keys."""
    parts = database.connection_parts(url)
    return f"retention:{parts.host}:{parts.port}:{parts.dbname}"


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"detail": ..., "request_id": ...}``; no trace, no SQL, ever."""

    def problem(request: Request, status: int, detail: Any, headers: Any = None) -> JSONResponse:
        request_id = getattr(request.state, "request_id", None)
        return JSONResponse(
            {"detail": detail, "request_id": request_id}, status_code=status, headers=headers
        )

    async def http_error(request: Request, error: Exception) -> JSONResponse:
        # Starlette's class: the router's 404 and 405 and FastAPI's 400 are raised as it.
        assert isinstance(error, HTTPException)  # noqa: S101
        return problem(request, error.status_code, error.detail, error.headers)

    async def invalid(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)  # noqa: S101
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in error.errors()
        ]
        return problem(request, 422, details)

    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.error(
            "request %s failed: %s",
            getattr(request.state, "request_id", "?"),
            type(error).__name__,
            exc_info=error,
        )
        return problem(request, 500, "internal error; the request id identifies it in the logs")

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[JSONResponse]]] = {
        HTTPException: http_error,
        RequestValidationError: invalid,
        Exception: unexpected,
    }
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)
