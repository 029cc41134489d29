"""The CRM hand-off: after the night's scores, the customers to contact go to the CRM as tasks
(``ml.crm_outbox``, then the webhook or the date's CSV file)."""

from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from retention_pipelines.assets import metadata
from retention_pipelines.assets.partitions import daily_partitions, one_partition_per_run
from retention_pipelines.assets.retries import database_retry_policy, retried_only_when_transient
from retention_pipelines.core.audit import run_actor
from retention_pipelines.core.crm import (
    CrmConfig,
    Handoff,
    Selection,
    csv_path,
    dispatch,
    revenue_at_risk,
    select_tasks,
    status_counts,
    task_preview,
)
from retention_pipelines.core.pseudonyms import pseudonym_key
from retention_pipelines.core.warehouse.crm_outbox import SelectionOutcome
from retention_pipelines.resources import WarehouseResource, _setting, _SettingsResource
from retention_pipelines.settings import RetentionSettings, get_settings

GROUP = "crm"
ASSET = "crm_retention_tasks"
DELIVERED = "crm_tasks_delivered"


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


def crm_resources(settings: RetentionSettings) -> dict[str, Any]:
    """The hand-off's resource, from the settings; the webhook's URL (it may hold a token)
    and secret enter as the names of their variables."""
    return {
        "crm": CrmResource.from_settings(
            settings,
            webhook_url=dg.EnvVar("RETENTION_CRM_WEBHOOK_URL")
            if settings.crm_webhook_url
            else None,
            webhook_secret=(
                dg.EnvVar("RETENTION_CRM_WEBHOOK_SECRET") if settings.crm_webhook_secret else None
            ),
            crm_dir=str(settings.crm_dir),
        )
    }


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
