"""Dagster resources: how settings reach assets, checks and sensors.

Each resource is one group of settings with the behaviour that goes with it (the warehouse
and its dbt connection, the landing area, MLflow, training, scoring, monitoring, the CRM
hand-off, data retention). Their
defaults are the settings' defaults; :func:`resources_from_settings` builds them from the
environment when the code location loads, so the Dagster UI shows the values a run uses, and
tests build them with values of their own. Secrets enter as ``EnvVar``: the UI shows the
variable's name, never its value.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
from dagster_dbt import DbtCliResource, DbtProject
from mlflow import MlflowClient
from pydantic import Field, PrivateAttr

from retention_pipelines.core import data_retention, database
from retention_pipelines.core.crm import CrmConfig, Selection
from retention_pipelines.core.database import prepared_database_url
from retention_pipelines.core.drift import DriftConfig
from retention_pipelines.core.ingestion import LandingFormat, find_landing_file
from retention_pipelines.core.registry import mlflow_tracking_uri
from retention_pipelines.core.scoring import RiskBands
from retention_pipelines.settings import RetentionSettings


def _default(name: str) -> Any:
    """The default of a setting, so that a resource built without it behaves the same."""
    field = RetentionSettings.model_fields[name]
    return field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]


_SETTING = "setting"


def _setting(name: str) -> Any:
    """A resource field holding the setting ``name``: its default and its description."""
    return Field(
        default=_default(name),
        description=RetentionSettings.model_fields[name].description,
        json_schema_extra={_SETTING: name},
    )


class _SettingsResource(dg.ConfigurableResource):
    """A resource whose fields hold settings (declared with :func:`_setting`)."""

    @classmethod
    def from_settings(cls, settings: RetentionSettings, **values: Any) -> Any:
        """The resource with every setting field from ``settings``; ``values`` for the rest."""
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and _SETTING in extra and name not in values:
                values[name] = getattr(settings, str(extra[_SETTING]))
        return cls(**values)


class WarehouseResource(dg.ConfigurableResource):
    """The platform's Postgres: the configured server, or the embedded one."""

    database_url: str | None = Field(
        default=None, description="Postgres URL; unset: the embedded server under home_dir."
    )
    home_dir: str = Field(
        default=str(_default("home_dir")), description="Where the embedded server keeps its data."
    )
    connect_retry_s: float = _setting("db_connect_retry_s")
    reader_role: str = Field(default=_default("reader_role"))
    reader_login: str = Field(default=_default("reader_login"))
    reader_password: str = Field(default=_default("reader_password").get_secret_value())
    reader_connection_limit: int = Field(default=_default("reader_connection_limit"))
    reader_statement_timeout: str = Field(default=_default("reader_statement_timeout"))

    def reader(self) -> database.ReaderRole:
        return database.ReaderRole(
            group=self.reader_role,
            connection_limit=self.reader_connection_limit,
            statement_timeout=self.reader_statement_timeout,
            login=self.reader_login or None,
            password=self.reader_password,
        )

    def url(self) -> str:
        database.set_connect_retry(self.connect_retry_s)
        return prepared_database_url(
            self.database_url, home_dir=Path(self.home_dir), reader=self.reader()
        )

    @contextmanager
    def dbt_environment(self) -> Iterator[None]:
        """Expose the connection and the reader role to dbt for the duration of a dbt command.

        ``profiles.yml`` reads the connection; ``dbt_project.yml`` grants the analytics views
        to the role.
        """
        parts = database.connection_parts(self.url())
        values = {
            "RETENTION_DBT_HOST": parts.host,
            "RETENTION_DBT_PORT": str(parts.port),
            "RETENTION_DBT_USER": parts.user,
            "RETENTION_DBT_PASSWORD": parts.password,
            "RETENTION_DBT_DBNAME": parts.dbname,
            "RETENTION_DBT_READER_ROLE": self.reader_role,
        }
        previous = {name: os.environ.get(name) for name in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


class LandingResource(_SettingsResource):
    """Where landing files arrive, and the limits ingestion applies to them."""

    landing_dir: str = Field(description="The folder of customers_YYYY-MM-DD.csv files.")
    max_file_bytes: int = _setting("max_file_bytes")
    chunk_rows: int = _setting("ingest_chunk_rows")
    max_reject_share: float = _setting("max_reject_share")
    encoding: str = _setting("landing_encoding")
    delimiter: str = _setting("landing_delimiter")
    max_field_chars: int = _setting("max_field_chars")

    def landing_format(self) -> LandingFormat:
        return LandingFormat(
            encoding=self.encoding,
            delimiter=self.delimiter,
            max_field_chars=self.max_field_chars,
        )

    def path_for(self, snapshot_date: date) -> Path:
        """The day's landing file: plain, or gzip-compressed when only that one is there."""
        return find_landing_file(Path(self.landing_dir), snapshot_date)


class MlflowResource(_SettingsResource):
    """MLflow: the backend store in a database of the warehouse's server, artefacts in a
    folder. This process's MLflow is pointed at them once, when Dagster sets the resource up
    for a run (or a sensor asks for the client first); :attr:`client` is then at hand."""

    warehouse: WarehouseResource
    tracking_uri: str | None = Field(
        default=None, description="The backend store; unset: mlflow_database on the warehouse."
    )
    mlflow_database: str = _setting("mlflow_database")
    artifact_root: str = Field(default=str(_default("home_dir") / "mlartifacts"))
    experiment: str = _setting("mlflow_experiment")
    ui_url: str = _setting("mlflow_ui_url")
    _client: MlflowClient | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._configure()

    @property
    def client(self) -> MlflowClient:
        """A client of the store; MLflow is configured first if it was not yet."""
        return self._client or self._configure()

    def _configure(self) -> MlflowClient:
        uri = (
            self.tracking_uri
            if self.tracking_uri is not None
            else mlflow_tracking_uri(self.warehouse.url(), self.mlflow_database)
        )
        mlflow.set_tracking_uri(uri)
        if mlflow.get_experiment_by_name(self.experiment) is None:
            root = Path(self.artifact_root)
            root.mkdir(parents=True, exist_ok=True)
            mlflow.create_experiment(self.experiment, artifact_location=root.resolve().as_uri())
        mlflow.set_experiment(self.experiment)
        self._client = MlflowClient(uri)
        return self._client

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def model_version_url(self, model_name: str, version: str) -> str:
        return f"{self.ui_url.rstrip('/')}/#/models/{model_name}/versions/{version}"


class TrainingResource(_SettingsResource):
    """How a model is trained and when it replaces the champion."""

    seed: int = _setting("training_seed")
    snapshots: int = _setting("training_snapshots")
    xgboost_trials: int = _setting("xgboost_trials")
    xgboost_timeout_s: float = _setting("xgboost_timeout_s")
    catboost_trials: int = _setting("catboost_trials")
    catboost_timeout_s: float = _setting("catboost_timeout_s")
    baseline_tolerance: float = _setting("baseline_tolerance")
    gate_auc_tolerance: float = _setting("gate_auc_tolerance")
    gate_brier_tolerance: float = _setting("gate_brier_tolerance")


class ScoringResource(_SettingsResource):
    """How nightly scoring reads, explains and bands customers."""

    chunk_rows: int = _setting("scoring_chunk_rows")
    reuse_unchanged: bool = _setting("scoring_reuse_unchanged")
    exact_gap: float = _setting("scoring_exact_gap")
    risk_high_threshold: float = _setting("risk_high_threshold")
    risk_medium_threshold: float = _setting("risk_medium_threshold")

    def bands(self) -> RiskBands:
        return RiskBands(high=self.risk_high_threshold, medium=self.risk_medium_threshold)


class MonitoringResource(_SettingsResource):
    """Drift reports, data quality, realised performance and the retraining sensor."""

    reports_dir: str = Field(default=str(_default("home_dir") / "reports"))
    drift_share_threshold: float = _setting("drift_share_threshold")
    drift_numerical_method: str = _setting("drift_numerical_method")
    drift_numerical_threshold: float = _setting("drift_numerical_threshold")
    drift_categorical_method: str = _setting("drift_categorical_method")
    drift_categorical_threshold: float = _setting("drift_categorical_threshold")
    drift_column_methods: dict[str, str] = _setting("drift_column_methods")
    drift_missing_share_jump: float = _setting("drift_missing_share_jump")
    drift_max_rows: int = _setting("drift_max_rows")
    retrain_cooldown_days: int = _setting("retrain_cooldown_days")
    performance_horizon_days: int = _setting("performance_horizon_days")
    performance_auc_drop: float = _setting("performance_auc_drop")

    def drift_config(self) -> DriftConfig:
        return DriftConfig(
            drift_share=self.drift_share_threshold,
            numerical_method=self.drift_numerical_method,
            numerical_threshold=self.drift_numerical_threshold,
            categorical_method=self.drift_categorical_method,
            categorical_threshold=self.drift_categorical_threshold,
            column_methods=self.drift_column_methods,
            missing_share_jump=self.drift_missing_share_jump,
            max_rows=self.drift_max_rows,
        )

    def drift_report_path(self, snapshot_date: date) -> Path:
        return Path(self.reports_dir) / "drift" / f"feature_drift_{snapshot_date}.html"

    def data_docs_dir(self) -> Path:
        return Path(self.reports_dir) / "data_docs"


class DataRetentionResource(_SettingsResource):
    """How long each table keeps its rows (``RETENTION_KEEP_*_DAYS``), what "today" is, and
    where the CRM files are."""

    keep_raw_days: int = _setting("keep_raw_days")
    keep_features_days: int = _setting("keep_features_days")
    keep_scores_days: int = _setting("keep_scores_days")
    keep_prediction_log_days: int = _setting("keep_prediction_log_days")
    keep_crm_outbox_days: int = _setting("keep_crm_outbox_days")
    timezone: str = _setting("timezone")
    crm_dir: str = Field(description="Where the CRM hand-off files are written.")

    def policy(self) -> data_retention.RetentionPolicy:
        return data_retention.retention_policy(
            keep_raw_days=self.keep_raw_days,
            keep_features_days=self.keep_features_days,
            keep_scores_days=self.keep_scores_days,
            keep_prediction_log_days=self.keep_prediction_log_days,
            keep_crm_outbox_days=self.keep_crm_outbox_days,
            timezone=self.timezone,
            crm_dir=Path(self.crm_dir),
        )


class CrmResource(_SettingsResource):
    """Who is handed off to the CRM, and how the tasks are delivered."""

    webhook_url: str | None = Field(
        default=None, description="Where tasks are POSTed; unset: a CSV file under crm_dir."
    )
    webhook_secret: str | None = Field(
        default=None, description="Key of the HMAC-SHA256 signature of each request body."
    )
    crm_dir: str = Field(description="Where the CSV files go without a webhook.")
    min_rise: float = _setting("crm_min_rise")
    cooldown_days: int = _setting("crm_cooldown_days")
    daily_capacity: int = _setting("crm_daily_capacity")
    batch_size: int = _setting("crm_batch_size")
    timeout_s: float = _setting("crm_timeout_s")
    max_attempts: int = _setting("crm_max_attempts")
    max_backoff_s: float = _setting("crm_max_backoff_s")

    def config(self) -> CrmConfig:
        return CrmConfig.of(
            selection=Selection(
                min_rise=self.min_rise,
                cooldown_days=self.cooldown_days,
                daily_capacity=self.daily_capacity,
            ),
            webhook_url=self.webhook_url,
            webhook_secret=self.webhook_secret,
            crm_dir=Path(self.crm_dir),
            batch_size=self.batch_size,
            timeout_s=self.timeout_s,
            max_attempts=self.max_attempts,
            max_backoff_s=self.max_backoff_s,
        )


def crm_resource(settings: RetentionSettings) -> CrmResource:
    """The hand-off's resource, from the settings; the webhook's URL (it may hold a token)
    and secret enter as the names of their variables."""
    return CrmResource.from_settings(
        settings,
        webhook_url=dg.EnvVar("RETENTION_CRM_WEBHOOK_URL") if settings.crm_webhook_url else None,
        webhook_secret=(
            dg.EnvVar("RETENTION_CRM_WEBHOOK_SECRET") if settings.crm_webhook_secret else None
        ),
        crm_dir=str(settings.crm_dir),
    )


def dbt_executable() -> str:
    """dbt from PATH, else the one installed beside this interpreter (a venv not activated)."""
    return shutil.which("dbt") or str(Path(sys.executable).parent / "dbt")


def dbt_resource(project: DbtProject) -> DbtCliResource:
    return DbtCliResource(project_dir=project, dbt_executable=dbt_executable())


def resources_from_settings(settings: RetentionSettings, dbt: DbtProject) -> dict[str, Any]:
    """Every resource of the code location, from the settings."""
    warehouse = WarehouseResource(
        database_url=dg.EnvVar("RETENTION_DATABASE_URL") if settings.database_url else None,
        home_dir=str(settings.home_dir),
        connect_retry_s=settings.db_connect_retry_s,
        reader_role=settings.reader_role,
        reader_login=settings.reader_login,
        reader_connection_limit=settings.reader_connection_limit,
        reader_statement_timeout=settings.reader_statement_timeout,
        reader_password=(
            dg.EnvVar("RETENTION_READER_PASSWORD")
            if os.environ.get("RETENTION_READER_PASSWORD")
            else settings.reader_password.get_secret_value()
        ),
    )
    return {
        "warehouse": warehouse,
        "landing": LandingResource.from_settings(
            settings, landing_dir=str(settings.resolved_landing_dir)
        ),
        "mlflow_registry": MlflowResource.from_settings(
            settings,
            warehouse=warehouse,
            artifact_root=str(settings.resolved_mlflow_artifact_root),
        ),
        "training": TrainingResource.from_settings(settings),
        "scoring": ScoringResource.from_settings(settings),
        "monitoring": MonitoringResource.from_settings(
            settings, reports_dir=str(settings.resolved_reports_dir)
        ),
        "crm": crm_resource(settings),
        "data_retention_policy": DataRetentionResource.from_settings(
            settings, crm_dir=str(settings.crm_dir)
        ),
        "dbt": dbt_resource(dbt),
    }
