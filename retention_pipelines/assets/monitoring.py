"""Monitoring: the partition's features and scores against the champion's training data, and
past scores judged by the churn labels a later snapshot brought."""

from datetime import date

import dagster as dg

from retention_pipelines.assets import metadata
from retention_pipelines.assets.partitions import daily_partitions, one_partition_per_run
from retention_pipelines.assets.retries import database_retry_policy, retried_only_when_transient
from retention_pipelines.core import drift, registry
from retention_pipelines.core.features import feature_frame
from retention_pipelines.core.performance import (
    PerformanceDrop,
    PerformanceOutcome,
    champion_reference,
    groups_frame,
    performance_drop,
    realised_auc_plot,
    record_performance,
)
from retention_pipelines.core.warehouse.monitoring import realised_auc_history
from retention_pipelines.resources import MlflowResource, MonitoringResource, WarehouseResource

GROUP = "monitoring"
PERFORMANCE_ASSET = "realised_model_performance"
NO_LABELS = "no labels on this date"


@dg.asset(
    group_name=GROUP,
    partitions_def=daily_partitions,
    backfill_policy=one_partition_per_run,
    deps=["customer_features", "churn_risk_scores"],
    kinds={"evidently", "postgres"},
    retry_policy=database_retry_policy(),
)
@retried_only_when_transient
def feature_drift_report(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    mlflow_registry: MlflowResource,
    monitoring: MonitoringResource,
) -> dg.MaterializeResult:
    """Evidently data drift of the date's ``customer_features`` and prediction drift of its
    scores, against the training data of the champion; the HTML report is kept and the
    summary replaces the date's row of ``monitoring.drift_reports``."""
    day = date.fromisoformat(context.partition_key)
    url, client = warehouse.url(), mlflow_registry.client
    model, version = registry.load_champion(client)
    tags = client.get_model_version(registry.MODEL_NAME, version).tags
    snapshots = drift.snapshot_dates_of(tags.get("data_snapshots"))
    reference = drift.read_reference(url, version, snapshots, max_rows=monitoring.drift_max_rows)
    context.log.info(
        f"reference: v{version}'s training data, {reference.rows:,} rows of "
        f"{', '.join(map(str, reference.snapshots))}"
    )
    current, rows = drift.read_current(url, day, max_rows=monitoring.drift_max_rows)
    report = drift.measure_drift(
        day,
        reference,
        current,
        rows,
        reference_probabilities=model.predict_proba(feature_frame(reference.frame)),
        config=monitoring.drift_config(),
        report_path=monitoring.drift_report_path(day),
    )
    drift.save_report(url, report)
    for finding in report.findings:
        context.log.warning(f"{finding.column or day}: {finding.detail}")
    context.log.info(
        f"{day}: {len(report.drifted_columns)} of {len(report.columns)} columns drifted "
        f"({report.drift_share:.0%}; dataset drift from {report.drift_share_threshold:.0%})"
    )
    return dg.MaterializeResult(metadata=_drift_metadata(report, len(current)))


def _drift_metadata(report: drift.DriftReport, rows_read: int) -> dict[str, object]:
    prediction = report.prediction
    return {
        "report": dg.MetadataValue.path(str(report.report_path)),
        "dataset_drift": report.dataset_drift,
        "drift_share": round(report.drift_share, 4),
        "drift_share_threshold": report.drift_share_threshold,
        "drifted_columns": ", ".join(c.column for c in report.drifted_columns) or "none",
        "reference_model_version": report.reference_model_version,
        "reference_snapshots": ", ".join(map(str, report.reference_snapshots)),
        "reference_rows": report.reference_rows,
        "current_rows": report.current_rows,
        "rows_compared": rows_read,
        "prediction_drift": (
            f"{prediction.method} {prediction.score:.4f} (threshold {prediction.threshold:g}): "
            f"{'drifted' if prediction.drifted else 'stable'}; mean probability "
            f"{prediction.reference_mean:.3f} in the reference, {prediction.current_mean:.3f} now"
            if prediction
            else "no scores to compare"
        ),
        "columns": metadata.table(report.columns_frame()),
        "findings": metadata.table(report.findings_frame()),
    }


@dg.asset(
    name=PERFORMANCE_ASSET,
    group_name=GROUP,
    partitions_def=daily_partitions,
    backfill_policy=one_partition_per_run,
    # The date's labels, and the scores (of earlier dates: this dependency orders the night).
    deps=[dg.AssetKey("customer_features"), dg.AssetKey("churn_risk_scores")],
    kinds={"postgres", "mlflow"},
    retry_policy=database_retry_policy(),
)
@retried_only_when_transient
def realised_model_performance(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    mlflow_registry: MlflowResource,
    monitoring: MonitoringResource,
) -> dg.MaterializeResult:
    """``monitoring.model_performance`` for the partition's date: the scores of the
    ``RETENTION_PERFORMANCE_HORIZON_DAYS`` before it, per score date and model version, judged
    by its churn labels (ROC AUC, top-decile lift, Brier, calibration). A date without labels
    records nothing and succeeds."""
    day = date.fromisoformat(context.partition_key)
    url = warehouse.url()
    outcome = record_performance(url, day, horizon_days=monitoring.performance_horizon_days)
    context.log.info(outcome.message)
    if not outcome.groups:
        return dg.MaterializeResult(metadata=_empty_metadata(outcome))
    champion = champion_reference(mlflow_registry.client)
    drop = (
        performance_drop(
            url, champion.version, champion.test_auc, threshold=monitoring.performance_auc_drop
        )
        if champion
        else None
    )
    if drop is not None:
        (context.log.warning if drop.dropped else context.log.info)(drop.describe())
    history = realised_auc_history(url, until=day)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(outcome.groups),
            "groups_evaluated": len(outcome.groups),
            "customers_joined": outcome.customers_joined,
            "labelled_customers": outcome.labelled_customers,
            "first_score_date": str(outcome.first_score_date),
            "realised_performance": metadata.table(groups_frame(outcome.groups)),
            "realised_auc_over_time": dg.MetadataValue.md(
                realised_auc_plot(history, test_auc=champion)
            ),
            **(_drop_metadata(drop, monitoring.performance_auc_drop) if drop else {}),
        }
    )


def _empty_metadata(outcome: PerformanceOutcome) -> dict[str, object]:
    return {
        "dagster/row_count": 0,
        "groups_evaluated": 0,
        "customers_joined": 0,
        "labelled_customers": outcome.labelled_customers,
        "status": NO_LABELS if outcome.labelled_customers == 0 else outcome.message,
    }


def _drop_metadata(drop: PerformanceDrop, threshold: float) -> dict[str, object]:
    return {
        "champion_version": drop.version,
        "champion_test_roc_auc": dg.MetadataValue.float(round(drop.test_auc, 4)),
        "champion_realised_roc_auc": dg.MetadataValue.float(round(drop.realised_auc, 4)),
        "champion_auc_dropped": dg.MetadataValue.bool(drop.dropped),
        "champion_verdict": f"{drop.describe()} (threshold {threshold:g})",
    }
