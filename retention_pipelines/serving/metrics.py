"""The API's Prometheus metrics, in one registry per app.

With several worker processes (``retention serve --workers N``) each process writes its
values to ``PROMETHEUS_MULTIPROC_DIR`` (set by ``retention serve``) and ``/metrics`` adds
them up, so a scrape sees the whole server whichever worker answers it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

MULTIPROCESS_DIR: Final = "PROMETHEUS_MULTIPROC_DIR"
# Seconds: a model call is about a millisecond, a batch of 1,000 a few hundred.
LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class ApiMetrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    predictions: Counter
    model_reloads: Counter
    model_load_failures: Counter
    model_info: Gauge
    model_loaded_at: Gauge
    log_rows_written: Counter
    log_rows_dropped: Counter
    rate_limited: Counter

    def render(self) -> bytes:
        """The exposition text; every worker's values when running multi-process."""
        if os.environ.get(MULTIPROCESS_DIR):
            registry = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def create_metrics() -> ApiMetrics:
    disable_created_metrics()  # the *_created series double every counter for no reader
    registry = CollectorRegistry(auto_describe=True)
    return ApiMetrics(
        registry=registry,
        requests=Counter(
            "retention_api_requests_total",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=registry,
        ),
        latency=Histogram(
            "retention_api_request_duration_seconds",
            "Time from a request's first byte to its response, by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        predictions=Counter(
            "retention_api_predictions_total",
            "Customers scored, by model version, variant, risk band and whether the answer "
            "was returned (served) or only logged (shadow).",
            ["model_version", "variant", "band", "served"],
            registry=registry,
        ),
        model_reloads=Counter(
            "retention_api_model_reloads_total",
            "Model versions loaded because an alias moved (and at startup), by variant.",
            ["variant"],
            registry=registry,
        ),
        model_load_failures=Counter(
            "retention_api_model_load_failures_total",
            "Loads of a model version that failed (the last good model kept answering).",
            ["variant"],
            registry=registry,
        ),
        model_info=Gauge(
            "retention_api_model_info",
            "1 for the model version each variant answers with now.",
            ["variant", "model_name", "model_version"],
            registry=registry,
            multiprocess_mode="liveall",
        ),
        model_loaded_at=Gauge(
            "retention_api_model_loaded_timestamp_seconds",
            "When each variant's model was loaded (Unix time).",
            ["variant"],
            registry=registry,
            multiprocess_mode="livemax",
        ),
        log_rows_written=Counter(
            "retention_api_prediction_log_rows_written_total",
            "Rows copied into ml.prediction_log.",
            registry=registry,
        ),
        log_rows_dropped=Counter(
            "retention_api_prediction_log_rows_dropped_total",
            "Prediction-log rows dropped (queue full or database error), by reason.",
            ["reason"],
            registry=registry,
        ),
        rate_limited=Counter(
            "retention_api_rate_limited_total",
            "Requests refused with 429 because their key was over its rate limit.",
            registry=registry,
        ),
    )
