"""Everything a running API holds, built once by the app's lifespan: the models, the keys,
the rate limiter, the prediction-log writer, the metrics and the warehouse connections."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from mlflow import MlflowClient
from psycopg_pool import ConnectionPool

from retention_pipelines.core.database import connect
from retention_pipelines.serving.keys import KeyCache
from retention_pipelines.serving.metrics import ApiMetrics
from retention_pipelines.serving.models import LoadedModel, ModelHolder, Variant
from retention_pipelines.serving.prediction_log import PredictionLogWriter
from retention_pipelines.serving.predictor import Predictor
from retention_pipelines.serving.rate_limits import RateLimiter
from retention_pipelines.settings import RetentionSettings

logger = logging.getLogger(__name__)
# Seconds a readiness probe may wait for the database: a probe must answer, not hang.
_PROBE_TIMEOUT_S = 2


@dataclass
class ServingState:
    settings: RetentionSettings
    owner_url: str
    reader_url: str
    tracking_uri: str
    metrics: ApiMetrics
    holder: ModelHolder
    predictor: Predictor
    keys: KeyCache
    limiter: RateLimiter
    log_writer: PredictionLogWriter
    reader_pool: ConnectionPool[Any]
    started: float = field(default_factory=time.monotonic)

    def database_reachable(self) -> bool:
        """Whether the warehouse answers a query now (a fresh connection, a short timeout)."""
        try:
            with connect(self.owner_url, retry_s=0, connect_timeout=_PROBE_TIMEOUT_S) as conn:
                conn.execute("select 1")
        except Exception as error:
            logger.debug("database probe failed: %s", error)
            return False
        return True


def mlflow_client_factory(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri)


def report_load(metrics: ApiMetrics, previous: dict[Variant, str]) -> Any:
    """The holder's ``on_load``: count the load and move the info metric to the new version."""

    def on_load(loaded: LoadedModel) -> None:
        metrics.model_reloads.labels(loaded.variant).inc()
        old = previous.get(loaded.variant)
        if old is not None:
            metrics.model_info.labels(loaded.variant, loaded.name, old).set(0)
        metrics.model_info.labels(loaded.variant, loaded.name, loaded.version).set(1)
        metrics.model_loaded_at.labels(loaded.variant).set(loaded.loaded_at.timestamp())
        previous[loaded.variant] = loaded.version

    return on_load
