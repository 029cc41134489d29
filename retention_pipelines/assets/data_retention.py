"""Governance: the daily purge of what is past its retention (``core.data_retention``)."""

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from retention_pipelines.assets import metadata
from retention_pipelines.core import audit, data_retention
from retention_pipelines.resources import MlflowResource, WarehouseResource
from retention_pipelines.settings import RetentionSettings

GROUP = "governance"


def _setting(name: str) -> Any:
    """A field holding the setting ``name``, with its default and description."""
    info = RetentionSettings.model_fields[name]
    return Field(default=info.default, description=info.description)


class DataRetentionResource(dg.ConfigurableResource):
    """How long each table keeps its rows (``RETENTION_KEEP_*_DAYS``), what "today" is, and
    where the CRM files are."""

    keep_raw_days: int = _setting("keep_raw_days")
    keep_features_days: int = _setting("keep_features_days")
    keep_scores_days: int = _setting("keep_scores_days")
    keep_prediction_log_days: int = _setting("keep_prediction_log_days")
    keep_crm_outbox_days: int = _setting("keep_crm_outbox_days")
    timezone: str = _setting("timezone")
    crm_dir: str = Field(description="Where the CRM hand-off files are written.")

    @classmethod
    def from_settings(cls, settings: RetentionSettings) -> "DataRetentionResource":
        return cls(
            keep_raw_days=settings.keep_raw_days,
            keep_features_days=settings.keep_features_days,
            keep_scores_days=settings.keep_scores_days,
            keep_prediction_log_days=settings.keep_prediction_log_days,
            keep_crm_outbox_days=settings.keep_crm_outbox_days,
            timezone=settings.timezone,
            crm_dir=str(settings.crm_dir),
        )

    def policy(self) -> data_retention.RetentionPolicy:
        return data_retention.retention_policy(
            keep_raw_days=self.keep_raw_days,
            keep_features_days=self.keep_features_days,
            keep_scores_days=self.keep_scores_days,
            keep_prediction_log_days=self.keep_prediction_log_days,
            keep_crm_outbox_days=self.keep_crm_outbox_days,
            timezone=self.timezone,
            crm_dir=Path(self.crm_dir),
        )


@dg.asset(group_name=GROUP, kinds={"postgres"})
def data_retention_purge(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    mlflow_registry: MlflowResource,
    data_retention_policy: DataRetentionResource,
) -> dg.MaterializeResult:
    """Rows past each table's retention deleted, date by date under the writers' partition
    locks, each date with its audit entry; the current champion's training snapshots (its
    drift reference) kept whatever their age; old CRM files removed."""
    policy = data_retention_policy.policy()
    champion = data_retention.champion_data(mlflow_registry.client)
    result = data_retention.purge(
        warehouse.url(),
        policy,
        today=policy.today(),
        champion=champion,
        actor=audit.run_actor(context.run_id),
    )
    plan = result.plan
    for note in plan.notes():
        context.log.info(note)
    kept = plan.kept_dates()
    return dg.MaterializeResult(
        metadata={
            "rows_purged": sum(result.rows(rule.table) for rule in policy.rules),
            **{
                f"{rule.table.replace('.', '_')}_rows": result.rows(rule.table)
                for rule in policy.rules
            },
            "crm_files_removed": len(result.files_removed),
            "tables": metadata.table(data_retention.plan_frame(plan, result)),
            "kept": dg.MetadataValue.md(
                "\n".join(f"- {day}: {why}" for day, why in kept.items()) or "nothing"
            ),
            "champion": (f"v{champion.version}" if champion is not None else "none (nothing kept)"),
        }
    )
