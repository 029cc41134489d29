"""Realised model performance: past scores judged by the churn labels a later snapshot brought."""

from datetime import date

import dagster as dg

from retention_pipelines.assets.partitions import daily_partitions, one_partition_per_run
from retention_pipelines.core.performance import (
    PerformanceDrop,
    PerformanceOutcome,
    RealisedPerformance,
    champion_reference,
    performance_drop,
    realised_auc_history,
    realised_auc_plot,
    record_performance,
)
from retention_pipelines.resources import MlflowResource, WarehouseResource
from retention_pipelines.settings import get_settings

GROUP = "monitoring"
ASSET = "realised_model_performance"
NO_LABELS = "no labels on this date"


@dg.asset(
    name=ASSET,
    group_name=GROUP,
    partitions_def=daily_partitions,
    backfill_policy=one_partition_per_run,
    # The date's labels, and the scores (of earlier dates: this dependency orders the night).
    deps=[dg.AssetKey("customer_features"), dg.AssetKey("churn_risk_scores")],
    kinds={"postgres", "mlflow"},
)
def realised_model_performance(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    mlflow_registry: MlflowResource,
) -> dg.MaterializeResult:
    """``monitoring.model_performance`` for the partition's date: the scores of the
    ``RETENTION_PERFORMANCE_HORIZON_DAYS`` before it, per score date and model version, judged
    by its churn labels (ROC AUC, top-decile lift, Brier, calibration). A date without labels
    records nothing and succeeds."""
    settings = get_settings()
    day = date.fromisoformat(context.partition_key)
    url = warehouse.url()
    outcome = record_performance(url, day, horizon_days=settings.performance_horizon_days)
    context.log.info(outcome.message)
    if not outcome.groups:
        return dg.MaterializeResult(metadata=_empty_metadata(outcome))
    champion = champion_reference(mlflow_registry.client(warehouse))
    drop = (
        performance_drop(
            url, champion.version, champion.test_auc, threshold=settings.performance_auc_drop
        )
        if champion
        else None
    )
    if drop is not None:
        log = context.log.warning if drop.dropped else context.log.info
        log(drop.describe())
    history = realised_auc_history(url, until=day)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(outcome.groups),
            "groups_evaluated": len(outcome.groups),
            "customers_joined": outcome.customers_joined,
            "labelled_customers": outcome.labelled_customers,
            "first_score_date": str(outcome.first_score_date),
            "realised_performance": dg.MetadataValue.md(_performance_table(outcome.groups)),
            "realised_auc_over_time": dg.MetadataValue.md(
                realised_auc_plot(history, test_auc=champion)
            ),
            **(_drop_metadata(drop, settings.performance_auc_drop) if drop else {}),
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


def _performance_table(groups: tuple[RealisedPerformance, ...]) -> str:
    header = ["score date", "version", "customers", "churned", "ROC AUC", "top-decile lift",
              "Brier", "mean probability", "churn rate"]  # fmt: skip
    rows = [
        [
            str(group.score_date),
            group.model_version,
            f"{group.customers:,}",
            f"{group.churned:,}",
            _figure(group.roc_auc, "{:.4f}"),
            _figure(group.top_decile_lift, "{:.2f}"),
            f"{group.brier:.4f}",
            f"{group.mean_probability:.3f}",
            f"{group.churn_rate:.3f}",
        ]
        for group in groups
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _figure(value: float | None, pattern: str) -> str:
    return "n/a (one class)" if value is None else pattern.format(value)
