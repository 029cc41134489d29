"""The dbt models as Dagster assets, in three sets: the feature tables (``stg_customers``,
``customer_features``); what business users read about customers (``customer_risk_latest``,
``risk_band_summary``, ...), which waits for the nightly scores; and the model-health views
(``model_health/``), which wait for the drift report, the realised performance and the model
registry's copy. The call list never waits for monitoring: a failed drift step leaves today's
scores in front of business users, and only the model-health views wait for it.

Each partition run builds its snapshot date only: the date goes to dbt as the var
``snapshot_date`` and ``customer_features`` is incremental (delete+insert on that date).
dbt tests appear as asset checks.

The dbt manifest is prepared at build time (``make install`` parses the project, as the
container image does) and refreshed on every load under ``dagster dev``; a checkout without
one gets it parsed when the code location loads, not when a module is imported.
"""

import json
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from retention_pipelines.assets.partitions import daily_partitions, one_partition_per_run
from retention_pipelines.core.warehouse.streams import ddl_lock
from retention_pipelines.resources import WarehouseResource, dbt_resource
from retention_pipelines.settings import get_settings


def prepared_project(project: DbtProject) -> DbtProject:
    """The project with a manifest: re-parsed under ``dagster dev``, parsed once if missing."""
    project.prepare_if_dev()
    if not project.manifest_path.exists():
        dbt_resource(project).cli(["parse", "--quiet"], target_path=project.target_path).wait()
    return project


retention_dbt_project = prepared_project(DbtProject(project_dir=get_settings().dbt_project_dir))


class RetentionDbtTranslator(DagsterDbtTranslator):
    """Names dbt models by their own name (``customer_features``), grouped by their folder."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return super().get_asset_key(dbt_resource_props)
        return dg.AssetKey(dbt_resource_props["name"])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        fqn = dbt_resource_props.get("fqn", [])
        return fqn[1] if len(fqn) > 2 else "features"


def dbt_build_args(partition_key: str) -> list[str]:
    """``dbt build`` for one snapshot date: models and their tests, that day only."""
    return ["build", "--vars", json.dumps({"snapshot_date": partition_key})]


ANALYTICS_MODELS = "path:models/analytics"
MODEL_HEALTH_MODELS = "path:models/analytics/model_health"
# Every model set: one run per date, the date's partition built and tested.
_DBT_ASSETS = {
    "manifest": retention_dbt_project.manifest_path,
    "project": retention_dbt_project,
    "partitions_def": daily_partitions,
    "backfill_policy": one_partition_per_run,
    "dagster_dbt_translator": RetentionDbtTranslator(),
}


def _build_partition(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    """One ``dbt build`` of the date, under the warehouse's DDL lock: runs of other dates, or
    the same date twice, never create the same views at once. The lock is taken before dbt's
    environment is set, so a command waiting for it changes nothing meanwhile."""
    with ddl_lock(warehouse.url(), on_wait=context.log.info), warehouse.dbt_environment():
        yield from dbt.cli(dbt_build_args(context.partition_key), context=context).stream()


@dbt_assets(exclude=ANALYTICS_MODELS, **_DBT_ASSETS)
def retention_dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    """Staging and feature tables for the partition's snapshot date, built and tested by dbt."""
    yield from _build_partition(context, dbt, warehouse)


@dbt_assets(select=ANALYTICS_MODELS, exclude=MODEL_HEALTH_MODELS, **_DBT_ASSETS)
def retention_dbt_analytics(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    """The analytics tables and views over the scores (the call list rebuilt), granted to the
    reader role and tested."""
    yield from _build_partition(context, dbt, warehouse)


@dbt_assets(select=MODEL_HEALTH_MODELS, **_DBT_ASSETS)
def retention_dbt_model_health(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    """The model-health views (versions, realised performance, drift, data quality) over the
    monitoring tables and ml.model_versions, granted to the reader role and tested."""
    yield from _build_partition(context, dbt, warehouse)
