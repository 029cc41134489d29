"""Great Expectations on ``customer_features``, in the run that built the partition.

The check is blocking: when the day's features fail the suite, nothing downstream of them
(scores, analytics) is built from them.
"""

from datetime import date

import dagster as dg

from retention_pipelines.assets import metadata
from retention_pipelines.core.quality import QualityReport, validate_customer_features
from retention_pipelines.resources import MonitoringResource, WarehouseResource

CUSTOMER_FEATURES = dg.AssetKey("customer_features")


@dg.asset_check(
    asset=CUSTOMER_FEATURES,
    name="great_expectations_suite",
    blocking=True,
    description=(
        "Great Expectations on the partition's features: row count equal to the valid raw "
        "rows, no unexpected nulls, ranges, allowed values and column-pair rules. Data Docs "
        "linked; the verdict is kept in monitoring.data_quality."
    ),
)
def customer_features_expectations(
    context: dg.AssetCheckExecutionContext,
    warehouse: WarehouseResource,
    monitoring: MonitoringResource,
) -> dg.AssetCheckResult:
    report = validate_customer_features(
        warehouse.url(), _snapshot_date(context), docs_dir=monitoring.data_docs_dir()
    )
    context.log.info(report.message)
    return dg.AssetCheckResult(
        passed=report.success,
        severity=dg.AssetCheckSeverity.ERROR,
        description=report.message,
        metadata=_metadata(report),
    )


def _snapshot_date(context: dg.AssetCheckExecutionContext) -> date:
    """The run's partition: the check runs in the partitioned run that built the features
    (the check itself is not partitioned; partitioned checks are a preview in Dagster 1.13)."""
    if not context.has_partition_key:
        raise dg.Failure(
            "great_expectations_suite judges one snapshot date: run it for a partition"
        )
    return date.fromisoformat(context.partition_key)


def _metadata(report: QualityReport) -> dict[str, dg.MetadataValue]:
    return {
        "rows": dg.MetadataValue.int(report.rows),
        "expected_rows": dg.MetadataValue.int(report.expected_rows),
        "expectations": dg.MetadataValue.int(report.expectations),
        "failed": dg.MetadataValue.int(len(report.failures)),
        "failed_expectations": metadata.table(report.failures_frame()),
        "data_docs": dg.MetadataValue.url(report.docs_path.resolve().as_uri()),
    }


quality_checks = [customer_features_expectations]
