"""The CRM hand-off: after the night's scores, the customers to contact go to the CRM as tasks
(``ml.crm_outbox``, then the webhook or the date's CSV file)."""

from datetime import date

import dagster as dg

from retention_pipelines.assets import metadata
from retention_pipelines.assets.partitions import daily_partitions, one_partition_per_run
from retention_pipelines.assets.retries import database_retry_policy, retried_only_when_transient
from retention_pipelines.core.audit import run_actor
from retention_pipelines.core.crm import (
    CrmConfig,
    Handoff,
    csv_path,
    dispatch,
    revenue_at_risk,
    select_tasks,
    status_counts,
    task_preview,
)
from retention_pipelines.core.pseudonyms import pseudonym_key
from retention_pipelines.core.warehouse.crm_outbox import SelectionOutcome
from retention_pipelines.resources import CrmResource, WarehouseResource
from retention_pipelines.settings import get_settings

GROUP = "crm"
ASSET = "crm_retention_tasks"
DELIVERED = "crm_tasks_delivered"


@dg.asset(
    name=ASSET,
    group_name=GROUP,
    partitions_def=daily_partitions,
    backfill_policy=one_partition_per_run,
    deps=["churn_risk_scores"],
    kinds={"postgres"},
    retry_policy=database_retry_policy(),
    check_specs=[
        dg.AssetCheckSpec(
            DELIVERED,
            asset=ASSET,
            description="Every task of the date was delivered: none pending, none dead-lettered.",
        )
    ],
)
@retried_only_when_transient
def crm_retention_tasks(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, crm: CrmResource
) -> dg.MaterializeResult:
    """``ml.crm_outbox`` for the partition's date: the customers entering the high band or
    whose risk rose, by revenue at risk, up to the daily capacity (the date's pending tasks
    replaced, its delivered ones kept); then the pending tasks of every date delivered to the
    CRM, oldest first."""
    day = date.fromisoformat(context.partition_key)
    url, config = warehouse.url(), crm.config()
    selected = select_tasks(url, day, config.selection)
    context.log.info(
        f"{day}: {selected.selected} tasks selected ({selected.kept} handed off before kept)"
    )
    # Every date's pending tasks, oldest first: those a CRM outage left on an earlier night
    # go out with tonight's, with nobody to resend them.
    handoffs = dispatch(url, config, actor=run_actor(context.run_id))
    for handoff in handoffs:
        context.log.info(
            f"{handoff.snapshot_date}: {handoff.sent} sent, {handoff.dead_letter} dead-lettered"
            f" to {handoff.destination}"
        )
        if handoff.stopped:
            context.log.warning(f"{handoff.stopped}: `retention crm dispatch` sends the rest")
    counts = status_counts(url, day)
    return dg.MaterializeResult(
        metadata=_metadata(url, day, selected, counts, handoffs, config),
        check_results=[
            dg.AssetCheckResult(
                check_name=DELIVERED,
                passed=counts["pending"] == 0 and counts["dead_letter"] == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata=counts,
            )
        ],
    )


def _metadata(
    url: str,
    day: date,
    selected: SelectionOutcome,
    counts: dict[str, int],
    handoffs: list[Handoff],
    config: CrmConfig,
) -> dict[str, object]:
    destination = (
        config.webhook.destination if config.webhook else str(csv_path(config.crm_dir, day))
    )
    return {
        "dagster/row_count": sum(counts.values()),
        "tasks_selected": selected.selected,
        "tasks_kept": selected.kept,
        **{f"tasks_{status}": count for status, count in counts.items()},
        "tasks_handed_off_now": sum(handoff.sent for handoff in handoffs),
        "revenue_at_risk": dg.MetadataValue.float(round(revenue_at_risk(url, day), 2)),
        "destination": destination,
        "tasks": metadata.table(task_preview(url, day, pseudonym_key(get_settings()))),
    }
