"""``retention exporter``: the platform's own health as Prometheus metrics at ``/metrics``.

The figures come from the warehouse's monitoring, run and CRM outbox tables and from
Dagster's run storage (:mod:`retention_pipelines.core.warehouse.platform_health`), read at
most once every ``RETENTION_EXPORTER_CACHE_S`` seconds whatever the number of Prometheus
servers scraping, so a scrape costs Postgres two small statements at most and usually
nothing.

It logs in as the platform, not as the reader login: the reader can read ``analytics`` and
nothing else by design, while these figures live in ``raw``, ``ml``, ``monitoring`` and the
Dagster database. Its sessions are read-only (``default_transaction_read_only``), so the
platform's login is no licence to write here. It never migrates the warehouse either: until
some other part of the platform has (every command does, on start), the figures are missing
and ``retention_platform_up{source="warehouse"}`` says 0.

A database that cannot be read is a figure, never an error page: ``/metrics`` still answers,
with ``retention_platform_up`` at 0 for that source and its figures left out, so an alert on
them goes quiet rather than firing on stale numbers, and the exporter's own alert says why.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as time_of_day
from typing import Final, TypeVar
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from retention_pipelines.core import database
from retention_pipelines.core.warehouse import platform_health
from retention_pipelines.core.warehouse.platform_health import (
    CRM_RECENT_DAYS,
    NOTHING_COUNTED,
    CrmTasks,
    JobRuns,
    WarehouseHealth,
    nightly_window,
    start_of_day,
)
from retention_pipelines.settings import RetentionSettings

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

# The jobs the 02:00 and 05:00 schedules run (automation.nightly_scoring_job and
# data_retention_job; a test holds them equal: importing automation would load every asset of
# the code location).
NIGHTLY_JOB: Final = "nightly_scoring_job"
PURGE_JOB: Final = "data_retention_job"
PREFIX: Final = "retention_platform_"
# The sources the exporter reads, by their `source` label.
SOURCES: Final = {"warehouse": "warehouse", "dagster": "Dagster run storage"}

# Every metric the exporter can expose, with its HELP text: the one list the collector, the
# tests and the documentation read.
METRICS: Final[dict[str, str]] = {
    "up": (
        "1 when the exporter's latest read of the source (warehouse: the platform's tables; "
        "dagster: the run storage) succeeded, 0 when it failed; that source's figures are "
        "left out while it is 0."
    ),
    "read_duration_seconds": "How long the latest read of both sources took.",
    "read_timestamp_seconds": (
        "When the figures were read (Unix time); they are reused for RETENTION_EXPORTER_CACHE_S."
    ),
    "latest_scored_date_timestamp_seconds": (
        "The latest snapshot date with scores in ml.churn_risk_scores, as the Unix time of its "
        "midnight in RETENTION_TIMEZONE."
    ),
    "latest_scored_date_age_days": (
        "Days from the latest scored snapshot date to today in RETENTION_TIMEZONE (0: today "
        "is scored)."
    ),
    "scored_rows": "Customers scored on the latest scored snapshot date.",
    "latest_ingested_date_timestamp_seconds": (
        "The latest snapshot date in raw.ingestion_runs (midnight in RETENTION_TIMEZONE)."
    ),
    "ingested_rows": (
        "Rows of the latest ingested landing file by where they went: valid (raw."
        "customer_snapshots), rejected (raw.customer_rejects), duplicate (collapsed), "
        "suppressed (erased customers, left out)."
    ),
    "reject_share": "Rejected rows over rows read, on the latest ingested date.",
    "reject_share_threshold": (
        "RETENTION_MAX_REJECT_SHARE: the reject share at which ingestion's blocking check fails."
    ),
    "drift_report_date_timestamp_seconds": (
        "The latest snapshot date in monitoring.drift_reports (midnight in RETENTION_TIMEZONE)."
    ),
    "dataset_drift": "1 when the latest drift report found dataset drift, 0 when it did not.",
    "drift_share": "Share of feature columns drifted in the latest drift report.",
    "drift_share_threshold": (
        "The drifted share from which the latest drift report counts dataset drift."
    ),
    "data_quality_date_timestamp_seconds": (
        "The latest snapshot date in monitoring.data_quality (midnight in RETENTION_TIMEZONE)."
    ),
    "data_quality_passed": (
        "1 when the latest Great Expectations suite on customer_features passed, 0 when it failed."
    ),
    "data_quality_failed_expectations": "Expectations the latest data quality suite failed.",
    "champion_info": "1 for the model version @champion points at (ml.model_versions).",
    "champion_version": "The champion's registry version number.",
    "champion_test_roc_auc": "The champion's ROC AUC on its training run's test split.",
    "realised_roc_auc": (
        "The champion's realised ROC AUC: its freshest scores judged by later churn labels "
        "(monitoring.model_performance)."
    ),
    "realised_roc_auc_drop_tolerance": (
        "RETENTION_PERFORMANCE_AUC_DROP: how far the realised ROC AUC may fall below the "
        "champion's test ROC AUC."
    ),
    "nightly_last_success_timestamp_seconds": (
        "When the newest successful run of nightly_scoring_job ended (Unix time; 0: never)."
    ),
    "nightly_hours_since_success": (
        "Hours since the newest successful run of nightly_scoring_job ended."
    ),
    "nightly_latest_date_timestamp_seconds": (
        "The newest snapshot date a nightly_scoring_job run succeeded for (midnight in "
        "RETENTION_TIMEZONE; 0: none)."
    ),
    "nightly_due_date_timestamp_seconds": (
        "The snapshot date whose nightly run must have succeeded by now (midnight in "
        "RETENTION_TIMEZONE): today from RETENTION_NIGHTLY_DEADLINE on, yesterday before."
    ),
    "nightly_deadline_timestamp_seconds": (
        "RETENTION_NIGHTLY_DEADLINE on the due date, in RETENTION_TIMEZONE (Unix time): when "
        "its nightly run had to have succeeded."
    ),
    "crm_tasks": (
        f"CRM tasks in ml.crm_outbox of the last {CRM_RECENT_DAYS} snapshot dates (today in "
        "RETENTION_TIMEZONE and the days before), by status: pending (not yet delivered), sent, "
        "dead_letter (refused for good)."
    ),
    "crm_oldest_pending_seconds": (
        "Seconds since the oldest CRM task still pending, of any date, was selected (0: none "
        "is pending)."
    ),
    "purge_last_success_timestamp_seconds": (
        "When the newest successful run of data_retention_job ended (Unix time; 0: never)."
    ),
    "purge_hours_without_success": (
        "Hours since the newest successful run of data_retention_job ended; before one has, "
        "since the first successful nightly_scoring_job run ended (the platform has held "
        "customer data since). Absent before either."
    ),
}


@dataclass(frozen=True)
class ExporterConfig:
    """What the exporter reads and how it judges; :func:`exporter_config` fills it from the
    settings. ``warehouse_url`` is called on each read until it succeeds, so the exporter
    starts (and answers) while the database is still down."""

    warehouse_url: Callable[[], str]
    dagster_database: str
    timezone: str
    nightly_deadline: time_of_day
    max_reject_share: float
    auc_drop_tolerance: float
    timeout_s: float
    cache_s: float


def exporter_config(settings: RetentionSettings) -> ExporterConfig:
    """The exporter of this platform: its warehouse (the configured server, or the embedded
    one), the Dagster database beside it, and the thresholds the platform itself uses."""
    return ExporterConfig(
        warehouse_url=lambda: database.resolve_database_url(
            settings.database_url, settings.embedded_pgdata
        ),
        dagster_database=settings.dagster_database,
        timezone=settings.timezone,
        nightly_deadline=settings.nightly_deadline,
        max_reject_share=settings.max_reject_share,
        auc_drop_tolerance=settings.performance_auc_drop,
        timeout_s=settings.exporter_timeout_s,
        cache_s=settings.exporter_cache_s,
    )


@dataclass(frozen=True)
class Reading:
    """One read of both sources; a source that failed is None."""

    read_at: datetime
    duration_s: float
    warehouse: WarehouseHealth | None
    runs: dict[str, JobRuns] | None  # by job: NIGHTLY_JOB, PURGE_JOB


class PlatformReader:
    """Reads both sources, and answers from the last reading for ``cache_s`` seconds.

    Concurrent scrapes wait for the one read in progress instead of starting their own. A
    failed read is kept as long as a good one: a database that is down is asked again after
    the cache window, not by every scrape.
    """

    def __init__(
        self,
        config: ExporterConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.clock = clock
        self.now = now
        self.reads = 0
        self._lock = threading.Lock()
        self._url: str | None = None
        self._scored = NOTHING_COUNTED  # the latest count, reused while it holds
        self._latest: Reading | None = None
        self._read_at = 0.0

    def reading(self) -> Reading:
        with self._lock:
            fresh = self._latest is not None and self.clock() - self._read_at < self.config.cache_s
            if not fresh:
                self._read_at = self.clock()
                self._latest = self._read()
            assert self._latest is not None  # noqa: S101  # set just above
            return self._latest

    def _read(self) -> Reading:
        self.reads += 1
        started = time.perf_counter()
        read_at = self.now()
        today = read_at.astimezone(ZoneInfo(self.config.timezone)).date()
        warehouse = self._attempt("warehouse", lambda: self._read_warehouse(today))
        runs = self._attempt("dagster", self._read_runs)
        return Reading(read_at, time.perf_counter() - started, warehouse, runs)

    def _read_warehouse(self, today: date) -> WarehouseHealth:
        health = platform_health.read_warehouse_health(
            self._warehouse_url(), today=today, timeout_s=self.config.timeout_s, known=self._scored
        )
        self._scored = health.scored
        return health

    def _read_runs(self) -> dict[str, JobRuns]:
        url = database.with_database(self._warehouse_url(), self.config.dagster_database)
        return platform_health.read_job_runs(
            url, (NIGHTLY_JOB, PURGE_JOB), timeout_s=self.config.timeout_s
        )

    def _warehouse_url(self) -> str:
        if self._url is None:
            self._url = self.config.warehouse_url()
        return self._url

    def _attempt(self, source: str, read: Callable[[], _T]) -> _T | None:
        try:
            return read()
        except Exception as error:  # whatever failed, /metrics answers with up 0
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            logger.warning(
                "cannot read the %s: %s: %s", SOURCES[source], type(error).__name__, first_line
            )
            return None


class PlatformCollector(Collector):
    """The metrics of :data:`METRICS` from the reader's latest reading; the clock-bound
    figures (ages, the nightly deadline, the hours without a purge) are computed at each
    scrape."""

    def __init__(self, reader: PlatformReader) -> None:
        self.reader = reader

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []  # registering must not read the database

    def collect(self) -> Iterator[GaugeMetricFamily]:
        reading = self.reader.reading()
        config, now = self.reader.config, self.reader.now()
        yield from _exporter_figures(reading)
        yield _gauge("reject_share_threshold", config.max_reject_share)
        yield _gauge("realised_roc_auc_drop_tolerance", config.auc_drop_tolerance)
        window = nightly_window(now, config.timezone, config.nightly_deadline)
        yield _gauge("nightly_due_date_timestamp_seconds", _day(window.due_date, config))
        yield _gauge("nightly_deadline_timestamp_seconds", window.deadline.timestamp())
        if reading.warehouse is not None:
            yield from _warehouse_figures(reading.warehouse, config, now)
        if reading.runs is not None:
            nightly = reading.runs[NIGHTLY_JOB]
            yield from _nightly_figures(nightly, config, now)
            yield from _purge_figures(reading.runs[PURGE_JOB], nightly, now)


def _gauge(name: str, value: float, labels: dict[str, str] | None = None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(PREFIX + name, METRICS[name], labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def _day(day: date, config: ExporterConfig) -> float:
    return start_of_day(day, config.timezone).timestamp()


def _exporter_figures(reading: Reading) -> Iterator[GaugeMetricFamily]:
    up = GaugeMetricFamily(PREFIX + "up", METRICS["up"], labels=["source"])
    up.add_metric(["warehouse"], 0 if reading.warehouse is None else 1)
    up.add_metric(["dagster"], 0 if reading.runs is None else 1)
    yield up
    yield _gauge("read_duration_seconds", reading.duration_s)
    yield _gauge("read_timestamp_seconds", reading.read_at.timestamp())


def _warehouse_figures(
    health: WarehouseHealth, config: ExporterConfig, now: datetime
) -> Iterator[GaugeMetricFamily]:
    scored = health.scored
    yield _gauge("scored_rows", scored.rows)
    if scored.snapshot_date is not None:
        today = now.astimezone(ZoneInfo(config.timezone)).date()
        yield _gauge("latest_scored_date_timestamp_seconds", _day(scored.snapshot_date, config))
        yield _gauge("latest_scored_date_age_days", (today - scored.snapshot_date).days)
    yield from _ingestion_figures(health, config)
    yield from _monitoring_figures(health, config)
    yield from _champion_figures(health)
    yield from _crm_figures(health.crm, now)


def _ingestion_figures(
    health: WarehouseHealth, config: ExporterConfig
) -> Iterator[GaugeMetricFamily]:
    ingestion = health.ingestion
    if ingestion is None:
        return
    yield _gauge("latest_ingested_date_timestamp_seconds", _day(ingestion.snapshot_date, config))
    rows = GaugeMetricFamily(PREFIX + "ingested_rows", METRICS["ingested_rows"], labels=["outcome"])
    rows.add_metric(["valid"], ingestion.rows_valid)
    rows.add_metric(["rejected"], ingestion.rows_rejected)
    rows.add_metric(["duplicate"], ingestion.duplicates_collapsed)
    rows.add_metric(["suppressed"], ingestion.rows_suppressed)
    yield rows
    yield _gauge("reject_share", ingestion.reject_share)


def _monitoring_figures(
    health: WarehouseHealth, config: ExporterConfig
) -> Iterator[GaugeMetricFamily]:
    if health.drift is not None:
        drift = health.drift
        yield _gauge("drift_report_date_timestamp_seconds", _day(drift.snapshot_date, config))
        yield _gauge("dataset_drift", int(drift.dataset_drift))
        yield _gauge("drift_share", drift.drift_share)
        yield _gauge("drift_share_threshold", drift.drift_share_threshold)
    if health.quality is not None:
        quality = health.quality
        yield _gauge("data_quality_date_timestamp_seconds", _day(quality.snapshot_date, config))
        yield _gauge("data_quality_passed", int(quality.passed))
        yield _gauge("data_quality_failed_expectations", quality.failed)


def _champion_figures(health: WarehouseHealth) -> Iterator[GaugeMetricFamily]:
    champion = health.champion
    if champion is None:
        return
    yield _gauge(
        "champion_info",
        1,
        {"model_name": platform_health.MODEL_NAME, "model_version": champion.version},
    )
    if champion.version.isdigit():
        yield _gauge("champion_version", int(champion.version))
    if champion.test_roc_auc is not None:
        yield _gauge("champion_test_roc_auc", champion.test_roc_auc)
    if champion.realised_roc_auc is not None:
        yield _gauge("realised_roc_auc", champion.realised_roc_auc)


def _crm_figures(crm: CrmTasks, now: datetime) -> Iterator[GaugeMetricFamily]:
    tasks = GaugeMetricFamily(PREFIX + "crm_tasks", METRICS["crm_tasks"], labels=["status"])
    for status, count in crm.by_status().items():
        tasks.add_metric([status], count)
    yield tasks
    oldest = crm.oldest_pending_at
    # A task selected a moment ago by a server whose clock is ahead is not younger than 0.
    age = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
    yield _gauge("crm_oldest_pending_seconds", age)


def _nightly_figures(
    nightly: JobRuns, config: ExporterConfig, now: datetime
) -> Iterator[GaugeMetricFamily]:
    last = nightly.last_success_at
    yield _gauge("nightly_last_success_timestamp_seconds", 0 if last is None else last.timestamp())
    if last is not None:
        yield _gauge("nightly_hours_since_success", (now - last).total_seconds() / 3600)
    latest = nightly.latest_date
    yield _gauge(
        "nightly_latest_date_timestamp_seconds", 0 if latest is None else _day(latest, config)
    )


def _purge_figures(purge: JobRuns, nightly: JobRuns, now: datetime) -> Iterator[GaugeMetricFamily]:
    last = purge.last_success_at
    yield _gauge("purge_last_success_timestamp_seconds", 0 if last is None else last.timestamp())
    since = purge_due_since(purge, nightly)
    if since is not None:
        yield _gauge("purge_hours_without_success", (now - since).total_seconds() / 3600)


def purge_due_since(purge: JobRuns, nightly: JobRuns) -> datetime | None:
    """Since when the platform has gone without a successful retention purge: the newest
    purge's end; before the first, the first night's, as the platform holds customer data
    from then on, so a purge schedule never turned on is noticed too, and a new platform
    (no night yet) owes no purge. None: neither has happened."""
    return purge.last_success_at or nightly.first_success_at


def exporter_registry(reader: PlatformReader) -> CollectorRegistry:
    """A registry holding the platform's metrics only (none of the process's own)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlatformCollector(reader))
    return registry


def serve_exporter(config: ExporterConfig, *, host: str, port: int) -> None:
    """Serve ``/metrics`` on ``host:port`` until SIGINT or SIGTERM."""
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    server, thread = start_http_server(
        port, addr=host, registry=exporter_registry(PlatformReader(config))
    )
    try:
        stopped.wait()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
