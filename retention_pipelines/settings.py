"""Every setting of the platform, read from the environment (prefix ``RETENTION_``) in one place.

Defaults make a fresh clone work locally: no database install (an embedded Postgres under
``.retention/``), landing files under ``.retention/landing/``.
"""

from __future__ import annotations

from datetime import time
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class RetentionSettings(BaseSettings):
    """Settings with their defaults; each one is overridden by ``RETENTION_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="RETENTION_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="Postgres URL of the warehouse. Unset: the embedded server under home_dir.",
    )
    home_dir: Path = Field(
        default=PROJECT_ROOT / ".retention",
        description="Local state: embedded Postgres data, landing files, Dagster home.",
    )
    landing_dir: Path | None = Field(
        default=None, description="Where daily landing files are read. Default: home_dir/landing."
    )
    dagster_database: str = Field(
        default="dagster", description="Database for the Dagster instance on the same server."
    )
    db_connect_retry_s: float = Field(
        default=30.0,
        ge=0,
        description=(
            "How long a connection is tried again, with growing waits, while the database "
            "cannot be reached (restarting, failing over); 0: once."
        ),
    )
    step_retries: int = Field(
        default=2,
        ge=0,
        description=(
            "Retries of a database-bound step (ingestion, scoring, monitoring) that failed "
            "on a lost connection; its partition is replaced whole, so a retry is safe."
        ),
    )
    step_retry_delay_s: float = Field(
        default=5.0, ge=0, description="Wait before a step's first retry, doubled for each next."
    )
    max_file_bytes: int = Field(
        default=2 * 1024**3, description="Landing files larger than this are refused."
    )
    landing_encoding: str = Field(
        default="utf-8",
        description="Encoding of landing files (utf-8, cp1252, latin-1...); gzip is read through.",
    )
    landing_delimiter: str = Field(
        default=",", min_length=1, max_length=1, description="Field delimiter of landing files."
    )
    max_field_chars: int = Field(
        default=4096,
        ge=1,
        lt=131_072,
        description="A landing field longer than this quarantines its row.",
    )
    ingest_chunk_rows: int = Field(
        default=25_000, description="Rows validated and copied per chunk during ingestion."
    )
    max_reject_share: float = Field(
        default=0.05, description="Blocking check: share of rejected rows allowed in a partition."
    )
    partitions_start_date: str = Field(
        default="2024-01-01", description="First daily partition of the snapshot assets."
    )
    timezone: str = Field(default="UTC", description="Timezone of the daily partitions.")
    executor: Literal["multiprocess", "k8s"] = Field(
        default="multiprocess",
        description=(
            "How the partitioned jobs run their steps: `multiprocess` (processes of the run's "
            "machine) or `k8s` (Dagster's k8s_job_executor: a pod per step, on Kubernetes)."
        ),
    )
    k8s_max_concurrent_steps: int = Field(
        default=4, ge=1, description="With `executor=k8s`: step pods one run has at once."
    )
    dbt_project_dir: Path = Field(
        default=PROJECT_ROOT / "dbt_project", description="The dbt project Dagster runs."
    )
    mlflow_database: str = Field(
        default="mlflow", description="Database of MLflow's backend store, on the same server."
    )
    mlflow_artifact_root: Path | None = Field(
        default=None, description="Where MLflow artefacts go. Default: home_dir/mlartifacts."
    )
    mlflow_experiment: str = Field(default="churn-model", description="MLflow experiment name.")
    mlflow_ui_url: str = Field(
        default="http://localhost:5000",
        description="Where people open the MLflow UI (`make mlflow`); Dagster links runs there.",
    )
    training_seed: int = Field(default=42, description="Seed of the split, samplers and models.")
    training_snapshots: int = Field(
        default=1, description="Labelled snapshots trained on (latest first), one row a customer."
    )
    xgboost_trials: int = Field(default=40, description="Optuna trials for XGBoost.")
    xgboost_timeout_s: float = Field(default=90.0, description="Time limit of the XGBoost study.")
    catboost_trials: int = Field(default=12, description="Optuna trials for CatBoost.")
    catboost_timeout_s: float = Field(
        default=180.0, description="Time limit of the CatBoost study."
    )
    baseline_tolerance: float = Field(
        default=0.005,
        ge=0,
        description="How far (ROC AUC) the chosen model may trail the logistic baseline.",
    )
    gate_auc_tolerance: float = Field(
        default=0.005,
        description="Gate: the challenger's ROC AUC may trail the champion's by this.",
    )
    gate_brier_tolerance: float = Field(
        default=0.005, description="Gate: the challenger's Brier may exceed the champion's by this."
    )
    scoring_chunk_rows: int = Field(
        default=100_000,
        gt=0,
        description="Customers read, scored, explained and written per chunk (bounds memory).",
    )
    scoring_reuse_unchanged: bool = Field(
        default=True,
        description="Carry a score over when a customer's features and the model are unchanged.",
    )
    scoring_exact_gap: float = Field(
        default=0.04,
        ge=0,
        description=(
            "XGBoost champions: a high-risk customer whose approximate top two reasons lie "
            "within this many log-odds gets exact TreeSHAP (0: none, a large value: all)."
        ),
    )
    risk_high_threshold: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Calibrated probability from which a customer is in the high risk band.",
    )
    risk_medium_threshold: float = Field(
        default=0.25,
        gt=0,
        lt=1,
        description="Calibrated probability from which a customer is in the medium risk band.",
    )
    reader_role: str = Field(
        default="retention_reader",
        pattern=r"^[a-z_][a-z0-9_]*$",
        description=(
            "Read-only group role of business users (cannot log in): reads analytics, nothing "
            "else. Each person logs in as a member of it (`retention db reader-login NAME`)."
        ),
    )
    reader_login: str = Field(
        default="retention_reader_login",
        pattern=r"^([a-z_][a-z0-9_]*)?$",
        description=(
            "A login of the reader group kept by every upgrade with reader_password, for the "
            "platform's own read-only clients (empty: none)."
        ),
    )
    reader_password: SecretStr = Field(
        default=SecretStr("retention_reader"), description="Password of reader_login."
    )
    reader_connection_limit: int = Field(
        default=10, gt=0, description="Connections each reader login may hold at once."
    )
    reader_statement_timeout: str = Field(
        default="60s",
        pattern=r"^[0-9]+(us|ms|s|min|h|d)?$",
        description="Statement timeout of reader logins' sessions (Postgres units, e.g. 60s).",
    )

    reports_dir: Path | None = Field(
        default=None,
        description="Where drift reports and Data Docs are written. Default: home_dir/reports.",
    )
    drift_share_threshold: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="Dataset drift: the share of feature columns drifted from which it counts.",
    )
    drift_numerical_method: str = Field(
        default="wasserstein",
        description="Evidently drift method of numerical columns (and of the probabilities).",
    )
    drift_numerical_threshold: float = Field(
        default=0.1, gt=0, description="Threshold of the numerical drift method."
    )
    drift_categorical_method: str = Field(
        default="jensenshannon", description="Evidently drift method of categorical columns."
    )
    drift_categorical_threshold: float = Field(
        default=0.1, gt=0, description="Threshold of the categorical drift method."
    )
    drift_column_methods: dict[str, str] = Field(
        default_factory=dict,
        description=(
            'Per-column overrides as JSON, column to "method" or "method:threshold", '
            'e.g. {"monthly_charges": "psi:0.2"}.'
        ),
    )
    drift_missing_share_jump: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="A column's missing share rising this much over the reference is a finding.",
    )
    drift_max_rows: int = Field(
        default=200_000,
        gt=0,
        description="Rows of a partition the drift report reads (a seeded sample beyond that).",
    )
    retrain_cooldown_days: int = Field(
        default=7,
        ge=0,
        description="Days after a drift-triggered retraining during which the sensor waits.",
    )
    performance_horizon_days: int = Field(
        default=31,
        gt=0,
        description="Scores at most this many days older than a labelled snapshot are judged.",
    )
    performance_auc_drop: float = Field(
        default=0.05,
        gt=0,
        description="Realised ROC AUC this far below the champion's test AUC triggers retraining.",
    )

    api_host: str = Field(default="127.0.0.1", description="Address `retention serve` binds.")
    api_port: int = Field(default=8000, ge=1, le=65535, description="Port of the prediction API.")
    api_workers: int = Field(default=1, ge=1, description="Worker processes of the API.")
    api_max_batch: int = Field(
        default=1000, ge=1, description="Customers one /v1/predict/batch request may hold."
    )
    api_max_body_bytes: int = Field(
        default=2_000_000, ge=1024, description="Larger request bodies are refused with 413."
    )
    api_model_poll_s: float = Field(
        default=30.0,
        gt=0,
        description="How often the API reads the model aliases and loads a version that moved.",
    )
    api_challenger_share: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description=(
            "Share of customers (by a stable hash of their id) answered by @challenger "
            "instead of @champion: an A/B test. 0: none."
        ),
    )
    api_shadow: bool = Field(
        default=False,
        description="Also score every request with @challenger and log it, without returning it.",
    )
    api_rate_limit: str = Field(
        default="600/minute",
        description="Requests per API key, e.g. 600/minute or 10/second (limits' notation).",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for rate limits shared by every API worker; unset: per process.",
    )
    api_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve /metrics on this port only (unset: on the API's own port).",
    )
    api_cors_origins: list[str] = Field(
        default_factory=list,
        description='Origins CORS allows, as JSON (e.g. ["https://crm.example.com"]); none: off.',
    )
    api_key_refresh_s: float = Field(
        default=5.0,
        gt=0,
        description="How often the API re-reads the API keys: a revoked key fails within this.",
    )
    api_log_queue_rows: int = Field(
        default=100_000,
        ge=1,
        description="Prediction-log rows held while Postgres is slow or down; more are dropped.",
    )
    api_log_batch_rows: int = Field(
        default=5_000, ge=1, description="Prediction-log rows copied per COPY at most."
    )
    api_log_flush_s: float = Field(
        default=1.0, gt=0, description="Longest wait before queued prediction-log rows are copied."
    )

    dashboard_host: str = Field(
        default="127.0.0.1", description="Address `retention dashboard` binds."
    )
    dashboard_port: int = Field(
        default=8501, ge=1, le=65535, description="Port of the retention team's dashboard."
    )
    dashboard_cache_ttl_s: float = Field(
        default=30.0,
        ge=0,
        description="How long the dashboard reuses a query's answer (st.cache_data's TTL).",
    )
    dashboard_page_size: int = Field(
        default=50, ge=1, le=1000, description="Customers per page of the dashboard's call list."
    )
    demo_xgboost_trials: int = Field(
        default=6,
        ge=1,
        description="Optuna trials for XGBoost when `make demo` trains its first champion.",
    )
    demo_catboost_trials: int = Field(
        default=2,
        ge=1,
        description="Optuna trials for CatBoost when `make demo` trains its first champion.",
    )

    exporter_host: str = Field(
        default="127.0.0.1", description="Address `retention exporter` binds."
    )
    exporter_port: int = Field(
        default=9464, ge=1, le=65535, description="Port of the platform's metrics (/metrics)."
    )
    exporter_cache_s: float = Field(
        default=15.0,
        ge=0,
        description="How long the exporter reuses its figures: scrapes within it read nothing.",
    )
    exporter_timeout_s: float = Field(
        default=4.0,
        gt=0,
        description=(
            "How long the exporter waits for a connection or a statement before it reports "
            "the source down (keep two of them under Prometheus' scrape timeout)."
        ),
    )
    nightly_deadline: time = Field(
        default=time(6, 0),
        description=(
            "Local time (RETENTION_TIMEZONE) by which the night's nightly_scoring_job run must "
            "have succeeded; the exporter's deadline for the alert."
        ),
    )

    dagster_port: int = Field(
        default=3000, ge=1, le=65535, description="Port of the Dagster UI `make stack` serves."
    )
    dagster_readonly_port: int = Field(
        default=3001,
        ge=1,
        le=65535,
        description="Port of `make stack`'s read-only Dagster UI, for people who only look.",
    )
    dagster_grpc_port: int = Field(
        default=4000,
        ge=1,
        le=65535,
        description="Port of the Dagster code server (gRPC) `make stack` runs the webservers on.",
    )
    mlflow_port: int = Field(
        default=5000, ge=1, le=65535, description="Port of `make stack`'s MLflow server."
    )
    prometheus_port: int = Field(
        default=9090, ge=1, le=65535, description="Port of `make stack`'s Prometheus."
    )
    stack_scrape_interval_s: float = Field(
        default=15.0,
        ge=1,
        description="How often `make stack`'s Prometheus scrapes and evaluates the alert rules.",
    )
    stack_ready_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="How long `retention stack up` waits for every service to answer.",
    )

    pseudonym_key: SecretStr | None = Field(
        default=None,
        description=(
            "Secret key of the pseudonyms (a keyed HMAC of the customer id) that stand for "
            "customers outside the warehouse. Required with a database_url; unset on the "
            "embedded default, one is generated and kept in home_dir/pseudonym.key."
        ),
    )
    keep_raw_days: int = Field(
        default=90,
        ge=1,
        description="Days raw snapshots, quarantined rows and ingestion records are kept.",
    )
    keep_features_days: int = Field(
        default=400, ge=1, description="Days of features.customer_features kept."
    )
    keep_scores_days: int = Field(
        default=400, ge=1, description="Days of nightly scores (ml.churn_risk_scores) kept."
    )
    keep_prediction_log_days: int = Field(
        default=30, ge=1, description="Days of the API's prediction log kept."
    )
    keep_crm_outbox_days: int = Field(
        default=180,
        ge=1,
        description="Days of CRM hand-offs (ml.crm_outbox and the CSV files) kept.",
    )
    crm_webhook_url: str | None = Field(
        default=None,
        description=(
            "Where the day's retention tasks are POSTed. Unset: they are written as a CSV "
            "under reports_dir/crm instead."
        ),
    )
    crm_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Key of the HMAC-SHA256 signature of each webhook body (needed with the URL).",
    )
    crm_min_rise: float = Field(
        default=0.15,
        gt=0,
        le=1,
        description=(
            "A customer whose churn probability rose this much since their previous score "
            "is handed off (as is one entering the high band)."
        ),
    )
    crm_cooldown_days: int = Field(
        default=30,
        ge=0,
        description="A customer handed off is not handed off again for this many days.",
    )
    crm_daily_capacity: int = Field(
        default=200,
        ge=1,
        description="Tasks handed off per day at most, by monthly revenue at risk.",
    )
    crm_batch_size: int = Field(default=50, ge=1, description="Tasks per webhook request.")
    crm_timeout_s: float = Field(
        default=10.0, gt=0, description="How long one webhook request may take."
    )
    crm_max_attempts: int = Field(
        default=5,
        ge=1,
        description="Attempts of a task before it goes to dead_letter.",
    )
    crm_max_backoff_s: float = Field(
        default=60.0,
        ge=0,
        description="Longest wait between attempts (Retry-After included).",
    )

    @field_validator("pseudonym_key", "crm_webhook_url", "crm_webhook_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty variable (``KEY=`` in an env file, compose's ``${KEY:-}``) is no value."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _bands_in_order(self) -> RetentionSettings:
        if self.risk_medium_threshold >= self.risk_high_threshold:
            raise ValueError(
                "RETENTION_RISK_MEDIUM_THRESHOLD must be below RETENTION_RISK_HIGH_THRESHOLD"
            )
        return self

    @property
    def resolved_landing_dir(self) -> Path:
        return self.home_dir / "landing" if self.landing_dir is None else self.landing_dir

    @property
    def embedded_pgdata(self) -> Path:
        return self.home_dir / "pgdata"

    @property
    def resolved_mlflow_artifact_root(self) -> Path:
        if self.mlflow_artifact_root is None:
            return self.home_dir / "mlartifacts"
        return self.mlflow_artifact_root

    @property
    def resolved_reports_dir(self) -> Path:
        return self.home_dir / "reports" if self.reports_dir is None else self.reports_dir

    @property
    def pseudonym_key_file(self) -> Path:
        """Where the embedded default keeps the pseudonym key it generated."""
        return self.home_dir / "pseudonym.key"

    @property
    def crm_dir(self) -> Path:
        """Where the day's CRM tasks go as CSV when no webhook is configured."""
        return self.resolved_reports_dir / "crm"

    @property
    def dagster_home(self) -> Path:
        return self.home_dir / "dagster_home"

    @property
    def stack_dir(self) -> Path:
        """Where `make stack` keeps its state, generated configs, logs and Prometheus' data."""
        return self.home_dir / "stack"


@lru_cache(maxsize=1)
def get_settings() -> RetentionSettings:
    """The process-wide settings, read once from the environment."""
    return RetentionSettings()
