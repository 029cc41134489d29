"""Every table and view the platform reads or writes, named once."""

from typing import Final

RAW_SNAPSHOTS: Final = "raw.customer_snapshots"
RAW_REJECTS: Final = "raw.customer_rejects"
INGESTION_RUNS: Final = "raw.ingestion_runs"
CUSTOMER_FEATURES: Final = "features.customer_features"
CHURN_RISK_SCORES: Final = "ml.churn_risk_scores"
DRIFT_REPORTS: Final = "monitoring.drift_reports"
DATA_QUALITY: Final = "monitoring.data_quality"
MODEL_PERFORMANCE: Final = "monitoring.model_performance"
MODEL_VERSIONS: Final = "ml.model_versions"
CUSTOMER_RISK_LATEST: Final = "analytics.customer_risk_latest"
RISK_BAND_SUMMARY: Final = "analytics.risk_band_summary"
CUSTOMER_SCORE_HISTORY: Final = "analytics.customer_score_history"
API_KEYS: Final = "ops.api_keys"
PREDICTION_LOG: Final = "ml.prediction_log"
AUDIT_LOG: Final = "ops.audit_log"
CRM_OUTBOX: Final = "ml.crm_outbox"
# The suppression list: erased customers by full pseudonym, never by id.
ERASED_CUSTOMERS: Final = "ops.erased_customers"
