"""``raw_customer_snapshot``: a day's landing file, validated, into the raw tables."""

from datetime import date

import dagster as dg
import pandas as pd

from retention_pipelines.assets import metadata
from retention_pipelines.assets.partitions import daily_partitions, one_partition_per_run
from retention_pipelines.assets.retries import database_retry_policy, retried_only_when_transient
from retention_pipelines.core.ingestion import (
    LandingFileError,
    check_landing_file,
    read_validated_chunks,
)
from retention_pipelines.core.pseudonyms import pseudonym_key
from retention_pipelines.core.warehouse.raw import (
    IngestionSummary,
    PartitionCounts,
    partition_counts,
    partition_profile,
    replace_snapshot_partition,
)
from retention_pipelines.resources import LandingResource, WarehouseResource
from retention_pipelines.settings import get_settings

ASSET = "raw_customer_snapshot"
RECONCILE_CHECK = "rows_reconcile"
REJECT_SHARE_CHECK = "reject_share_below_threshold"


@dg.asset(
    name=ASSET,
    partitions_def=daily_partitions,
    backfill_policy=one_partition_per_run,
    group_name="ingestion",
    kinds={"postgres", "pandas"},
    retry_policy=database_retry_policy(),
    check_specs=[
        dg.AssetCheckSpec(
            RECONCILE_CHECK,
            asset=ASSET,
            blocking=True,
            description=(
                "The file's data lines = rows read = valid + rejected + collapsed duplicates"
                " + rows of erased customers left out, counted in the tables."
            ),
        ),
        dg.AssetCheckSpec(
            REJECT_SHARE_CHECK,
            asset=ASSET,
            blocking=True,
            description="The share of rejected rows is under the configured threshold.",
        ),
    ],
)
@retried_only_when_transient
def raw_customer_snapshot(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingResource
) -> dg.MaterializeResult:
    """The day's customer snapshot in ``raw.customer_snapshots``; bad rows in
    ``raw.customer_rejects`` with every reason; erased customers' rows left out, counted.
    The partition is replaced whole."""
    snapshot_date = date.fromisoformat(context.partition_key)
    key = pseudonym_key(get_settings())  # recognises erased customers; a missing key fails here
    path = landing.path_for(snapshot_date)
    if not path.exists():
        raise dg.Failure(
            f"No landing file for {snapshot_date}: expected {path}. "
            "Copy one in with `retention ingest PATH --date YYYY-MM-DD`.",
            allow_retries=False,
        )
    url = warehouse.url()
    fmt = landing.landing_format()
    try:
        facts = check_landing_file(path, max_bytes=landing.max_file_bytes, fmt=fmt)
    except LandingFileError as error:
        raise dg.Failure(str(error), allow_retries=False) from error
    summary = replace_snapshot_partition(
        url,
        snapshot_date=snapshot_date,
        facts=facts,
        chunks=read_validated_chunks(path, chunk_rows=landing.chunk_rows, fmt=fmt),
        on_chunk=lambda rows: _observe_rows(context, path.name, rows),
        pseudonym_key=key,
    )
    context.log.info(
        f"{summary.rows_valid:,} valid, {summary.rows_rejected:,} rejected, "
        f"{summary.duplicates_collapsed:,} duplicates collapsed and {summary.rows_suppressed:,}"
        f" rows of erased customers left out, of {summary.rows_read:,} read"
        f" ({summary.blank_lines:,} blank lines skipped)"
    )
    return dg.MaterializeResult(
        metadata=_metadata(summary, str(path), partition_profile(url, snapshot_date)),
        check_results=[
            _reconcile_result(partition_counts(url, snapshot_date), facts.data_lines),
            _reject_share_result(summary, landing.max_reject_share),
        ],
    )


def _observe_rows(context: dg.AssetExecutionContext, file_name: str, rows: int) -> None:
    context.log.info(f"{file_name}: {rows:,} rows read")
    context.log_event(
        dg.AssetObservation(
            asset_key=ASSET, partition=context.partition_key, metadata={"rows_read": rows}
        )
    )


def _metadata(summary: IngestionSummary, path: str, profile: pd.DataFrame) -> dict[str, object]:
    """Counts, reject reasons and the values' spread: never a row, which would copy a
    customer's attributes out of the warehouse into Dagster's storage."""
    reasons = pd.DataFrame(list(summary.reject_reasons.items()), columns=["reason", "rows"])
    return {
        "dagster/row_count": summary.rows_valid,
        "landing_file": dg.MetadataValue.path(path),
        "rows_read": summary.rows_read,
        "rows_valid": summary.rows_valid,
        "rows_rejected": summary.rows_rejected,
        "duplicates_collapsed": summary.duplicates_collapsed,
        "rows_suppressed": summary.rows_suppressed,
        "blank_lines": summary.blank_lines,
        "reject_share": dg.MetadataValue.float(round(summary.reject_share, 6)),
        "reject_reasons": metadata.table(reasons),
        "values": metadata.table(profile),
    }


def _reconcile_result(counts: PartitionCounts | None, data_lines: int) -> dg.AssetCheckResult:
    if counts is None:
        return dg.AssetCheckResult(
            check_name=RECONCILE_CHECK,
            passed=False,
            metadata={"error": "no ingestion run recorded"},
        )
    return dg.AssetCheckResult(
        check_name=RECONCILE_CHECK,
        passed=counts.reconciles and counts.rows_read == data_lines,
        metadata={
            "data_lines": data_lines,
            "rows_read": counts.rows_read,
            "rows_valid": counts.rows_valid,
            "rows_rejected": counts.rows_rejected,
            "duplicates_collapsed": counts.duplicates_collapsed,
            "rows_suppressed": counts.rows_suppressed,
        },
    )


def _reject_share_result(summary: IngestionSummary, threshold: float) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=REJECT_SHARE_CHECK,
        passed=summary.reject_share < threshold or summary.rows_rejected == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "reject_share": dg.MetadataValue.float(round(summary.reject_share, 6)),
            "threshold": dg.MetadataValue.float(threshold),
        },
    )
