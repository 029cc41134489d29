"""Monitoring: the partition's features and scores against the champion's training data."""

from datetime import date

import dagster as dg

from retention_pipelines.core import drift, registry
from retention_pipelines.core.features import feature_frame
from retention_pipelines.resources import MlflowResource, WarehouseResource
from retention_pipelines.settings import RetentionSettings, get_settings

from .partitions import daily_partitions, one_partition_per_run

GROUP = "monitoring"


@dg.asset(
    group_name=GROUP,
    partitions_def=daily_partitions,
    backfill_policy=one_partition_per_run,
    deps=["customer_features", "churn_risk_scores"],
    kinds={"evidently", "postgres"},
)
def feature_drift_report(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    mlflow_registry: MlflowResource,
) -> dg.MaterializeResult:
    """Evidently data drift of the date's ``customer_features`` and prediction drift of its
    scores, against the training data of the champion; the HTML report is kept and the
    summary replaces the date's row of ``monitoring.drift_reports``."""
    settings = get_settings()
    day = date.fromisoformat(context.partition_key)
    url = warehouse.url()
    client = mlflow_registry.client(warehouse)
    pyfunc, version = registry.load_champion(client)
    tags = client.get_model_version(registry.MODEL_NAME, version).tags
    reference = drift.read_reference(
        url, version, drift.snapshot_dates_of(tags.get("data_snapshots")),
        max_rows=settings.drift_max_rows,
    )  # fmt: skip
    context.log.info(
        f"reference: v{version}'s training data, {reference.rows:,} rows of "
        f"{', '.join(map(str, reference.snapshots))}"
    )
    current, rows = drift.read_current(url, day, max_rows=settings.drift_max_rows)
    model = pyfunc.unwrap_python_model().model
    report = drift.measure_drift(
        day,
        reference,
        current,
        rows,
        reference_probabilities=model.predict_proba(feature_frame(reference.frame)),
        config=drift_config(settings),
        report_path=settings.resolved_reports_dir / "drift" / f"feature_drift_{day}.html",
    )
    drift.save_report(url, report)
    for finding in report.findings:
        context.log.warning(f"{finding.column or day}: {finding.detail}")
    context.log.info(
        f"{day}: {len(report.drifted_columns)} of {len(report.columns)} columns drifted "
        f"({report.drift_share:.0%}; dataset drift from {report.drift_share_threshold:.0%})"
    )
    return dg.MaterializeResult(metadata=_metadata(report, len(current)))


def drift_config(settings: RetentionSettings) -> drift.DriftConfig:
    return drift.DriftConfig(
        drift_share=settings.drift_share_threshold,
        numerical_method=settings.drift_numerical_method,
        numerical_threshold=settings.drift_numerical_threshold,
        categorical_method=settings.drift_categorical_method,
        categorical_threshold=settings.drift_categorical_threshold,
        column_methods=settings.drift_column_methods,
        missing_share_jump=settings.drift_missing_share_jump,
        max_rows=settings.drift_max_rows,
    )


def _metadata(report: drift.DriftReport, rows_read: int) -> dict[str, object]:
    table = "\n".join(
        f"| {c.column} | {c.method} | {c.score:.4f} | {c.threshold:g} | "
        f"{'**drifted**' if c.drifted else 'no'} |"
        for c in drift.iter_columns(report)
    )
    findings = "\n".join(f"- {f.column or 'date'} ({f.kind}): {f.detail}" for f in report.findings)
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
        "columns": dg.MetadataValue.md(
            "| column | method | score | threshold | drift |\n| --- | --- | --- | --- | --- |\n"
            + table
            if table
            else "no column was tested"
        ),
        "findings": dg.MetadataValue.md(findings or "none"),
    }
