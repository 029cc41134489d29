"""Nightly scoring: every customer of a snapshot date scored by the champion, with reasons."""

from datetime import UTC, date, datetime

import dagster as dg

from retention_pipelines.assets import metadata
from retention_pipelines.assets.partitions import daily_partitions, one_partition_per_run
from retention_pipelines.assets.retries import database_retry_policy, retried_only_when_transient
from retention_pipelines.core import registry
from retention_pipelines.core.pseudonyms import pseudonym_key
from retention_pipelines.core.scoring import (
    SCORE_CHECKS,
    ModelRef,
    ScoreSummary,
    check_scores,
    score_partition,
    summarize_scores,
)
from retention_pipelines.core.warehouse.features import count_features
from retention_pipelines.resources import MlflowResource, ScoringResource, WarehouseResource
from retention_pipelines.settings import get_settings

GROUP = "scoring"
ASSET = "churn_risk_scores"
# What the asset observes after every chunk: the progress of a run, for the command line.
SCORED, TOTAL = "customers_scored", "customers_total"


@dg.asset(
    name=ASSET,
    group_name=GROUP,
    partitions_def=daily_partitions,
    backfill_policy=one_partition_per_run,
    deps=["customer_features"],
    kinds={"postgres", "mlflow"},
    retry_policy=database_retry_policy(),
    check_specs=[
        dg.AssetCheckSpec(name, asset=ASSET, description=text, blocking=True)
        for name, text in SCORE_CHECKS.items()
    ],
)
@retried_only_when_transient
def churn_risk_scores(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    mlflow_registry: MlflowResource,
    scoring: ScoringResource,
) -> dg.MaterializeResult:
    """``ml.churn_risk_scores`` for the partition's date: calibrated churn probability, risk
    band and the three strongest reasons per customer, replaced in one transaction. The
    metadata names the highest-risk customers by pseudonym (``retention lookup`` maps one
    back), never by id."""
    day = date.fromisoformat(context.partition_key)
    url = warehouse.url()
    key = pseudonym_key(get_settings())  # before any work: a missing key fails the run here
    total = count_features(url, day)
    if total == 0:
        raise dg.Failure(
            f"features.customer_features has no rows for {day}: "
            "materialize raw_customer_snapshot and customer_features for that date first"
        )
    champion, version = registry.load_champion(mlflow_registry.client)
    context.log.info(f"scoring {total:,} customers of {day} with {registry.MODEL_NAME} v{version}")
    outcome = score_partition(
        url,
        day,
        ModelRef(champion, registry.MODEL_NAME, version),
        bands=scoring.bands(),
        chunk_rows=scoring.chunk_rows,
        scored_at=datetime.now(UTC),
        reuse_unchanged=scoring.reuse_unchanged,
        exact_gap=scoring.exact_gap,
        on_chunk=lambda rows: _observe_progress(context, rows, total),
    )
    if outcome.reused:
        context.log.info(f"{outcome.reused:,} unchanged customers kept their earlier score")
    return dg.MaterializeResult(
        metadata={
            **_metadata(version, summarize_scores(url, day, key=key)),
            "customers_rescored": outcome.rows - outcome.reused,
            "customers_carried_over": outcome.reused,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=check.name,
                passed=check.passed,
                metadata=check.metadata,
                severity=dg.AssetCheckSeverity.ERROR,
            )
            for check in check_scores(url, day, version)
        ],
    )


def _observe_progress(context: dg.AssetExecutionContext, rows: int, total: int) -> None:
    context.log.info(f"scored {rows:,} of {total:,} customers")
    context.log_event(
        dg.AssetObservation(
            asset_key=ASSET,
            partition=context.partition_key,
            metadata={SCORED: rows, TOTAL: total},
        )
    )


def _metadata(version: str, summary: ScoreSummary) -> dict[str, object]:
    return {
        "dagster/row_count": summary.rows,
        "model_name": registry.MODEL_NAME,
        "model_version": version,
        "mean_churn_probability": dg.MetadataValue.float(round(summary.mean_probability, 4)),
        **{f"{band}_risk_customers": count for band, count in summary.band_counts.items()},
        "risk_bands": metadata.table(summary.bands()),
        "probability_histogram": metadata.table(summary.histogram),
        "top_first_reasons": metadata.table(summary.top_reasons),
        "highest_risk_customers": metadata.table(summary.highest_risk),
    }
