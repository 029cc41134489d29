"""Governance: the daily purge of what is past its retention (``core.data_retention``)."""

import dagster as dg

from retention_pipelines.assets import metadata
from retention_pipelines.core import audit, data_retention
from retention_pipelines.resources import (
    DataRetentionResource,
    MlflowResource,
    WarehouseResource,
)

GROUP = "governance"


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
